"""Sweep specs (YAML) -> trials, each with a stable id; and what is done, failed or missing.

A spec::

    name: quickstart
    results: results/quickstart        # where records go (relative to the current folder)
    report: reports/quickstart         # optional: render the report when the sweep ends
    seeds: [0, 1, 2]
    methods: [ls, ldc_mtl, famo]       # or a mapping: {ldc_mtl: {lamb: [0.01, 0.1]}}
    executor: {kind: local, workers: 2}
    benchmarks:
      toy:
        protocol: {epochs: 50}         # fixed settings (protocol options, policies, hparams)
        grid: {start: [0, 1, 2, 3, 4]} # every combination becomes a trial
      multidigits:
        stl: true                      # add the single-task reference runs (one per task, seed)
        methods: [ls, mgda]            # optional: this benchmark's own method list
        resources: {...}               # SLURM resources of this benchmark (see executors)

In a method mapping, a list value is a grid (one trial per value) and a scalar is fixed.
The whole spec is checked before anything runs; every problem is reported at once, with the
line of the spec it comes from.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtlbench.registry import ConfigError
from mtlbench.trial import STL, ResolvedTrial, TrialConfig, resolve

SPEC_KEYS = {
    "name",
    "results",
    "report",
    "seeds",
    "methods",
    "executor",
    "benchmarks",
    "description",
    "data_root",
    "report_formats",
    "tune",
}
BENCH_KEYS = {"protocol", "grid", "stl", "methods", "resources", "data_root", "seeds", "tune"}


class SpecError(ConfigError):
    """A sweep spec with problems; the message lists every one, with its line."""


@dataclass
class Sweep:
    name: str
    path: Path | None
    results: Path
    report: Path | None
    trials: list[ResolvedTrial]
    executor: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)  # per benchmark
    report_formats: list[str] = field(default_factory=lambda: ["md"])
    tuning: list[Any] = field(default_factory=list)  # mtlbench.tune.TunePlan, one per method

    def stages(self) -> list[list[ResolvedTrial]]:
        """Single-task runs first (MTL trials need their reference), then the tuning trials,
        then the rest (the final runs of tuned methods join once their tuning has finished:
        :func:`mtlbench.tune.run_stages`)."""
        stl = [t for t in self.trials if t.mode == "stl"]
        tune = [t for t in self.trials if t.mode != "stl" and getattr(t, "stage", None) == "tune"]
        rest = [t for t in self.trials if t.mode != "stl" and getattr(t, "stage", None) != "tune"]
        return [s for s in (stl, tune, rest) if s]


class _LineLoader(yaml.SafeLoader):
    """A YAML loader that remembers the line of every mapping key."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=deep)
    lines = {}
    for key_node, _ in node.value:
        lines[key_node.value] = key_node.start_mark.line + 1
    mapping["__lines__"] = lines  # removed again by _strip
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in ("__lines__", "__line__")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _line(node: Any, key: str | None = None) -> int | None:
    if isinstance(node, dict):
        if key is not None and key in node.get("__lines__", {}):
            return node["__lines__"][key]
        return node.get("__line__")
    return None


def _grid(settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Expand list values into their cartesian product; scalars stay fixed."""
    keys = list(settings)
    options = [v if isinstance(v, list) else [v] for v in settings.values()]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*options)]


def load_spec(path: str | Path) -> Sweep:
    """Read and validate a sweep spec file; raises :class:`SpecError` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read sweep spec {path}: {error.strerror or error}") from None
    try:
        raw = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SpecError(f"{path}:{where}: malformed YAML: {problem}") from None
    return parse_spec(raw, path)


def parse_spec(raw: Any, path: Path | None = None) -> Sweep:
    errors: list[str] = []
    where = str(path) if path else "<spec>"

    def err(msg: str, node: Any = None, key: str | None = None) -> None:
        line = _line(node, key)
        errors.append(f"{where}:{f' line {line}:' if line else ''} {msg}")

    if not isinstance(raw, dict):
        raise SpecError(f"{where}: a sweep spec is a mapping with name, seeds, methods, benchmarks")
    for key in raw:
        if key not in SPEC_KEYS and not key.startswith("__"):
            err(f"unknown key {key!r} (valid: {', '.join(sorted(SPEC_KEYS))})", raw, key)
    name = raw.get("name") or (path.stem if path else "sweep")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) for s in seeds
    ):
        err("seeds must be a list of integers", raw, "seeds")
        seeds = []
    methods = raw.get("methods")
    benches = raw.get("benchmarks")
    if not isinstance(benches, dict) or not _strip(benches):
        err("benchmarks must be a mapping of benchmark name -> settings", raw, "benchmarks")
        benches = {}

    trials: list[ResolvedTrial] = []
    tuning: list[Any] = []
    resources: dict[str, dict[str, Any]] = {}
    for bench_name, bench_spec in benches.items():
        if bench_name.startswith("__"):
            continue
        bench_spec = bench_spec if bench_spec is not None else {}
        if not isinstance(bench_spec, dict):
            err(f"benchmark {bench_name!r}: settings must be a mapping", benches, bench_name)
            continue
        for key in bench_spec:
            if key not in BENCH_KEYS and not key.startswith("__"):
                err(
                    f"benchmark {bench_name!r}: unknown key {key!r} "
                    f"(valid: {', '.join(sorted(BENCH_KEYS))})",
                    bench_spec,
                    key,
                )
        fixed = _strip(bench_spec.get("protocol") or {})
        grid = _strip(bench_spec.get("grid") or {})
        if not isinstance(fixed, dict) or not isinstance(grid, dict):
            err(f"benchmark {bench_name!r}: protocol and grid must be mappings", bench_spec)
            continue
        data_root = bench_spec.get("data_root", raw.get("data_root"))
        bench_seeds = bench_spec.get("seeds", seeds)
        bench_methods = bench_spec.get("methods", methods)
        if bench_methods is None:
            err(
                f"benchmark {bench_name!r}: no methods (give methods at the top or here)",
                bench_spec,
            )
            continue
        if isinstance(bench_methods, list):
            bench_methods = {m: {} for m in bench_methods}
        if not isinstance(bench_methods, dict):
            err(
                "methods must be a list of names or a mapping name -> settings",
                bench_spec,
                "methods",
            )
            continue
        if bench_spec.get("resources") is not None:
            resources[bench_name] = _strip(bench_spec["resources"])
        line_node = bench_spec if "methods" in bench_spec else raw
        tune_raw = bench_spec.get("tune", raw.get("tune"))
        for method, msettings in _strip(bench_methods).items():
            msettings = msettings or {}
            if tune_raw is not None:
                from mtlbench.tune import hook

                try:
                    tuned = hook(
                        bench_name,
                        method,
                        {**fixed, **grid, **msettings},
                        tune_raw,
                        bench_seeds,
                        data_root,
                        bool(bench_spec.get("stl")),
                    )
                except ConfigError as error:
                    err(
                        f"benchmark {bench_name!r}, method {method!r}: {error}",
                        bench_spec if "tune" in bench_spec else raw,
                        "tune",
                    )
                    continue
                if tuned is not None:
                    tuning.append(tuned)
                    trials.extend(t for ts in tuned.trials for t in ts)
                    continue
            for combo in _grid({**grid, **msettings}):
                for seed in bench_seeds:
                    cfg = TrialConfig(
                        bench_name, method, seed, {**fixed, **combo}, data_root=data_root
                    )
                    try:
                        trials.append(resolve(cfg))
                    except ConfigError as error:
                        err(
                            f"benchmark {bench_name!r}, method {method!r}: {error}",
                            line_node,
                            "methods",
                        )
                        break
                else:
                    continue
                break
        if bench_spec.get("stl"):
            stl_fixed = {k: v for k, v in {**fixed, **grid}.items() if not isinstance(v, list)}
            try:
                from mtlbench import benchmark as benchmarks

                tasks = benchmarks.get(bench_name).tasks
            except ConfigError as error:
                err(str(error), benches, bench_name)
                continue
            for task in tasks:
                for seed in bench_seeds:
                    try:
                        trials.append(
                            resolve(
                                TrialConfig(
                                    bench_name, STL, seed, stl_fixed, task=task, data_root=data_root
                                )
                            )
                        )
                    except ConfigError as error:
                        err(f"benchmark {bench_name!r}, stl: {error}", bench_spec, "stl")
                        break
    if errors:
        unique = list(dict.fromkeys(errors))
        raise SpecError(f"{len(unique)} problem(s) in the sweep spec:\n  " + "\n  ".join(unique))
    seen: set[str] = set()
    trials = [t for t in trials if not (t.trial_id in seen or seen.add(t.trial_id))]
    results = Path(raw.get("results") or Path("results") / name)
    report = raw.get("report")
    return Sweep(
        name=name,
        path=path,
        results=results,
        report=Path(report) if report else None,
        trials=trials,
        executor=_strip(raw.get("executor") or {}),
        resources=resources,
        report_formats=list(raw.get("report_formats") or ["md"]),
        tuning=tuning,
    )
