"""The report's notes from mtlbench.notes, and tuning trials counted, not tabled (issue 14)."""

from __future__ import annotations

from pathlib import Path

from report_records import record, write_all

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
