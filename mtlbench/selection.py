"""Model selection: which evaluated epoch a trial reports, as a pure function of its curves.

Selection never reads the test set unless the protocol asks for the published, leaky rule
``last10_test_mean`` (NYU-v2 / Cityscapes in the FAMO / Nash-MTL / LDC-MTL code), and the
record says so. The default, ``best_val_delta_m``, picks the epoch with the best validation Δm%
against the single-task reference (or, while no reference exists, the best signed mean of the
validation metrics). The reference of that score is the references' *validation* metrics where
the suite ran them (:func:`selection_reference`): no test metric enters a choice, not even as a
denominator.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mtlbench.benchmark import Metric, Reference
from mtlbench.metrics import delta_m_metric_avg

RULES = ("best_val_delta_m", "last", "last10_test_mean")
LAST_N = 10  # evaluations averaged by ``last10_test_mean``


def selection_reference(reference: Reference) -> dict[str, float]:
    """The denominators of a validation score: the references' validation metrics when the
    suite ran them (STL records), else the published values (constants from a paper, not this
    experiment's test data; published references have no validation split)."""
    return reference.validation if reference.validation is not None else reference.values


def selection_score(
    values: Mapping[str, float], metrics: Sequence[Metric], reference: Reference | None
) -> float:
    """Validation Δm% against the references' validation metrics (lower is better;
    :func:`selection_reference`). Without a reference, the mean of the metrics signed so that
    lower is better (the same order for like-scaled metrics)."""
    if reference is not None:
        return delta_m_metric_avg(values, selection_reference(reference), metrics)
    return statistics.fmean(
        -values[m.name] if m.higher_is_better else values[m.name] for m in metrics
    )


@dataclass(frozen=True)
class Selected:
    """The reported evaluation: its index in the curves, its metrics and how it was chosen."""

    index: int
    val: dict[str, float]
    test: dict[str, float]
    description: str


def select_epoch(curves: Mapping[str, Any], rule: str, *, has_reference: bool) -> Selected:
    """The evaluation that ``rule`` reports, from ``curves`` (``val_score``, ``val`` and
    ``test``: one value per evaluation). Raises ``RuntimeError`` when nothing was evaluated."""
    scores: Sequence[float] = curves["val_score"]
    if not scores:
        raise RuntimeError("no evaluation happened: check epochs and eval_every")
    if rule == "last10_test_mean":
        window = min(LAST_N, len(scores))
        return Selected(
            len(scores) - 1,
            {k: statistics.fmean(v[-window:]) for k, v in curves["val"].items()},
            {k: statistics.fmean(v[-window:]) for k, v in curves["test"].items()},
            f"mean of the last {window} evaluations' TEST metrics (published rule; reads test)",
        )
    if rule == "last":
        index, description = len(scores) - 1, "last evaluation"
    elif rule == "best_val_delta_m":
        index = min(range(len(scores)), key=scores.__getitem__)
        description = (
            "best validation Delta m% against the reference"
            if has_reference
            else "best validation mean of the metrics (no reference available yet)"
        )
    else:
        raise ValueError(f"unknown selection rule {rule!r}; valid: {', '.join(RULES)}")
    return Selected(
        index,
        {k: v[index] for k, v in curves["val"].items()},
        {k: v[index] for k, v in curves["test"].items()},
        description,
    )
