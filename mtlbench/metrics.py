"""Delta m% in both conventions of the literature, and mean rank.

* **Metric-averaged** (FAMO / Nash-MTL / LDC-MTL ``delta_fn``, protocols.md section 3.1):
  ``Delta m% = 100/M * sum_j (-1)^{s_j} (x_j - b_j) / b_j``, ``s_j = 1`` when higher is
  better. Positive is worse. This is the default everywhere in mtlbench.
* **Task-averaged** (LibMTL / DB-MTL, also 3.1): the same relative changes averaged within each
  task first, then across tasks, and reported with the same sign as above (positive is worse),
  so that the two variants are comparable in one table; LibMTL's Delta p is its negative.
  They differ whenever tasks have different numbers of metrics (NYU-v2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from mtlbench.benchmark import Metric


def relative_changes(
    values: Mapping[str, float], reference: Mapping[str, float], metrics: Sequence[Metric]
) -> dict[str, float]:
    """Signed relative change per metric, in percent (positive = worse than the reference)."""
    out = {}
    for m in metrics:
        if m.name not in values or m.name not in reference:
            raise KeyError(f"metric {m.name!r} missing from the values or the reference")
        base = reference[m.name]
        sign = -1.0 if m.higher_is_better else 1.0
        out[m.name] = 100.0 * sign * (values[m.name] - base) / base
    return out


def delta_m_metric_avg(
    values: Mapping[str, float], reference: Mapping[str, float], metrics: Sequence[Metric]
) -> float:
    """Metric-averaged Delta m% (positive is worse)."""
    changes = relative_changes(values, reference, metrics)
    return sum(changes.values()) / len(changes)


def delta_m_task_avg(
    values: Mapping[str, float], reference: Mapping[str, float], metrics: Sequence[Metric]
) -> float:
    """Task-averaged Delta m% (LibMTL's convention with the sign flipped: positive is worse)."""
    changes = relative_changes(values, reference, metrics)
    by_task: dict[str, list[float]] = {}
    for m in metrics:
        by_task.setdefault(m.task, []).append(changes[m.name])
    return sum(sum(v) / len(v) for v in by_task.values()) / len(by_task)


def delta_m_both(
    values: Mapping[str, float], reference: Mapping[str, float], metrics: Sequence[Metric]
) -> dict[str, float]:
    return {
        "metric_avg": delta_m_metric_avg(values, reference, metrics),
        "task_avg": delta_m_task_avg(values, reference, metrics),
    }


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
