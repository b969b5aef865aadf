"""A sweep spec's ``executor:`` section as typed options, parsed when the spec loads.

::

    executor: {kind: local, workers: 2}
    executor: {kind: slurm, partition: gpu, time: "2:00:00", poll_s: 30, wait: true}

``kind`` picks the executor (``local`` by default). ``workers`` is the local executor's number
of processes (``auto``: one per core); a Slurm section may carry it too (``--workers`` on the
command line), and the Slurm executor ignores it. A Slurm section holds the executor's own
options (:class:`SlurmOptions`) and the resource defaults of every job array
(:class:`~mtlbench.run.slurm.resources.Resources`, overridden per benchmark by its
``resources:``). Every key is checked with the registry's :func:`~mtlbench.registry.coerce`;
each problem is a :class:`~mtlbench.registry.ConfigError` whose ``key`` lets the spec parser
name its line. This module and :mod:`mtlbench.run.slurm.resources` are the option schemas the
spec model reads; they import nothing of the executors.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from mtlbench.registry import ConfigError, PositiveInt, check_fields, raise_all
from mtlbench.run.slurm.resources import RESOURCE_KEYS, Resources, parse_resources

ExecutorKind = Literal["local", "slurm"]
KINDS: tuple[ExecutorKind, ...] = ("local", "slurm")
Workers = PositiveInt | Literal["auto"]


@dataclass(frozen=True)
class SlurmOptions:
    """The Slurm executor's own options (its resource keys are :class:`Resources`)."""

    folder: str | None = None  # root of the submitit folders (default <results>/.slurm)
    poll_s: float = 30.0  # seconds between two sacct calls while waiting
    wait: bool = True  # wait for the jobs and report; false: submit and return
    max_num_timeout: int = 3  # time-outs / preemptions a trial may be requeued for
    python: str | None = None  # command that runs python in a job (default: this interpreter)
    cluster: Literal["slurm", "local"] = "slurm"  # local: submitit's local executor (tests)
    lost_after_s: float = 180.0  # a job unknown to both sacct and squeue this long is lost


_SLURM_TYPES = typing.get_type_hints(SlurmOptions)
_RANGES = {  # what a type cannot say, in the words of the error
    "poll_s": ("a positive number of seconds", lambda v: v > 0),
    "lost_after_s": ("a positive number of seconds", lambda v: v > 0),
    "max_num_timeout": ("an integer >= 0", lambda v: v >= 0),
}


def _check_range(key: str, value: Any) -> None:
    if key in _RANGES and not _RANGES[key][1](value):
        raise ConfigError(f"{key} must be {_RANGES[key][0]}", key)


@dataclass(frozen=True)
class ExecutorOptions:
    """The checked ``executor:`` section (see the module docstring)."""

    kind: ExecutorKind = "local"
    workers: Workers = "auto"
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    resources: Resources = field(default_factory=Resources)  # Slurm: defaults of every array

    def override(self, kind: str | None = None, workers: int | None = None) -> ExecutorOptions:
        """The command line's ``--executor`` and ``--workers`` over the spec's options. Another
        kind starts from that kind's defaults: the spec's options belong to its own executor.
        Raises :class:`ConfigError` for an unknown kind or a bad number of workers."""
        options = self
        if kind is not None and kind != self.kind:
            options = executor_options({"kind": kind})
        if workers is not None:
            options = dataclasses.replace(options, workers=_coerced(workers))
        return options


def _coerced(workers: Any) -> Workers:
    checked, errors = check_fields({"workers": workers}, {"workers": Workers}, "option", str)
    raise_all([ConfigError(f"executor: {e}", e.key) for e in errors])
    return checked["workers"]


def parse_executor(raw: Any) -> tuple[ExecutorOptions, list[ConfigError]]:
    """``raw`` (a spec's ``executor:`` mapping, or None) as :class:`ExecutorOptions`, and every
    problem, each a one-line :class:`ConfigError` starting ``executor:`` whose ``key`` is the
    option at fault (the options are only meaningful when there is none)."""
    if raw is None:
        return ExecutorOptions(), []
    if not isinstance(raw, dict):
        valid = ", ".join(KINDS)
        return ExecutorOptions(), [
            ConfigError(f"executor: must be a mapping such as {{kind: local}} (kinds: {valid})")
        ]
    kind, errors = check_fields(
        {"kind": raw.get("kind", "local")}, {"kind": ExecutorKind}, "option", str
    )
    hints: dict[str, Any] = {"kind": ExecutorKind, "workers": Workers}
    if kind.get("kind") == "slurm":
        hints.update(_SLURM_TYPES)
        hints.update(dict.fromkeys(RESOURCE_KEYS, Any))  # checked by parse_resources below
    rest = {k: v for k, v in raw.items() if k != "kind"}
    checked, more = check_fields(rest, hints, "option", str, _check_range)
    errors += more
    resources = {k: v for k, v in checked.items() if k in RESOURCE_KEYS}
    for key, value in resources.items():  # one key at a time: each problem keeps its key
        errors += [ConfigError(p, key) for p in parse_resources({key: value}, "executor")[1]]
    options = ExecutorOptions(
        kind=kind.get("kind", "local"),
        workers=checked.get("workers", "auto"),
        slurm=SlurmOptions(**{k: v for k, v in checked.items() if k in _SLURM_TYPES}),
        resources=parse_resources(resources, "executor")[0],
    )
    prefixed = [
        e if str(e).startswith("executor:") else ConfigError(f"executor: {e}", e.key)
        for e in errors
    ]
    return options, prefixed


def executor_options(raw: Any) -> ExecutorOptions:
    """``raw`` as :class:`ExecutorOptions`; raises one :class:`ConfigError` naming every
    problem (for callers without a spec file: tests, notebooks)."""
    options, errors = parse_executor(raw)
    if errors:  # one line, as the command line prints it
        raise ConfigError("; ".join(str(e) for e in errors))
    return options


def benchmark_resources(raw: Any, benchmark: str) -> tuple[Resources, list[ConfigError]]:
    """A benchmark's ``resources:`` as :class:`Resources`, and every problem, each with its key
    (the spec parser names its line)."""
    where = f"benchmark {benchmark!r}"
    if not isinstance(raw, dict):
        return Resources(), [ConfigError(p) for p in parse_resources(raw, where)[1]]
    errors = [
        ConfigError(p, key) for key, v in raw.items() for p in parse_resources({key: v}, where)[1]
    ]
    return parse_resources(raw, where)[0], errors
