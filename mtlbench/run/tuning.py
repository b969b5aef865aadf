"""The tuning stage, run: each tuning trial's validation score from its record, the selected
configuration of each tuned method (after its widening round, when its first round selected a
value at an edge: :mod:`mtlbench.tune_widen`), and its final runs added to the sweep.

The plan (the tune block, the spaces, the sampled configurations and their trials) is
:mod:`mtlbench.tune`, below the spec model; this module reads records, so it sits with the
runners, above it. The rules (equal budgets, validation-only selection, ties to the first
drawn, ``+inf`` for a diverged or failed configuration) are in :mod:`mtlbench.tune` and
docs/tuning.md.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtlbench import benchmark as benchmarks
from mtlbench import references
from mtlbench.metrics import delta_m_metric_avg
from mtlbench.records import read_record, record_path
from mtlbench.registry import ConfigError
from mtlbench.selection import selection_reference, selection_score
from mtlbench.trial import ResolvedTrial, StagedTrial
from mtlbench.tune import TunePlan, final_trials, widen_round

if TYPE_CHECKING:
    from mtlbench.sweep import Sweep

TERMINAL = ("done", "diverged", "failed")


def _signed_val(record: Mapping[str, Any], metric: str) -> float:
    info = {m["name"]: m for m in record.get("metric_info") or []}
    value = ((record.get("metrics") or {}).get("val") or {}).get(metric)
    if value is None or metric not in info:
        raise ConfigError(f"tuning metric val_{metric}: not in record {record.get('trial_id')}")
    return -float(value) if info[metric]["higher_is_better"] else float(value)


class Scorer:
    """Validation scores of tuning records; references resolved once per results folder (its
    own STL records, or those of the leaderboard it extends: :mod:`mtlbench.extends`)."""

    def __init__(self, results: Path) -> None:
        self.results = Path(results)
        self._rows: Any = None

    def reference(self, record: Mapping[str, Any]) -> Any:
        cfg = record["config"]
        bench = benchmarks.get(cfg["benchmark"])
        protocol = bench.default_protocol().replace(**cfg["protocol"])
        published = bench(protocol, cfg.get("data_root")).reference()
        if published is not None:
            return published
        if self._rows is None:
            self._rows = references.reference_rows(self.results)
        rows = self._rows[self._rows["benchmark"] == bench.name]
        found = references.stl_references(rows, bench.metrics).get(
            references.data_key(cfg["protocol"])
        )
        return found if not isinstance(found, str) else None

    def score(self, record: Mapping[str, Any], metric: str) -> float:
        """The record's validation score (lower is better); ``inf`` unless it is done. A
        single-task reference has no reference of its own: under ``val_delta_m`` it scores its
        task's validation metrics, signed so that lower is better and averaged
        (:func:`mtlbench.selection.selection_score` without a reference, the rule its epoch
        selection uses)."""
        if record.get("status") != "done":
            return math.inf
        cfg = record["config"]
        if cfg.get("mode") == "stl" and metric == "val_delta_m":
            task_metrics = [
                m for m in benchmarks.get(cfg["benchmark"]).metrics if m.task == cfg["task"]
            ]
            return selection_score(record["metrics"]["val"], task_metrics, None)
        if metric != "val_delta_m":
            return _signed_val(record, metric.removeprefix("val_"))
        reference = self.reference(record)
        if reference is None:
            raise ConfigError(
                f"tuning on val_delta_m needs a reference for {record['config']['benchmark']}: "
                "add stl: true to the benchmark (or tune on val_<metric>)"
            )
        metrics = benchmarks.get(record["config"]["benchmark"]).metrics
        return delta_m_metric_avg(record["metrics"]["val"], selection_reference(reference), metrics)


def statuses(results: Path, trials: Iterable[ResolvedTrial]) -> list[dict[str, Any] | None]:
    """The trials' records (None where a trial has none, or an unreadable one)."""
    out: list[dict[str, Any] | None] = []
    for t in trials:
        path = record_path(results, t.trial_id)
        try:
            out.append(dict(read_record(path)) if path.exists() else None)
        except ValueError:
            out.append(None)
    return out


def select(plan: TunePlan, results: Path, scorer: Scorer | None = None) -> int | None:
    """The index of the best configuration once every tuning trial of ``plan`` has finished
    (done, diverged or failed), else None. Fills ``plan.scores``; raises ConfigError when no
    configuration finished ``done``."""
    scorer = scorer or Scorer(results)
    scores = []
    for trials in plan.trials:
        records = statuses(results, trials)
        if any(r is None or r.get("status") not in TERMINAL for r in records):
            return None
        per_seed = [scorer.score(r, plan.tune.metric) for r in records if r is not None]
        scores.append(statistics.fmean(per_seed) if all(map(math.isfinite, per_seed)) else math.inf)
    plan.scores = scores
    if not any(math.isfinite(s) for s in scores):
        raise ConfigError(
            f"no tuning trial of {plan.method} on {plan.benchmark} finished: nothing to select"
        )
    return min(range(len(scores)), key=scores.__getitem__)


def _advance(plan: TunePlan, results: Path, scorer: Scorer) -> list[StagedTrial]:
    """What the records decide for one plan now: nothing (a trial still to run), the trials of
    its widening round (:func:`mtlbench.tune.widen_round`, when its first round selected a value
    at an edge), and its selection and final runs once every round has finished. A resumed
    sweep whose widening round is already on record gets both at once."""
    added: list[StagedTrial] = []
    while plan.selected is None:
        try:
            index = select(plan, results, scorer)
        except ConfigError as error:
            plan.problem = str(error)
            return added
        if index is None:
            return added
        plan.problem = None
        widening = widen_round(plan, index)
        if widening:
            added += widening
            continue  # select again: its records may already be there
        plan.selected = index
        plan.final = final_trials(plan, index)
        added += plan.final
    return added


def finalize(sweep: Sweep) -> list[StagedTrial]:
    """Add to ``sweep.trials`` what the records in ``sweep.results`` decide for every plan: the
    trials of a widening round, and the final runs of every plan whose tuning has finished;
    returns the trials added. A plan's selection is made once: a plan already selected is left
    as it is."""
    added: list[StagedTrial] = []
    scorer = Scorer(sweep.results)
    known = {t.trial_id for t in sweep.trials}
    for plan in sweep.tuning:
        for trial in _advance(plan, sweep.results, scorer):
            if trial.trial_id not in known:
                known.add(trial.trial_id)
                added.append(trial)
    sweep.trials.extend(added)
    return added
