"""The waves of sequential seeding (:mod:`mtlbench.seed_plan`): which methods get more seeds.

:func:`grow` is called by the sweep driver between rounds, and when a sweep starts (to replay
the decisions the records already hold). Per benchmark with a plan, each group of trials that
differ only in their seed (a method's variant, or one task's single-task reference) is decided
once all its runs have finished, with one rule for all: while the 95% t interval of its mean
Δm% (:func:`mtlbench.inference.t_interval`) is wider than the plan's ``ci_halfwidth`` on either
side, and it has fewer than ``max`` seeds, it gets the next ``step`` seeds. Multi-task groups
are decided only once every reference of their benchmark has stopped growing, so that each
decision reads a settled reference and a sweep run again takes the same decisions.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mtlbench import benchmark as benchmarks
from mtlbench.inference import t_interval
from mtlbench.metrics import delta_m_metric_avg
from mtlbench.run.tuning import TERMINAL, Scorer, statuses
from mtlbench.seed_plan import SeedPlan
from mtlbench.sweep import Sweep
from mtlbench.trial import ResolvedTrial, StagedTrial


def _key(trial: ResolvedTrial) -> str:
    """What a group shares: the trial's config less its seed."""
    config = trial.to_dict()
    config.pop("seed")
    return json.dumps(config, sort_keys=True, default=str)


def _records(results: Path, trials: Iterable[ResolvedTrial]) -> list[dict[str, Any]] | None:
    """The trials' records, or None while one has not finished."""
    records = statuses(results, trials)
    if any(r is None or r.get("status") not in TERMINAL for r in records):
        return None
    return [r for r in records if r is not None]


def _stl_scores(records: list[dict[str, Any]]) -> list[float]:
    """A reference's runs as a Δm% against their own mean (its task's metrics, signed)."""
    done = [r for r in records if r.get("status") == "done"]
    if len(done) < 2:
        return []
    bench = benchmarks.get(done[0]["config"]["benchmark"])
    task = done[0]["config"]["task"]
    metrics = [m for m in bench.metrics if m.task == task]
    means = {m.name: statistics.fmean(r["metrics"]["test"][m.name] for r in done) for m in metrics}
    return [delta_m_metric_avg(r["metrics"]["test"], means, metrics) for r in done]


def _mtl_scores(records: list[dict[str, Any]], scorer: Scorer) -> list[float]:
    """The runs' test Δm% against the benchmark's reference as it is now."""
    out = []
    for record in records:
        reference = scorer.reference(record) if record.get("status") == "done" else None
        if reference is not None:
            bench = benchmarks.get(record["config"]["benchmark"])
            out.append(
                delta_m_metric_avg(record["metrics"]["test"], reference.values, bench.metrics)
            )
    return out


def halfwidth(scores: list[float]) -> float:
    """The 95% t interval's half-width of the scores' mean (inf below two finite scores)."""
    finite = [s for s in scores if math.isfinite(s)]
    if len(finite) < 2:
        return math.inf
    low, high = t_interval(finite)
    return (high - low) / 2


def _decide(
    trials: list[ResolvedTrial], plan: SeedPlan, results: Path, scorer: Scorer
) -> tuple[list[ResolvedTrial], bool]:
    """The group's waves the records already decide, then the next one: the trials to add,
    and whether the group has stopped (enough seeds, or ``max``)."""
    added: list[ResolvedTrial] = []
    while True:
        records = _records(results, trials)
        if records is None:
            return added, False  # a run still going: decide after it
        seeds = sorted(t.seed for t in trials)
        if len(seeds) >= plan.max:
            return added, True
        stl = trials[0].mode == "stl"
        scores = _stl_scores(records) if stl else _mtl_scores(records, scorer)
        if halfwidth(scores) <= plan.ci_halfwidth:
            return added, True
        first = seeds[-1] + 1
        wave = [
            dataclasses.replace(trials[0], seed=s)
            for s in range(first, min(first + plan.step, first + plan.max - len(seeds)))
        ]
        trials, added = trials + wave, added + wave


def grow(sweep: Sweep) -> list[ResolvedTrial]:
    """Add to ``sweep.trials`` the next wave of seeds of every group that needs one (see the
    module docstring); returns the trials added."""
    if not sweep.seeding:
        return []
    groups: dict[str, list[ResolvedTrial]] = {}
    for trial in sweep.trials:
        tuning = isinstance(trial, StagedTrial) and trial.stage == "tune"
        if trial.seeding is not None and trial.benchmark in sweep.seeding and not tuning:
            groups.setdefault(_key(trial), []).append(trial)
    scorer = Scorer(Path(sweep.results))
    results = Path(sweep.results)
    added: list[ResolvedTrial] = []
    unsettled: set[str] = set()
    ordered = sorted(groups.values(), key=lambda ts: ts[0].mode != "stl")  # references first
    for trials in ordered:
        bench = trials[0].benchmark
        if trials[0].mode != "stl" and bench in unsettled:
            continue
        wave, stopped = _decide(trials, sweep.seeding[bench], results, scorer)
        added += wave
        if trials[0].mode == "stl" and not stopped:
            unsettled.add(bench)
    known = {t.trial_id for t in sweep.trials}
    added = [t for t in added if t.trial_id not in known]
    sweep.trials.extend(added)
    return added
