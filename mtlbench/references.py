"""Single-task references: the published values a benchmark ships, or the ones this suite's own
``stl`` mode produced (mean over seeds of the STL records' test metrics, with provenance).

A benchmark without published values (MultiDigits, MultiMNIST, Yeast) gets its reference from
the STL records in the results folder; the reference file
``<results>/references/<benchmark>.json`` is written beside them for inspection.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean
from typing import Any

from mtlbench.benchmark import Benchmark, Reference
from mtlbench.records import atomic_write_json, iter_records


def stl_reference(
    results_dir: Path, bench: type[Benchmark], protocol: dict[str, Any] | None = None
) -> Reference | None:
    """The reference from ``results_dir``'s done STL records of ``bench``, or None while a task
    has no such record. Prefers records whose protocol equals ``protocol`` when there are any."""
    results_dir = Path(results_dir)
    if not results_dir.exists():
        return None
    records = [
        r
        for r in iter_records(results_dir)
        if r.get("status") == "done"
        and r["config"].get("benchmark") == bench.name
        and r["config"].get("mode") == "stl"
    ]
    if protocol is not None:
        same = [r for r in records if _same_protocol(r["config"].get("protocol", {}), protocol)]
        records = same or records
    values: dict[str, float] = {}
    provenance: dict[str, list[str]] = {}
    for task in bench.tasks:
        runs = [r for r in records if r["config"].get("task") == task]
        if not runs:
            return None
        provenance[task] = sorted(r["trial_id"] for r in runs)
        for metric in bench.metrics:
            if metric.task == task:
                vals = [r["metrics"]["test"][metric.name] for r in runs]
                values[metric.name] = fmean(vals)
    ref = Reference(
        values=values,
        source=f"mtlbench stl mode: mean over seeds of {sum(map(len, provenance.values()))} "
        f"single-task runs in {results_dir}",
        details={"trials": provenance},
    )
    atomic_write_json(
        results_dir / "references" / f"{bench.name}.json",
        {
            "benchmark": bench.name,
            "values": ref.values,
            "source": ref.source,
            "details": ref.details,
        },
    )
    return ref


def _same_protocol(a: dict[str, Any], b: dict[str, Any]) -> bool:
    # Method-specific learning rates etc. do not change what the STL reference means; compare
    # the data-defining part: everything but the optimisation schedule.
    skip = {"lr", "scheduler", "optimizer", "weight_decay", "selection"}
    strip = lambda d: json.dumps({k: v for k, v in d.items() if k not in skip}, sort_keys=True)  # noqa: E731
    return strip(a) == strip(b)


def reference_for(
    bench: type[Benchmark],
    instance: Benchmark | None,
    results_dir: Path | None,
    protocol: dict[str, Any] | None = None,
) -> Reference | None:
    """The published reference when the benchmark has one, else the suite's STL reference."""
    published = instance.reference() if instance is not None else None
    if published is not None:
        return published
    if results_dir is None:
        return None
    return stl_reference(results_dir, bench, protocol)
