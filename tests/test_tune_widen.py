"""Widening a tuned range once (``tune: {widen: {factor}}``, issue 21): the edge rule, the
bands, the spec errors, and a toy sweep whose lr optimum lies above its initial range."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

import tiny_benchmark  # noqa: F401  (registers _tiny)
from mtlbench.labels import trial_labels
from mtlbench.notes import stage_of, tuning_status
from mtlbench.records import iter_records, read_record, record_path, write_record
from mtlbench.report import build_report
from mtlbench.run.driver import SweepRun
from mtlbench.run.local import LocalExecutor
from mtlbench.space import Choice, LogUniform
from mtlbench.sweep import SpecError, parse_spec
from mtlbench.tune import TuneSpec, describe_budget, plan_tuning, widen_round
from mtlbench.tune_widen import edge_sides

LR = LogUniform(0.1, 10.0, relative=True)
SPACE = {"protocol.lr": LR, "method.gamma": Choice(0.0, 0.01)}
DEFAULTS = {"protocol.lr": 1e-3, "method.gamma": 0.0}  # lr range [1e-4, 1e-2]


def _configs(*lrs: float) -> list[dict]:
    return [{"protocol.lr": lr, "method.gamma": 0.01} for lr in lrs]


@pytest.mark.parametrize(
    ("lrs", "index", "sides"),
    [
        ((2e-4, 5e-4, 4e-3), 2, {"protocol.lr": "high"}),  # the largest tried
        ((2e-4, 5e-4, 4e-3), 0, {"protocol.lr": "low"}),  # the smallest tried
        ((2e-4, 5e-4, 4e-3), 1, {}),  # inside: no second round
        ((2e-4, 7.5e-3, 9e-3), 1, {"protocol.lr": "high"}),  # top tenth: log 75 / log 100 > 0.9
        ((1.2e-4, 3e-4), 0, {"protocol.lr": "low"}),  # bottom tenth (and the smallest)
        ((5e-4,), 0, {}),  # one value tried, in the middle: no edge to speak of
    ],
)
def test_the_edge_rule(lrs, index, sides):
    """A log-uniform value is at an edge when it is the largest (smallest) of two or more tried,
    or in the outer tenth of its range; a choice (gamma, always its largest here) never is."""
    assert edge_sides(SPACE, _configs(*lrs), index, DEFAULTS) == sides


def test_the_bands_beyond_an_edge():
    assert LR.beyond("high", 10).grid(1e-3) == pytest.approx(
        [1e-2, 1.778e-2, 3.162e-2, 5.623e-2, 0.1]
    )
    assert LR.beyond("low", 10).grid(1e-3)[0] == pytest.approx(1e-5)
    assert LR.widened("high", 10) == LogUniform(0.1, 100.0, relative=True)
    assert LR.widened("low", 4) == LogUniform(0.025, 10.0, relative=True)
    assert LR.position(1e-2, 1e-3) == pytest.approx(1.0) and LR.position(1e-3, 1e-3) == 0.5


def _spec(results: Path, **tune) -> dict:
    """LS alone on _tiny for 2 steps (1 epoch of 32 samples): its lr is searched from 1e-3 to
    0.1 (a tenth to ten times 0.01), and two Adam steps that small barely move (validation Δm%
    286 at 0.1, 61 at 0.4, 614 at 0.7, measured), so the second round searches 0.1 to 1."""
    return {
        "name": "widen",
        "results": str(results),
        "seeds": [0, 1],
        "methods": ["ls"],
        "tune": {
            "budget": 3,
            "sampler": "stratified",
            "seeds": [10],
            "widen": {"factor": 10},
            **tune,
        },
        "benchmarks": {"_tiny": {"protocol": {"epochs": 1, "n": 32}}},
    }


@pytest.mark.parametrize(
    ("widen", "sampler", "message"),
    [
        ({"factor": 1}, "stratified", "widen: factor must be a number above 1, got 1"),
        ({"factor": "10"}, "random", "widen: factor must be a number above 1"),
        ({"factor": 10, "side": "high"}, "random", "widen: unknown key 'side'"),
        ({"factor": 10}, "grid", "widen needs sampler random or stratified"),
        (10, "random", "widen must be a mapping"),
    ],
)
def test_widen_block_errors(tmp_path, widen, sampler, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(_spec(tmp_path, widen=widen, sampler=sampler))


def test_a_selection_inside_the_range_gets_no_second_round():
    """The rule is decided once per plan, references alike; without an edge nothing is added
    and the final runs' ids carry the factor but no widened range."""
    tune = TuneSpec(budget=3, sampler="stratified", seeds=(10,), widen=10.0)
    plan = plan_tuning("_tiny", "stl", {}, tune, [0], task="a")
    lrs = [c["protocol.lr"] for c in plan.configs]
    middle = sorted(range(3), key=lrs.__getitem__)[1]
    assert widen_round(plan, middle) == [] and plan.widened == {}
    assert widen_round(plan, middle) == []  # decided once
    top = max(range(3), key=lrs.__getitem__)
    other = plan_tuning("_tiny", "stl", {}, tune, [0], task="a")
    added = widen_round(other, top)
    assert len(added) == 3 and other.rounds == [1, 1, 1, 2, 2, 2]
    assert {t.tuning["round"] for t in added} == {2} and {t.task for t in added} == {"a"}
    assert all(1e-1 <= t.protocol.lr <= 1.0 for t in added)  # _tiny's lr 1e-2: band 0.1 to 1


def _run(sweep) -> dict[str, str]:
    return SweepRun(sweep, LocalExecutor(workers=1, device="cpu")).run(
        progress=False, echo=lambda _: None
    )


def test_a_toy_sweep_widens_once_and_resumes_without_running_a_trial_twice(tmp_path):
    results = tmp_path / "results"
    sweep = parse_spec(_spec(results))
    assert "3 more if the selection is at an edge (widen x10)" in describe_budget(sweep.tuning)
    statuses = _run(sweep)
    assert set(statuses.values()) == {"done"} and len(statuses) == 3 + 3 + 2
    (plan,) = sweep.tuning
    assert plan.widened == {"protocol.lr": "high"} and plan.rounds == [1, 1, 1, 2, 2, 2]
    first = [c["protocol.lr"] for c in plan.configs[:3]]
    second = [c["protocol.lr"] for c in plan.configs[3:]]
    assert all(1e-3 <= lr <= 0.1 for lr in first) and all(0.1 <= lr <= 1.0 for lr in second)
    assert plan.selected >= 3  # the optimum lay outside the first range
    assert min(plan.scores[3:]) < min(plan.scores[:3])
    records = {r["trial_id"]: r for r in iter_records(results)}
    tuning = [r for r in records.values() if stage_of(r) == "tune"]
    rounds = sorted((r["config"].get("tuning") or {}).get("round", 1) for r in tuning)
    assert rounds == [1, 1, 1, 2, 2, 2]
    labels = trial_labels({tid: r["config"] for tid, r in records.items()})
    assert sum(label.endswith("round=2") for label in labels.values()) == 3
    for final in plan.final:
        tag = records[final.trial_id]["config"]["tuning"]
        assert tag["widen"] == {"factor": 10.0} and tag["widened"] == {"protocol.lr": "high"}
        assert tag["round"] == 2 and tag["selected"] == plan.configs[plan.selected]
    status = tuning_status(list(records.values()))
    assert status["ls"].endswith("on val_delta_m, 3 of them widening the range)")
    index = build_report(results, tmp_path / "report", ["md"]).read_text()
    assert "log-uniform [0.001, 1] (0.1 to 100 × 0.01) (widened x10 in a second round)" in index

    # killed in the second round: one of its trials left `running` by a dead process, and no
    # final run yet. Run again: that trial and the final runs, nothing else, the same choice.
    killed = read_record(record_path(results, plan.trials[4][0].trial_id))
    killed["status"] = "running"
    killed["runner"] = {"host": socket.gethostname(), "pid": 2**22 + 1}  # no such process
    write_record(results, killed)
    assert not os.path.exists(f"/proc/{2**22 + 1}")
    for final in plan.final:
        record_path(results, final.trial_id).unlink()
    again = parse_spec(_spec(results))
    rerun = _run(again)
    assert sorted(rerun) == sorted([killed["trial_id"], *(t.trial_id for t in plan.final)])
    (replayed,) = again.tuning
    assert replayed.selected == plan.selected and replayed.configs == plan.configs
    assert len(list(results.glob("*.json"))) == 8  # one record per trial
    assert _run(parse_spec(_spec(results))) == {}  # nothing left
