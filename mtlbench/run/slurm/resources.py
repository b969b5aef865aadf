"""Slurm resources as a typed record, checked with the registry's :func:`coerce`.

A sweep spec's ``executor: {kind: slurm, ...}`` gives defaults, each benchmark's ``resources:``
overrides them (``sbatch`` options merge key by key). :class:`Resources` declares every key with
its type; :func:`parse_resources` checks a mapping against those types with
:func:`mtlbench.registry.coerce` (the same checks as hyper-parameters), then the ranges and
Slurm formats that a type cannot say (``cpus >= 1``, ``mem`` like ``16G``, ``time`` in minutes or
``[D-]HH:MM[:SS]``), and reports every problem at once. :func:`slurm_parameters` maps the result
to submitit's ``AutoExecutor.update_parameters``; the table in docs/cluster.md lists the keys.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtlbench.registry import ConfigError, closest, coerce

DEFAULT_TIME_MIN = 60
# sbatch options the executor sets itself
MANAGED_SBATCH = frozenset(
    {"array", "output", "error", "open-mode", "signal", "job-name", "dependency"}
)


@dataclass(frozen=True)
class Resources:
    """What one job array asks Slurm for (every key optional)."""

    partition: str | None = None  # --partition
    account: str | None = None  # --account
    qos: str | None = None  # --qos
    constraint: str | None = None  # --constraint
    job_name: str | None = None  # --job-name (default mtlbench-<sweep>)
    gpus: int | None = None  # --gpus-per-node, >= 0
    cpus: int | None = None  # --cpus-per-task, >= 1
    mem: str | float | None = None  # --mem: "16G", "4000M", or a number of GB
    time: str | float | None = None  # --time: minutes, or [D-]HH:MM[:SS]
    array_parallelism: int | None = None  # --array=0-N%P, >= 1
    signal_delay_s: int | None = None  # --signal=USR2@S, >= 0
    setup: list[str] | None = None  # shell lines before the job
    sbatch: dict[str, Any] | None = None  # any other #SBATCH option
    threads: int | None = None  # torch threads per trial (default cpus, else 1), >= 1

    @property
    def torch_threads(self) -> int:
        return self.threads or self.cpus or 1

    def as_dict(self) -> dict[str, Any]:
        """The keys that are set (a stable grouping key for job arrays)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


RESOURCE_KEYS = tuple(f.name for f in dataclasses.fields(Resources))
_TYPES = typing.get_type_hints(Resources)
_MINIMUM = {"gpus": 0, "signal_delay_s": 0, "cpus": 1, "array_parallelism": 1, "threads": 1}
_WANTED = {  # what a value must be, said in the error
    **{k: "a non-empty string" for k in ("partition", "account", "qos", "constraint", "job_name")},
    **{k: "a positive integer" if m == 1 else "an integer >= 0" for k, m in _MINIMUM.items()},
    "mem": "a Slurm memory size like 16G or 4000M, or a number of GB",
    "time": "minutes (a positive number) or a Slurm time like 2:00:00 or 1-12:00:00",
    "setup": "a list of shell lines",
    "sbatch": "a mapping of sbatch option -> value",
}


def minutes(value: Any) -> int | None:
    """A Slurm time limit in whole minutes (rounded up); None when not understood."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return math.ceil(value) if value > 0 else None
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"\s*(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?\s*", value)
    if m is None:
        return None
    days, a, b, c = (int(x) if x is not None else None for x in m.groups())
    if days is not None:  # days-hours[:minutes[:seconds]]
        seconds = ((days * 24 + a) * 60 + (b or 0)) * 60 + (c or 0)
    elif c is not None:  # hours:minutes:seconds
        seconds = (a * 60 + b) * 60 + c
    elif b is not None:  # minutes:seconds
        seconds = a * 60 + b
    else:  # minutes
        seconds = a * 60
    return math.ceil(seconds / 60) if seconds > 0 else None


def _valid(key: str, value: Any) -> bool:
    """The range or format a type cannot say."""
    if key in _MINIMUM:
        return value >= _MINIMUM[key]
    if key in ("partition", "account", "qos", "constraint", "job_name"):
        return bool(value.strip())
    if key == "mem":
        if isinstance(value, str):
            return re.fullmatch(r"\d+[KMGT]?", value.strip(), re.I) is not None
        return value > 0
    if key == "time":
        return minutes(value) is not None
    return True


def _sbatch_problems(options: dict[str, Any], where: str) -> list[str]:
    problems = []
    for name, value in options.items():
        flag = str(name).lstrip("-")
        if flag in MANAGED_SBATCH or flag.replace("_", "-") in MANAGED_SBATCH:
            problems.append(
                f"{where}: sbatch option {name!r} is set by the executor "
                "(use array_parallelism, job_name or time instead)"
            )
        elif isinstance(value, (dict, list)) or value is None:
            problems.append(f"{where}: sbatch option {name!r} must be a string or a number")
    return problems


def parse_resources(raw: Any, where: str) -> tuple[Resources, list[str]]:
    """``raw`` as :class:`Resources`, and every problem found (the resources are only
    meaningful when there is none)."""
    if raw is None:
        return Resources(), []
    if not isinstance(raw, dict):
        return Resources(), [
            f"{where}: resources must be a mapping (valid keys: {', '.join(RESOURCE_KEYS)})"
        ]
    problems: list[str] = []
    checked: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _TYPES:
            problems.append(
                f"{where}: unknown resource {key!r}.{closest(key, RESOURCE_KEYS)} "
                f"Valid: {', '.join(sorted(RESOURCE_KEYS))}"
            )
            continue
        if key == "sbatch":
            if not isinstance(value, dict):
                problems.append(f"{where}: resource 'sbatch' must be {_WANTED['sbatch']}")
            else:
                problems += _sbatch_problems(value, where)
                checked[key] = dict(value)
            continue
        try:
            checked[key] = coerce(value, _TYPES[key], f"{where}: resource {key!r}")
        except ConfigError:
            checked[key] = None
        if checked[key] is None or not _valid(key, checked[key]):
            problems.append(f"{where}: resource {key!r} must be {_WANTED[key]}, got {value!r}")
    return Resources(**{k: v for k, v in checked.items() if v is not None}), problems


def merge_resources(defaults: dict[str, Any], own: dict[str, Any] | None) -> dict[str, Any]:
    """A benchmark's resources over the executor's defaults; ``sbatch`` options merge."""
    merged = dict(defaults)
    for key, value in (own or {}).items():
        if key == "sbatch" and isinstance(value, dict):
            merged["sbatch"] = {**merged.get("sbatch", {}), **value}
        else:
            merged[key] = value
    return merged


def slurm_parameters(resources: Resources, job_name: str) -> dict[str, Any]:
    """Checked resources -> keyword arguments of ``AutoExecutor.update_parameters``."""
    r = resources
    params: dict[str, Any] = {
        "name": r.job_name or job_name,
        "timeout_min": minutes(r.time) if r.time is not None else DEFAULT_TIME_MIN,
        "cpus_per_task": r.cpus or 1,
    }
    if r.gpus is not None:
        params["gpus_per_node"] = r.gpus
    if isinstance(r.mem, str):
        params["slurm_mem"] = r.mem.strip().upper()
    elif r.mem is not None:
        params["mem_gb"] = float(r.mem)
    for key in ("partition", "account", "qos", "constraint", "array_parallelism"):
        if getattr(r, key) is not None:
            params[f"slurm_{key}"] = getattr(r, key)
    if r.signal_delay_s is not None:
        params["slurm_signal_delay_s"] = r.signal_delay_s
    if r.setup:
        params["slurm_setup"] = list(r.setup)
    if r.sbatch:
        params["slurm_additional_parameters"] = {str(k).lstrip("-"): v for k, v in r.sbatch.items()}
    return params


def _raw_slurm(params: dict[str, Any]) -> dict[str, Any]:
    """``AutoExecutor`` parameters -> submitit ``SlurmExecutor`` ones (for the dry-run script)."""
    generic = {"timeout_min": "time", "name": "job_name", "cpus_per_task": "cpus_per_task"}
    raw: dict[str, Any] = {}
    for key, value in params.items():
        if key in generic:
            raw[generic[key]] = value
        elif key == "mem_gb":
            raw["mem"] = f"{int(value * 1024)}MB"
        elif key == "gpus_per_node":
            raw["gpus_per_node"] = value
        elif key.startswith("slurm_"):
            raw[key[len("slurm_") :]] = value
    return raw


def sbatch_script(params: dict[str, Any], folder: Path, n_tasks: int) -> str:
    """The ``#SBATCH`` header submitit writes for an array of ``n_tasks`` with ``params``.

    submitit (1.5) renders its script only inside ``submit``/``map_array`` (which call
    ``sbatch``); the renderer itself, ``submitit.slurm.slurm._make_sbatch_string``, is private
    and nothing public returns the text. A dry run must show exactly what would be submitted,
    so this calls that function (the one private submitit import of mtlbench, pinned by
    ``tests/test_slurm.py::test_dry_run_prints_arrays_and_sbatch_options``) rather than keep
    a second renderer that could drift from submitit's.
    """
    from submitit.slurm.slurm import _make_sbatch_string  # optional heavy dependency: submitit

    raw = _raw_slurm(params)
    command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {folder}"
    kwargs = {"map_count": n_tasks} if n_tasks > 1 else {}
    return _make_sbatch_string(command=command, folder=folder, **raw, **kwargs)
