"""The report's uncertainty (issue 14, item 3): per benchmark a bootstrap CI of Δm%, P(improvement)
over LS and Holm-corrected significance marks against the best and against LS, in the CSV and
the tables, with the note and the sentence; across benchmarks mean ranks with CIs, the CD
diagram and the performance profile; none of it for the toy, and a line instead of numbers
without a reference or with a single seed.

Records are built as the trainer builds them (tests/report_records.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from report_records import info, record, toy_records, write_all
from test_report import csv_row, table_line
from test_report_output import check_image

from mtlbench import stats
from mtlbench.report import build_report
from mtlbench.report.significance import COLUMNS

# _tiny: mse_a, mse_b lower-is-better, published reference 0.5 each, so that
# Δm% = 100/2 ((a - 0.5) / 0.5 + (b - 0.5) / 0.5) = 100 (a + b - 1)
LS_A = [0.4, 0.5, 0.6]
RUNS = {
    "ls": LS_A,
    "good": [a - 0.1 - 0.01 * (s == 1) for s, a in enumerate(LS_A)],  # better on every seed
    "same": LS_A,  # identical to LS
}


def tiny_dm(a: float) -> float:
    return 100.0 * (a + 0.5 - 1.0)


def tiny_records(runs: dict[str, list[float]] = RUNS, bench: str = "_tiny") -> list:
    return [
        record(bench, m, s, {"mse_a": a, "mse_b": 0.5})
        for m, values in runs.items()
        for s, a in enumerate(values)
    ]


@pytest.fixture
def tiny_report(tmp_path: Path) -> Path:
    out = tmp_path / "report"
    build_report(write_all(tmp_path / "results", tiny_records()), out, ["md", "csv", "tex"])
    return out


def test_csv_columns_and_marks_on_a_constructed_case(tiny_report: Path):
    board = pd.read_csv(tiny_report / "tables" / "leaderboard__tiny.csv")
    assert list(board.columns[-len(COLUMNS) :]) == COLUMNS
    good, same, ls = (csv_row(board, m) for m in ("good", "same", "ls"))
    assert (good["vs_best"], good["vs_ls"]) == ("best", "better")
    assert (same["vs_best"], same["vs_ls"]) == ("worse", "tie")
    assert same["p_vs_ls"] == 1.0 and same["p_improvement"] == 0.5
    # Δm% good -20, -11, 0 against LS -10, 0, 10: 3 + 3 + 1 pairs lower, one tie (0 = 0)
    assert good["p_improvement"] == pytest.approx(7.5 / 9)
    assert pd.isna(ls["vs_ls"]) and pd.isna(ls["p_improvement"])  # LS is the baseline
    frame = pd.DataFrame(
        [
            {"method": m, "seed": s, "delta_m": tiny_dm(a)}
            for m, values in RUNS.items()
            for s, a in enumerate(values)
        ]
    )
    summary = stats.cell_summary(frame).droplevel("benchmark")
    for method in RUNS:
        row = csv_row(board, method)
        assert row["delta_m_ci_low"] == pytest.approx(summary.at[method, "ci_low"])
        assert row["delta_m_ci_high"] == pytest.approx(summary.at[method, "ci_high"])
    reference = csv_row(board, "STL (published)")
    assert reference[COLUMNS].isna().all()


def test_tables_show_the_marks_the_note_and_the_sentence(tiny_report: Path):
    md = (tiny_report / "index.md").read_text()
    assert "| 95% CI" in md and "| vs best" in md and "| vs LS" in md
    good = [c.strip() for c in table_line(md, "good").strip("|").split("|")]
    same = [c.strip() for c in table_line(md, "same").strip("|").split("|")]
    assert good[-5:-3] == ["best", "better*"]
    assert same[-5:-3] == ["worse*", "≈"]  # a tie with LS within noise is shown as a tie
    assert "Holm-corrected per benchmark" in md and "paired-t" in md
    assert "better than ls: good; worse: same, ls" not in md
    assert "Significant at alpha = 0.05 (Holm): better than ls: good;" in md
    tex = (tiny_report / "tables" / "leaderboard__tiny.tex").read_text()
    assert r"$\approx$" in tex and "better*" in tex


def test_the_sentence_states_the_smallest_detectable_difference(tiny_report: Path):
    """good - ls: Δm% differences -10, -11, -10 (sd 0.577); same - ls: 0, 0, 0 (sd 0). Pooled
    spread sqrt((1/3 + 0) / 2) = 0.408, two comparisons: paired t at level 0.05 / 2, n = 3."""
    md = " ".join((tiny_report / "index.md").read_text().split())
    spread = (1 / 6) ** 0.5
    mdd = stats.detectable_difference(spread, 3, 0.025)
    seeds = stats.seeds_to_detect(2.0, spread, 0.025)
    assert (
        f"Differences from ls below {mdd:.2g} Δm% points are undetectable here (paired t at "
        f"level 0.05 / 2, power 0.8, n = 3, spread {spread:.2g} of the paired differences; "
        f"2 points would take {seeds} seeds)." in md
    )


def test_single_seed_and_no_reference_say_so(tmp_path: Path):
    single = tiny_records({"ls": [0.4], "good": [0.3]})
    md = build_report(write_all(tmp_path / "a", single), tmp_path / "ra").read_text()
    assert "No confidence intervals or significance tests: a single seed per method." in md
    assert "| 95% CI" in md and "1 seed" in table_line(md, "good")
    mixed = tiny_records({"ls": LS_A, "good": [0.3], "same": LS_A})
    md = build_report(write_all(tmp_path / "b", mixed), tmp_path / "rb").read_text()
    assert "not tested (a single seed): good." in md
    assert "1 seed" in table_line(md, "good") and "[" in table_line(md, "same")
    no_ref = [
        record("noref", m, s, {"a_x": 0.1 * s}, metrics_info=info(a_x=False))
        for m in ("ls", "famo")
        for s in range(3)
    ]
    md = build_report(write_all(tmp_path / "c", no_ref), tmp_path / "rc").read_text()
    assert "No confidence intervals or significance tests: no Δm% (the benchmark has" in md
    assert "| 95% CI" not in md


def test_the_toy_has_no_significance_statistics(tmp_path: Path):
    out = tmp_path / "report"
    results = write_all(tmp_path / "results", toy_records())
    md = build_report(results, out, ["md", "csv"]).read_text()
    board = pd.read_csv(out / "tables" / "leaderboard_toy.csv")
    assert not set(COLUMNS) & set(board.columns)
    section = md.split("## Benchmark: toy")[1]
    assert "95% CI" not in section and "Significant at" not in section
    assert "no confidence intervals or significance tests" in section
    assert not (out / "figures" / "critical_difference.png").exists()


def other_records(runs: dict[str, list[float]]) -> list:
    """An unregistered benchmark (one metric, higher is better) with its STL reference 0.8."""
    declared = info(b_acc=True)
    recs = [
        record("other", "stl", s, {"b_acc": 0.8}, task="b", metrics_info=declared)
        for s in (0, 1, 2)
    ]
    recs += [
        record("other", m, s, {"b_acc": v}, metrics_info=declared)
        for m, values in runs.items()
        for s, v in enumerate(values)
    ]
    return recs


def test_across_benchmarks_ranks_cd_diagram_and_profile(tmp_path: Path):
    results = tmp_path / "results"
    write_all(results / "tiny", tiny_records({**RUNS, "solo": [0.2, 0.25, 0.3]}))
    write_all(
        results / "other",
        other_records(
            {"ls": [0.7, 0.72, 0.74], "good": [0.78, 0.8, 0.82], "same": [0.6, 0.62, 0.64]}
        ),
    )
    out = tmp_path / "report"
    md = build_report(results, out, ["md", "html", "csv", "tex"]).read_text()
    assert "### Across benchmarks, with uncertainty" in md
    assert r"\toprule" in (out / "tables" / "mean_ranks.tex").read_text()
    assert "solo left out (no test runs on other)" in md
    ranks = pd.read_csv(out / "tables" / "mean_ranks.csv").set_index("method")
    # good is first on both benchmarks; same ties LS on _tiny (2.5) and is last on other (3)
    assert ranks.loc["good", "mean_rank"] == 1.0
    assert ranks.loc["ls", "mean_rank"] == pytest.approx((2.5 + 2) / 2)
    assert ranks.loc["same", "mean_rank"] == pytest.approx((2.5 + 3) / 2)
    assert ranks.loc["good", "ci_low"] <= 1.0 <= ranks.loc["good", "ci_high"]
    assert ranks.loc["good", "poi_p_improvement"] > 0.5
    for name in ("critical_difference.png", "performance_profile.png"):
        check_image(out / "figures" / name)
        assert f"](figures/{name})" in md
    assert "Friedman's χ²" in md and "could not be drawn" not in md


def test_across_needs_two_benchmarks_with_seeds(tiny_report: Path, tmp_path: Path):
    results = tmp_path / "two"
    write_all(results / "tiny", tiny_records())
    write_all(results / "toy", toy_records())
    md = build_report(results, tmp_path / "r2").read_text()
    assert "need two benchmarks with Δm% over seeds" in md
    assert "(here: _tiny)" in md
    assert not (tmp_path / "r2" / "figures" / "critical_difference.png").exists()


def test_methods_that_tie_everywhere_get_no_friedman_test(tmp_path: Path):
    results = tmp_path / "results"
    write_all(results / "tiny", tiny_records({m: LS_A for m in ("ls", "same", "third")}))
    acc = [0.7, 0.72, 0.74]
    write_all(results / "other", other_records({m: acc for m in ("ls", "same", "third")}))
    md = build_report(results, tmp_path / "report").read_text()
    assert "no Friedman test: the methods tie on every benchmark" in md
    assert "tied for best: ls, same, third" in md
    assert not (tmp_path / "report" / "figures" / "critical_difference.png").exists()
