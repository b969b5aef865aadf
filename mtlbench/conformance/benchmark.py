"""The conformance kit for benchmarks: what a user checks before spending cluster hours.

``check_benchmark(name, data_root=None, workdir=...) -> list[Finding]`` runs, for any registered
benchmark (a built-in or a plug-in):

* **declarations**: a ``description``, tasks, metrics whose tasks are declared tasks and that cover
  every task, each with its direction (``higher_is_better`` a bool), unique metric names;
* **data**: :meth:`~mtlbench.benchmark.Benchmark.check_data` in ``data_root`` (default: the
  benchmark's own place). With the data missing, the smoke epoch runs on the benchmark's
  fixture (:meth:`~mtlbench.benchmark.Benchmark.write_fixture`, the real on-disk format) and the
  finding says what is missing and where to get it (``fixture_only``: the fixture alone, for CI
  and for a check before the data is downloaded);
* **one smoke epoch** of LS (the benchmark's smoke protocol) through the trainer: it must end
  ``done`` with a finite value of every declared metric on validation and test;
* **the Δm% reference**: published values for every metric, or, without them, the single-task
  runs that a sweep must add (``stl: true``), named.
"""

from __future__ import annotations

import math
from pathlib import Path

from mtlbench import benchmark as benchmarks
from mtlbench.conformance.findings import Finding
from mtlbench.registry import ConfigError
from mtlbench.trainer import run_trial
from mtlbench.trial import TrialConfig, resolve


def _declarations(cls: type[benchmarks.Benchmark], name: str) -> list[Finding]:
    out = []

    def bad(reason: str) -> None:
        out.append(Finding(name, "declarations", reason))

    if not str(getattr(cls, "description", "") or "").strip():
        bad("no description: the class attribute `description` says what the benchmark is")
    if not cls.tasks:
        bad("no tasks declared (the class attribute `tasks`)")
    names = [m.name for m in cls.metrics]
    if len(set(names)) != len(names):
        bad(f"metric names repeat: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    for metric in cls.metrics:
        if metric.task not in cls.tasks:
            bad(f"metric {metric.name!r} belongs to the undeclared task {metric.task!r}")
        if not isinstance(metric.higher_is_better, bool):
            bad(f"metric {metric.name!r} declares no direction (higher_is_better: True/False)")
    unmeasured = [t for t in cls.tasks if t not in {m.task for m in cls.metrics}]
    if unmeasured:
        bad(f"task(s) without a metric: {', '.join(unmeasured)}")
    return out


def _data_root(
    cls: type[benchmarks.Benchmark],
    name: str,
    data_root: str | None,
    workdir: Path,
    fixture_only: bool,
) -> tuple[str | None, list[Finding]]:
    """The folder the smoke epoch reads: the benchmark's data when ready (unless
    ``fixture_only``), else its fixture."""
    found: list[Finding] = []
    if not fixture_only:
        bench = cls(cls.default_protocol(), data_root)
        missing = bench.check_data()
        if not missing:
            return data_root, []
        found.append(
            Finding(
                name,
                "data",
                f"missing in {bench.data_root} ({'; '.join(missing)}); the smoke epoch ran on "
                "the fixture instead",
            )
        )
    fixture = workdir / "fixture"
    try:
        cls.write_fixture(fixture)
    except ConfigError:  # no data files to make: the benchmark builds its data itself
        return data_root, found
    return str(fixture), found


def _smoke(name: str, data_root: str | None, workdir: Path, device: str) -> list[Finding]:
    config = TrialConfig(name, "ls", 0, {}, data_root=data_root, smoke=True)
    try:
        record = run_trial(resolve(config), workdir / "results", device=device, progress=False)
    except Exception as error:  # noqa: BLE001 - a broken benchmark is the finding
        return [Finding(name, "smoke epoch", f"{type(error).__name__}: {error}".splitlines()[0])]
    if record["status"] != "done":
        why = (record.get("diverged") or {}).get("reason") or (record.get("error") or {})
        return [Finding(name, "smoke epoch", f"ended {record['status']}: {why}")]
    out = []
    cls = benchmarks.get(name)
    for split in ("val", "test"):
        values = (record.get("metrics") or {}).get(split) or {}
        for metric in cls.metrics:
            value = values.get(metric.name)
            if value is None or not math.isfinite(value):
                out.append(
                    Finding(name, "smoke epoch", f"{split} metric {metric.name!r} is {value}")
                )
    return out


def _reference(cls: type[benchmarks.Benchmark], name: str, data_root: str | None) -> list[str]:
    """Where Δm%'s reference comes from (information, not a finding), or the finding."""
    published = cls(cls.default_protocol(), data_root).reference()
    if published is None:
        return [
            f"no published single-task values: a sweep adds `stl: true` to run the "
            f"{len(cls.tasks)} single-task reference(s) ({', '.join(cls.tasks)})"
        ]
    lacking = [m.name for m in cls.metrics if m.name not in published.values]
    if lacking:
        raise _Lacking(lacking)
    return [f"published reference: {published.source}"]


class _Lacking(Exception):
    def __init__(self, names: list[str]) -> None:
        super().__init__(f"the published reference lacks metric(s) {', '.join(names)}")


def check_benchmark(
    name: str,
    data_root: str | None = None,
    *,
    workdir: Path,
    device: str = "cpu",
    fixture_only: bool = False,
) -> tuple[list[Finding], list[str]]:
    """The findings for benchmark ``name`` (empty: it conforms) and informational lines (where
    its reference comes from). ``workdir``: a scratch folder for the fixture and the smoke
    record; ``fixture_only``: check on the fixture and leave the real data unchecked (CI).
    Raises ConfigError (listing the valid names) for an unknown benchmark."""
    cls = benchmarks.get(name)
    findings = _declarations(cls, name)
    root, data = _data_root(cls, name, data_root, Path(workdir), fixture_only)
    findings += data + _smoke(name, root, Path(workdir), device)
    try:
        info = _reference(cls, name, root)
    except _Lacking as error:
        findings.append(Finding(name, "reference", str(error)))
        info = []
    return findings, info
