"""The single-task reference of Δm%: one resolver for the trainer and the report.

A benchmark's reference is, in this order of preference:

1. **published**: the values the benchmark ships (``Benchmark.reference()``, with the citation);
2. **stl**: the suite's own single-task runs, the mean over seeds of the done ``stl`` records of
   each task that share the trial's *data protocol* (the protocol less its schedule keys and its
   replicate keys), with the trial ids as provenance. Their test means are the reported Δm%'s
   reference (``values``); their validation means (``validation``) are the reference of every
   selection score, so that tuning and epoch selection never read a test metric.

The STL reference is computed from a records frame (:func:`mtlbench.records.load_results`), so
the trainer at run time and the report afterwards compute the same values from the same records,
and nothing is written as a side effect.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mtlbench.benchmark import Benchmark, Metric, Reference
from mtlbench.extends import reference_roots
from mtlbench.records import REPLICATE_KEYS, load_results
from mtlbench.registry import ConfigError

# Protocol keys that do not change what an STL reference means: the optimisation schedule (a
# method may bring its own learning rate) and the selection rule.
SCHEDULE_KEYS = ("lr", "scheduler", "optimizer", "weight_decay", "selection")


def data_key(protocol: Mapping[str, Any] | str | None) -> str:
    """The data-defining part of a protocol (dict, or the JSON of a records frame) as sorted
    JSON: STL and MTL runs with equal keys share a reference."""
    if isinstance(protocol, str):
        try:
            protocol = json.loads(protocol) if protocol else {}
        except ValueError:
            protocol = {}
    drop = (*SCHEDULE_KEYS, *REPLICATE_KEYS)
    kept = {k: v for k, v in dict(protocol or {}).items() if k not in drop}
    return json.dumps(kept, sort_keys=True, default=str)


def stl_references(rows: pd.DataFrame, metrics: Sequence[Metric]) -> dict[str, Reference | str]:
    """References from the done ``stl`` rows of one benchmark in a records frame, one per data
    protocol (:func:`data_key`): metric m of task t is the mean of t's STL records. A data
    protocol whose STL records lack a task maps to the reason instead.

    ``details`` holds ``kind`` ("stl"), ``key`` (the data protocol), ``trials`` (task -> trial
    ids), ``n`` (task -> records) and ``std`` (metric -> standard deviation over seeds)."""
    stl = rows[(rows["mode"] == "stl") & (rows["status"] == "done")]
    if "stage" in stl:  # a tuned reference's tuning runs are not the reference: its finals are
        stl = stl[stl["stage"] != "tune"]
    out: dict[str, Reference | str] = {}
    if stl.empty:
        return out
    tasks = list(dict.fromkeys(m.task for m in metrics))
    for key, group in stl.groupby(stl["protocol"].map(data_key), sort=False):
        values: dict[str, float] = {}
        validation: dict[str, float] = {}
        std: dict[str, float] = {}
        n: dict[str, int] = {}
        trials: dict[str, list[str]] = {}
        lacking = []
        for task in tasks:
            runs = group[group["task"] == task]
            if runs.empty:
                lacking.append(task)
                continue
            n[task] = len(runs)
            trials[task] = sorted(runs["trial_id"])
            for m in metrics:
                if m.task == task:
                    values[m.name], std[m.name] = _mean_std(runs, f"test/{m.name}")
                    validation[m.name] = _mean_std(runs, f"val/{m.name}")[0]
        if lacking:
            out[str(key)] = f"no done STL record for task(s) {', '.join(lacking)}"
            continue
        seeds = "/".join(map(str, sorted(set(n.values()))))
        out[str(key)] = Reference(
            values=values,
            source=f"mtlbench stl mode: mean over seeds of {sum(n.values())} single-task (stl) "
            f"records in this results folder ({seeds} seed(s) per task)",
            details={"kind": "stl", "key": str(key), "trials": trials, "n": n, "std": std},
            validation=validation,
        )
    return out


def _mean_std(runs: pd.DataFrame, column: str) -> tuple[float, float]:
    """Mean and sample standard deviation of a records frame's column over its non-missing
    values (NaN for none; the deviation needs two)."""
    found = runs.get(column)
    vals = found.dropna() if found is not None else pd.Series(dtype=float)
    mean = float(vals.mean()) if len(vals) else math.nan
    return mean, float(vals.std()) if len(vals) > 1 else math.nan


def reference_rows(results_dir: Path) -> pd.DataFrame:
    """The records frame the STL references of ``results_dir`` come from: its own records, and
    the single-task records of the leaderboard it extends
    (:func:`mtlbench.extends.reference_roots`: a sweep run against a committed leaderboard does
    not run them again)."""
    own, *bases = reference_roots(Path(results_dir))
    frames = [load_results(own)]
    for base in bases:
        if not base.is_dir():
            raise ConfigError(
                f"{results_dir} extends {base}, which does not exist: its references are there"
            )
        rows = load_results(base)
        frames.append(rows[rows["mode"] == "stl"])
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def stl_reference(
    results_dir: Path, bench: type[Benchmark], protocol: Mapping[str, Any] | None = None
) -> Reference | None:
    """The STL reference of ``bench`` from the records in ``results_dir`` for ``protocol``'s
    data protocol (the only one there is when ``protocol`` is None), or None while a task has
    no done STL record."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return None
    rows = reference_rows(results_dir)
    refs = stl_references(rows[rows["benchmark"] == bench.name], bench.metrics)
    if protocol is not None:
        found = refs.get(data_key(protocol))
    else:
        found = next(iter(refs.values())) if len(refs) == 1 else None
    return found if isinstance(found, Reference) else None


def reference_for(
    bench: type[Benchmark],
    instance: Benchmark | None,
    results_dir: Path | None,
    protocol: Mapping[str, Any] | None = None,
) -> Reference | None:
    """The published reference when the benchmark has one, else the suite's STL reference."""
    published = instance.reference() if instance is not None else None
    if published is not None:
        return published
    if results_dir is None:
        return None
    return stl_reference(results_dir, bench, protocol)
