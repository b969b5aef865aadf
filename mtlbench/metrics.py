"""Delta m% in both conventions of the literature, and mean rank.

* **Metric-averaged** (FAMO / Nash-MTL / LDC-MTL ``delta_fn``; docs/reports.md):
  ``Delta m% = 100/M * sum_j (-1)^{s_j} (x_j - b_j) / b_j``, ``s_j = 1`` when higher is
  better. Positive is worse. This is the default everywhere in mtlbench.
* **Task-averaged** (LibMTL / DB-MTL): the same relative changes averaged within each
  task first, then across tasks, and reported with the same sign as above (positive is worse),
  so that the two variants are comparable in one table; LibMTL's Delta p is its negative.
  They differ whenever tasks have different numbers of metrics (NYU-v2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mtlbench.benchmark import Metric


def delta_m_arrays(
    values: np.ndarray, reference: Sequence[float], metrics: Sequence[Metric]
) -> tuple[np.ndarray, np.ndarray]:
    """Δm% of every row of ``values`` (N x M, columns in the order of ``metrics``) against
    ``reference`` (M values): the metric-averaged and the task-averaged variant, both positive
    when worse. NaN where a value or its reference is missing, or the reference is 0.

    The one implementation of Δm% in mtlbench: the trainer (one row) and the report (a whole
    leaderboard at once) both call it.
    """
    if not metrics:
        nan = np.full(len(np.atleast_2d(np.asarray(values, dtype=float))), math.nan)
        return nan, nan.copy()
    x = np.asarray(values, dtype=float).reshape(-1, len(metrics))
    b = np.asarray(reference, dtype=float)
    s = np.array([-1.0 if m.higher_is_better else 1.0 for m in metrics])
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = 100.0 * s * (x - b) / b
    rel[~np.isfinite(rel)] = math.nan
    tasks = list(dict.fromkeys(m.task for m in metrics))
    per_task = [
        rel[:, [i for i, m in enumerate(metrics) if m.task == t]].mean(axis=1) for t in tasks
    ]
    return rel.mean(axis=1), np.mean(per_task, axis=0)


def delta_m_frame(
    frame: pd.DataFrame, reference: Mapping[str, float], metrics: Sequence[Metric]
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`delta_m_arrays` of the ``test/<metric>`` columns of a records frame
    (:func:`mtlbench.records.load_results`)."""
    names = [m.name for m in metrics]
    x = frame.reindex(columns=[f"test/{n}" for n in names]).to_numpy(dtype=float)
    b = [reference.get(n, math.nan) for n in names]
    return delta_m_arrays(x, b, metrics)


def _one(
    values: Mapping[str, float], reference: Mapping[str, float], metrics: Sequence[Metric]
) -> tuple[float, float]:
    for m in metrics:
        if m.name not in values or m.name not in reference:
            raise KeyError(f"metric {m.name!r} missing from the values or the reference")
    x = np.array([[values[m.name] for m in metrics]], dtype=float)
    metric_avg, task_avg = delta_m_arrays(x, [reference[m.name] for m in metrics], metrics)
    return float(metric_avg[0]), float(task_avg[0])


def delta_m_metric_avg(
    values: Mapping[str, float], reference: Mapping[str, float], metrics: Sequence[Metric]
) -> float:
    """Metric-averaged Delta m% of one set of values (positive is worse)."""
    return _one(values, reference, metrics)[0]


def delta_m_task_avg(
    values: Mapping[str, float], reference: Mapping[str, float], metrics: Sequence[Metric]
) -> float:
    """Task-averaged Delta m% (LibMTL's convention with the sign flipped: positive is worse)."""
    return _one(values, reference, metrics)[1]


def delta_m_both(
    values: Mapping[str, float], reference: Mapping[str, float], metrics: Sequence[Metric]
) -> dict[str, float]:
    metric_avg, task_avg = _one(values, reference, metrics)
    return {"metric_avg": metric_avg, "task_avg": task_avg}


def mean_rank(table: pd.DataFrame, higher_is_better: Mapping[str, bool]) -> pd.Series:
    """Mean rank over metrics (1 = best, ties share the lowest rank), one value per row.

    ``table`` has one row per method and one column per metric; missing values are ranked over
    the methods that have the metric and left out of that method's mean.
    """
    ranks = {}
    for col in table.columns:
        ascending = not higher_is_better[col]
        ranks[col] = table[col].rank(method="min", ascending=ascending)
    return pd.DataFrame(ranks).mean(axis=1, skipna=True)


def is_finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)
