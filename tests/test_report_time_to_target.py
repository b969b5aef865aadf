"""Time to LS's quality (issue 21, item 6): AlgoPerf's time-to-target with LS as the target,
on hand-made curves whose every number is worked out below."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from report_records import record, write_all

from mtlbench.report import build_report
from mtlbench.report.base import Col
from mtlbench.report.time_to_target import time_to_target, val_delta_m

COLS = [Col("mse_a", "a", False), Col("mse_b", "b", False)]
REF = {"mse_a": 0.5, "mse_b": 0.5}  # Δm% = 100 ((a - 0.5) / 0.5 + (b - 0.5) / 0.5) / 2


def run(method: str, seed: int, a_curve: list[float], train_s: float = 40.0) -> dict:
    """A done 4-epoch run of 400 steps whose validation mse_a follows ``a_curve`` (mse_b stays
    at 0.5): its validation Δm% is 100 (a - 0.5)."""
    out = record("_tiny", method, seed, {"mse_a": min(a_curve), "mse_b": 0.5})
    out["config"]["protocol"]["epochs"] = 4
    out["curves"] = {
        "epoch": [0, 1, 2, 3],
        "val": {"mse_a": a_curve, "mse_b": [0.5] * 4},
    }
    out["timing"].update(steps=400, train_s=train_s)
    return out


def test_val_delta_m_of_each_evaluation():
    curve = val_delta_m(
        {"epoch": [0, 1], "val": {"mse_a": [0.6, 0.4], "mse_b": [0.5, 0.5]}}, COLS, REF
    )
    assert curve == pytest.approx([10.0, -10.0])
    assert math.isnan(val_delta_m({"epoch": [0], "val": {"mse_a": [0.6]}}, COLS, REF)[0])


def test_steps_and_time_to_the_median_ls_seed_relative_to_ls():
    """LS's best validation Δm%: -10, -20, -30 (seeds 0-2): the target is the median, -20.
    LS seed 1 reaches -20 at epoch 2 (of 4: 300 steps, 30 s), seed 2 at epoch 1 (200 steps,
    20 s), seed 0 never: LS's medians 250 steps, 25 s. FAST reaches it at epoch 0 (100 steps;
    train_s 80 s, so 20 s): 0.4 x LS's steps, 0.8 x its time. NEVER stays at 0."""
    runs = [
        run("ls", 0, [0.5, 0.45, 0.4, 0.4]),
        run("ls", 1, [0.5, 0.4, 0.3, 0.35]),
        run("ls", 2, [0.4, 0.3, 0.2, 0.2]),
        run("fast", 0, [0.25, 0.2, 0.2, 0.2], train_s=80.0),
        run("never", 0, [0.5, 0.5, 0.5, 0.5]),
    ]
    labels = {r["trial_id"]: r["config"]["method"] for r in runs}
    table = time_to_target(runs, labels, COLS, REF, "ls", "_tiny").set_index("method")
    assert table.loc["ls", "target"] == pytest.approx(-20.0)
    assert (table.loc["ls", "reached"], table.loc["ls", "runs"]) == (2, 3)
    assert table.loc["ls", ["steps_x_ls", "time_x_ls"]].tolist() == pytest.approx([1.0, 1.0])
    assert table.loc["fast", ["steps_x_ls", "time_x_ls"]].tolist() == pytest.approx([0.4, 0.8])
    assert table.loc["never", "reached"] == 0 and math.isnan(table.loc["never", "steps_x_ls"])
    assert time_to_target(runs, labels, COLS, None, "ls", "_tiny").empty  # no reference


def test_the_report_shows_never_for_a_method_that_never_gets_there(tmp_path: Path):
    runs = [run("ls", s, [0.5, 0.4, 0.3, 0.3]) for s in (0, 1)]
    runs += [run("famo", s, [0.5, 0.5, 0.5, 0.5]) for s in (0, 1)]
    index = build_report(write_all(tmp_path / "r", runs), tmp_path / "out", ["md"]).read_text()
    assert "### Time to LS's quality" in index
    line = next(x for x in index.splitlines() if x.startswith("| _tiny") and "famo" in x)
    assert "0/2" in line and line.count("never") == 2
