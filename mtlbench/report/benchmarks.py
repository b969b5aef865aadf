"""What the report knows of a benchmark: its metrics (name, task, direction) and its published
reference.

A registered benchmark answers from its class. A benchmark this installation does not register
answers from its records: version-2 records carry ``metric_info`` (each metric's task and
direction), so their leaderboard is complete. Version-1 records of an unregistered benchmark
carry no direction: their metrics are shown (tasks taken from the single-task records) but left
out of Δm% and ranks, and the page says so. Directions are never guessed from metric names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from mtlbench import benchmark as benchmarks
from mtlbench.records import first_line
from mtlbench.registry import ConfigError
from mtlbench.report.base import BenchInfo, Col


def records_metric_info(name: str, frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Every metric named in the ``metric_info`` of a benchmark's records (a records frame's
    JSON column), first seen first, multi-task records before single-task ones."""
    rows = frame[frame["benchmark"] == name]
    if "metric_info" not in rows:
        return []
    rows = rows.sort_values("mode", key=lambda m: m == "stl", kind="stable")
    found: dict[str, dict[str, Any]] = {}
    for text in rows["metric_info"].dropna().unique():
        for entry in json.loads(text):
            found.setdefault(str(entry["name"]), entry)
    return list(found.values())


def bench_info(
    name: str, frame: pd.DataFrame, metric_info: Sequence[dict[str, Any]] | None = None
) -> BenchInfo:
    """What the benchmark class says about its metrics and reference; when the class is not
    registered here, what the records say (``metric_info``, by default the frame's; for
    version-1 records the test metrics, directions unknown), with a note."""
    try:
        cls = benchmarks.get(name)
    except ConfigError:  # an unknown name
        return _from_records(name, frame, metric_info, "")
    except Exception as error:  # a benchmark module failing to import
        why = f" ({type(error).__name__}: {first_line(error)})"
        return _from_records(name, frame, metric_info, why)
    cols = [Col(m.name, m.task, m.higher_is_better, m.unit) for m in cls.metrics]
    recorded = records_metric_info(name, frame) if metric_info is None else list(metric_info)
    if recorded and {str(m["name"]) for m in recorded} != {c.name for c in cols}:
        return _earlier_metrics(name, frame, recorded, cols)
    info = BenchInfo(name, cols, True)
    try:
        info.published = cls(cls.default_protocol()).reference()
    except Exception as error:  # a benchmark whose constructor needs more than its protocol
        info.notes.append(
            f"could not ask {name} for its published reference "
            f"({type(error).__name__}: {first_line(error)})"
        )
    return info


def _earlier_metrics(
    name: str, frame: pd.DataFrame, recorded: list[dict[str, Any]], current: list[Col]
) -> BenchInfo:
    """Records made before the benchmark's metrics changed (Yeast's ``acc_*`` became
    ``bacc_*``): their table is the records' own ``metric_info``, said so, never re-labelled."""
    info = _from_records(name, frame, recorded, "")
    info.notes = [
        f"these records score {name} with {_names(recorded)}; this installation's {name} "
        f"scores {_names([{'name': c.name} for c in current])}: the table uses the records' "
        "`metric_info` (run the sweep again for the current metrics)"
    ]
    return info


def _names(info: Sequence[dict[str, Any]], shown: int = 3) -> str:
    names = [f"`{m['name']}`" for m in info]
    return ", ".join(names[:shown]) + (
        f" and {len(names) - shown} more" if len(names) > shown else ""
    )


def _from_records(
    name: str, frame: pd.DataFrame, metric_info: Sequence[dict[str, Any]] | None, why: str
) -> BenchInfo:
    if metric_info is None:
        metric_info = records_metric_info(name, frame)
    intro = f"benchmark {name!r} is not registered in this installation{why}"
    if metric_info:
        cols = [
            Col(str(m["name"]), str(m["task"]), bool(m["higher_is_better"]), m.get("unit") or "")
            for m in metric_info
        ]
        note = f"{intro}: its metrics, tasks and directions are the records' `metric_info`"
        return BenchInfo(name, cols, False, None, [note])
    cols = _version1_cols(name, frame)
    note = (
        f"{intro}, and its records (version 1) carry no metric directions: the metrics are "
        "shown but left out of Δm% and ranks"
        + (f" ({', '.join(c.name for c in cols)})" if cols else "")
        + "; register the benchmark, or re-run with this version to record them"
    )
    return BenchInfo(name, cols, False, None, [note])


def _version1_cols(name: str, frame: pd.DataFrame) -> list[Col]:
    """The test metrics of a benchmark's done records, each with its task (from the single-task
    records, else the trained task whose name it starts with) and no direction."""
    rows = frame[(frame["benchmark"] == name) & (frame["status"] == "done")]
    test_cols = [c for c in rows.columns if c.startswith("test/") and rows[c].notna().any()]
    task_of: dict[str, str] = {}
    for task, g in rows[rows["mode"] == "stl"].groupby("task", sort=False):
        for c in test_cols:
            if g[c].notna().any():
                task_of.setdefault(c[5:], str(task))
    train_tasks = [t for s in rows["train_tasks"].unique() for t in str(s).split(",") if t]
    cols = []
    for metric in (c[5:] for c in test_cols):
        task = task_of.get(metric) or next(
            (t for t in dict.fromkeys(train_tasks) if metric.startswith(t)), metric
        )
        cols.append(Col(metric, task, None))
    return cols
