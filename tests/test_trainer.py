"""The trainer's parts: pure epoch selection, resume bookkeeping, divergence by domain."""

from __future__ import annotations

from pathlib import Path

import pytest

import tiny_benchmark  # noqa: F401  (registers the "_tiny" benchmark)
from mtlbench.records import read_record
from mtlbench.selection import select_epoch
from mtlbench.trainer import run_trial
from mtlbench.trial import TrialConfig, resolve

CURVES = {
    "val_score": [3.0, 1.0, 2.0],
    "val": {"m": [0.3, 0.1, 0.2]},
    "test": {"m": [30.0, 10.0, 20.0]},
}


def test_best_val_picks_the_lowest_validation_score_and_never_the_test_set():
    chosen = select_epoch(CURVES, "best_val_delta_m", has_reference=True)
    assert chosen.index == 1 and chosen.test == {"m": 10.0} and chosen.val == {"m": 0.1}
    assert "against the reference" in chosen.description
    no_ref = select_epoch(CURVES, "best_val_delta_m", has_reference=False)
    assert "no reference" in no_ref.description


def test_last_and_the_published_last10_rule():
    assert select_epoch(CURVES, "last", has_reference=True).index == 2
    mean = select_epoch(CURVES, "last10_test_mean", has_reference=True)
    assert mean.test == {"m": 20.0}  # (30 + 10 + 20) / 3: fewer than 10 evaluations
    assert "reads test" in mean.description


def test_selection_without_evaluations_or_with_an_unknown_rule_fails_clearly():
    with pytest.raises(RuntimeError, match="no evaluation"):
        select_epoch({"val_score": [], "val": {}, "test": {}}, "last", has_reference=False)
    with pytest.raises(ValueError, match="best_val_delta_m, last, last10_test_mean"):
        select_epoch(CURVES, "best", has_reference=True)


def test_a_resumed_record_keeps_its_first_start_and_lists_the_resume(tmp_path: Path):
    resolved = resolve(TrialConfig("_tiny", "ls", 0, {"epochs": 3}))

    class Killed(BaseException):
        pass

    def kill_after_epoch_0(epoch: int) -> None:
        if epoch == 0:
            raise Killed

    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(Killed):
        run_trial(resolved, tmp_path, device="cpu", checkpoint=ckpt, on_epoch=kill_after_epoch_0)
    first = read_record(tmp_path / f"{resolved.trial_id}.json")
    assert first["status"] == "running" and first["resumes"] == []
    resumed = run_trial(resolved, tmp_path, device="cpu", checkpoint=ckpt)
    assert resumed["status"] == "done"
    assert resumed["started_at"] == first["started_at"]
    assert [r["epoch"] for r in resumed["resumes"]] == [1]


def test_a_toy_run_that_leaves_the_domain_is_recorded_diverged(tmp_path: Path):
    resolved = resolve(TrialConfig("toy", "ls", 0, {"epochs": 3, "lr": 1e6}))
    record = run_trial(resolved, tmp_path, device="cpu")
    assert record["status"] == "diverged"
    assert "left the toy's domain" in record["diverged"]["reason"]
    assert record["diverged"]["epoch"] == 0


def test_records_carry_the_metric_directions(tmp_path: Path):
    record = run_trial(
        resolve(TrialConfig("_tiny", "ls", 0, {"epochs": 1})), tmp_path, device="cpu"
    )
    assert record["metric_info"] == [
        {"name": "mse_a", "task": "a", "higher_is_better": False, "unit": ""},
        {"name": "mse_b", "task": "b", "higher_is_better": False, "unit": ""},
    ]
