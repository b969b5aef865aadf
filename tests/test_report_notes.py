"""The report's notes from mtlbench.notes, and tuning trials counted, not tabled (issue 14)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from report_records import record, write_all

from mtlbench import notes
from mtlbench.report import build_report
from mtlbench.report.load import read_results


def _records() -> list:
    out = []
    for seed in (0, 1):
        out.append(record("_tiny", "ls", seed, {"mse_a": 0.5, "mse_b": 0.5}))
        final = record("_tiny", "famo", seed, {"mse_a": 0.4, "mse_b": 0.5})
        final["config"]["stage"] = "final"
        final["config"]["tuning"] = {"sampler": "grid", "budget": 2, "seeds": [9], "metric": "m"}
        out.append(final)
    for i, gamma in enumerate((0.0, 0.01)):  # two tuning trials of famo: worse, not tabled
        tune = record("_tiny", "famo", 9, {"mse_a": 5.0, "mse_b": 5.0}, hparams={"gamma": gamma})
        tune["trial_id"] += f"-tune{i}"
        tune["config"]["stage"] = "tune"
        out.append(tune)
    return out


def test_tuning_trials_are_counted_not_tabled(tmp_path: Path):
    folder = write_all(tmp_path / "results", _records())
    results = read_results(folder)
    assert results.tuning_runs == 2
    assert "tune" not in set(results.frame["stage"].dropna())
    index = build_report(folder, tmp_path / "report", ["md"]).read_text()
    assert "famo [gamma" not in index  # no tuning configuration as a variant
    assert "Tuned on validation data: famo 2 tuning trials (grid, budget 2 x 1 seed(s)" in index
    assert "Run at untuned defaults: ls." in index
    assert "Protocol: " in index


def _epochs_record(method: str, seed: int, best: int, epochs: int = 10, **cfg) -> dict:
    """A done run of ``epochs`` epochs whose best validation score is at epoch ``best``."""
    out = record("_tiny", method, seed, {"mse_a": 0.5, "mse_b": 0.5})
    out["config"]["protocol"]["epochs"] = epochs
    out["config"].update(cfg)
    out["curves"]["epoch"] = list(range(epochs))
    out["curves"]["val_score"] = [0.0 if e == best else 1.0 for e in range(epochs)]
    out["selection"].pop("selected_at_end", None)  # derived from the curves, as for old records
    return out


def test_convergence_note_flags_a_table_whose_runs_were_still_improving():
    """Of 10 epochs, a best epoch of 8 or 9 is "at the end" (epoch + 1 > 0.8 * 10)."""
    converged = [_epochs_record("ls", s, best=5) for s in range(4)] + [
        _epochs_record("famo", 0, best=9)
    ]
    assert notes.convergence_note(converged) == (
        "Converged: 1 of 5 runs (20%) had their best validation epoch in the last 20% of "
        "training (ls 0/4, famo 1/1)."
    )
    late = converged + [_epochs_record("famo", 1, best=8)]
    text = notes.convergence_note(late)
    assert text.startswith("**Not converged**: 2 of 6 runs (33%)") and "famo 2/2" in text
    tuning = _epochs_record("famo", 9, best=9, stage="tune")  # tuning trials are not counted
    assert notes.convergence_note([*converged, tuning]) == notes.convergence_note(converged)
    stl = _epochs_record("stl", 0, best=9, mode="stl", task="a")
    assert "stl 1/1" in notes.convergence_note([*converged, stl])
    assert notes.convergence_note([]) == ""


def test_the_report_carries_the_convergence_note(tmp_path: Path):
    runs = [_epochs_record("ls", s, best=9) for s in range(2)]
    index = build_report(write_all(tmp_path / "r", runs), tmp_path / "out", ["md"]).read_text()
    assert "**Not converged**: 2 of 2 runs (100%)" in index


def test_timing_note_says_how_many_runs_shared_the_machine():
    """Three runs on one host: 00-10 and 05-15 overlap, 15-20 starts when the second ends (no
    overlap): at most 2 at a time. Tuning trials count (they shared the machine too)."""

    def timed(seed: int, start: str, end: str, **cfg) -> dict:
        out = record("_tiny", "ls", seed, {"mse_a": 0.5, "mse_b": 0.5})
        out["config"].update(cfg)
        out["started_at"], out["finished_at"] = (
            f"2026-01-01T00:{start}:00",
            f"2026-01-01T00:{end}:00",
        )
        out["environment"]["threads"] = 1
        return out

    runs = [timed(0, "00", "10"), timed(1, "05", "15", stage="tune"), timed(2, "15", "20")]
    assert notes.timing_note(runs) == (
        "Timing: measured in the sweep's own runs, up to 2 at a time on host test (1 torch "
        "thread(s) each). Runs that shared a machine's cores time each other's contention too; "
        "`mtlbench bench` measures per-step costs alone (docs/performance.md)."
    )
    assert notes.timing_note([]) == ""


def test_reference_spread_by_the_delta_method_and_the_untuned_reference_flag():
    """b = (0.5, 0.5) from 4 seeds each with sd (0.1, 0): at v = (0.4, 0.5), two lower-is-better
    metrics, dΔm/db_a = -100 v_a / (2 b_a^2) = -80, so the s.e. is 80 * 0.1 / sqrt(4) = 4."""
    import pandas as pd

    from mtlbench.report.base import Col, RefInfo
    from mtlbench.report.reference import reference_spread, untuned_reference

    cols = [Col("mse_a", "a", False), Col("mse_b", "b", False)]
    ref = RefInfo(
        "stl", {"mse_a": 0.5, "mse_b": 0.5}, "s", {"mse_a": 0.1, "mse_b": 0.0}, {"a": 4, "b": 4}
    )
    assert reference_spread(ref, cols, {"mse_a": 0.4, "mse_b": 0.5}) == pytest.approx(4.0)
    single = RefInfo("stl", ref.values, "s", ref.std, {"a": 1, "b": 1})
    assert math.isnan(reference_spread(single, cols, {"mse_a": 0.4, "mse_b": 0.5}))
    rows = pd.DataFrame({"mode": ["stl", "mtl"], "tuning": [None, '{"budget": 2}']})
    assert untuned_reference(rows)
    assert not untuned_reference(rows.assign(tuning=['{"budget": 2}', '{"budget": 2}']))
    assert not untuned_reference(rows.assign(tuning=[None, None]))


def test_reference_caveat_gives_the_range_of_spreads_or_one_value_when_they_agree():
    """The caveat beside the reference: s.e. 4.0 at v = (0.4, 0.5) (the test above) and 5.0 at
    v = (0.5, 0.5) (dΔm/db_a = -100, 100 * 0.1 / 2 = 5) read ±4-5; one method alone reads ±4."""
    import pandas as pd

    from mtlbench.report.base import Board, Col, RefInfo
    from mtlbench.report.reference import reference_caveats

    cols = [Col("mse_a", "a", False), Col("mse_b", "b", False)]
    ref = RefInfo(
        "stl", {"mse_a": 0.5, "mse_b": 0.5}, "s", {"mse_a": 0.1, "mse_b": 0.0}, {"a": 4, "b": 4}
    )
    table = pd.DataFrame(
        {"role": ["reference", "method", "method"], "mse_a": [0.5, 0.4, 0.5], "mse_b": 0.5}
    )
    rows = pd.DataFrame({"mode": ["stl"], "tuning": [None]})
    empty = pd.DataFrame()

    def caveat(t: pd.DataFrame) -> str:
        return reference_caveats(Board("b", t, empty, cols, ref, empty), rows)

    assert "moves every method's Δm% alike by ±4-5 points (one standard error" in caveat(table)
    assert "alike by ±4 points (one standard error" in caveat(table.iloc[:2])


def test_the_reference_line_names_each_tasks_runs_and_tuned_configuration():
    """Issue 21, item 1: the report names the reference's selected configuration; a reference
    of 20 seeds per task is summarised (seeds 0-19) instead of 20 trial ids."""
    import json

    import pandas as pd

    from mtlbench.report.reference import stl_runs

    tag = {"budget": 6, "sampler": "stratified", "metric": "val_delta_m", "seeds": [100]}
    rows = pd.DataFrame(
        [
            {
                "trial_id": f"b-stl-a-s{s}",
                "mode": "stl",
                "task": "a",
                "seed": s,
                "tuning": json.dumps({**tag, "selected": {"protocol.lr": 0.0042}}),
            }
            for s in range(20)
        ]
        + [
            {"trial_id": f"b-stl-b-s{s}", "mode": "stl", "task": "b", "seed": s, "tuning": None}
            for s in (0, 2)
        ]
        + [{"trial_id": "b-ls-s0", "mode": "mtl", "task": None, "seed": 0, "tuning": None}]
    )
    trials = {"a": [f"b-stl-a-s{s}" for s in range(20)], "b": ["b-stl-b-s0", "b-stl-b-s2"]}
    text = stl_runs(rows, trials)
    assert text.startswith("(tuned on validation data like the methods: budget 6 x 1 seed(s)")
    assert "a: 20 runs (seeds 0-19), tuned: lr 0.0042;" in text
    assert "b-stl-a-s7" not in text  # more than 3: summarised
    assert text.endswith("b: 2 runs (seeds 0, 2): b-stl-b-s0, b-stl-b-s2")
