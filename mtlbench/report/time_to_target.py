"""Time to LS's quality: the "at what cost" of a method beside its per-step ratio.

AlgoPerf's time-to-target (Dahl et al., "Benchmarking Neural Network Training Algorithms",
arXiv 2306.07179), adapted to a leaderboard with LS as the baseline (issue 21, item 6):

* the **target** of a benchmark is LS's quality: the median over LS's seeds of each LS run's
  best validation Δm% (the score its epoch selection minimises);
* a run **reaches** it at its first evaluation whose validation Δm% is at or below the target;
  its **steps** and **time** to there are read from the run (the time of an evaluation after
  epoch ``e`` of ``E`` is ``train_s (e + 1) / E``, training time spread evenly over epochs; the
  steps likewise, exact where every epoch has the same number of steps);
* per method, the median over the runs that reach it, divided by LS's own median: ``steps × LS``
  and ``time × LS``; a method none of whose runs reaches it reads ``never``, and ``reached``
  counts the runs that did.

Validation Δm% is computed against the reference's validation values where the suite has them
(:class:`~mtlbench.report.base.RefInfo`.``validation``), else the published values, as epoch
selection does (:func:`mtlbench.selection.selection_reference`): no test metric enters it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from mtlbench.metrics import delta_m_metric_avg
from mtlbench.report.base import Col

COLUMNS = ["benchmark", "method", "runs", "reached", "steps_x_ls", "time_x_ls", "target"]


def val_delta_m(curves: Mapping[str, Any], cols: Sequence[Col], ref: Mapping[str, float]) -> list:
    """The validation Δm% of every evaluation in ``curves`` (lower is better;
    :func:`mtlbench.metrics.delta_m_metric_avg` over the metrics with a direction), NaN where a
    metric or its reference value is missing."""
    val = curves.get("val") or {}
    ranked = [c for c in cols if c.higher_is_better is not None]
    out = []
    for i in range(len(curves.get("epoch") or [])):
        values = {c.name: val[c.name][i] for c in ranked if i < len(val.get(c.name) or [])}
        try:
            out.append(delta_m_metric_avg(values, ref, ranked))  # type: ignore[arg-type]
        except KeyError:  # a metric not evaluated here, or without a reference value
            out.append(math.nan)
    return out


def _reach(record: Mapping[str, Any], curve: list[float], target: float) -> tuple[float, float]:
    """``(steps, seconds)`` to the first evaluation at or below ``target``; NaNs if never."""
    epochs = ((record.get("config") or {}).get("protocol") or {}).get("epochs")
    timing = record.get("timing") or {}
    evaluated = (record.get("curves") or {}).get("epoch") or []
    for epoch, value in zip(evaluated, curve, strict=False):
        if math.isfinite(value) and value <= target + 1e-9 and epochs:
            share = (epoch + 1) / epochs
            return share * float(timing.get("steps") or math.nan), share * float(
                timing.get("train_s") or math.nan
            )
    return math.nan, math.nan


def time_to_target(
    records: Sequence[Mapping[str, Any]],
    labels: Mapping[str, str],
    cols: Sequence[Col],
    ref: Mapping[str, float] | None,
    ls_label: str | None,
    benchmark: str,
) -> pd.DataFrame:
    """One row per method (:data:`COLUMNS`) of one benchmark. ``records``: its done runs;
    ``labels``: trial id -> the leaderboard's variant label (runs without one are left out);
    ``ref``: the validation reference; ``ls_label``: LS's variant. Empty without LS or a
    reference."""
    if not ref or ls_label is None:
        return pd.DataFrame(columns=COLUMNS)
    curves: dict[str, list[tuple[Mapping[str, Any], list[float]]]] = {}
    for record in records:
        label = labels.get(str(record.get("trial_id")))
        if label is not None:
            curve = val_delta_m(record.get("curves") or {}, cols, ref)
            curves.setdefault(label, []).append((record, curve))
    ls_best = [
        min((v for v in c if math.isfinite(v)), default=math.nan)
        for _, c in curves.get(ls_label, [])
    ]
    ls_best = [v for v in ls_best if math.isfinite(v)]
    if not ls_best:
        return pd.DataFrame(columns=COLUMNS)
    target = statistics.median(ls_best)
    reached = {m: [_reach(r, c, target) for r, c in runs] for m, runs in curves.items()}
    ls_steps, ls_time = (_median([x[i] for x in reached[ls_label]]) for i in (0, 1))
    rows = []
    for method, hits in reached.items():
        done = [h for h in hits if math.isfinite(h[0])]
        steps, time = _median([h[0] for h in done]), _median([h[1] for h in done])
        rows.append(
            [benchmark, method, len(hits), len(done), steps / ls_steps, time / ls_time, target]
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def _median(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan
