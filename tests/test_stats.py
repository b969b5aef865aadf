"""mtlbench.stats on hand-checkable tables: every expected value is worked out in a comment."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from mtlbench import stats


def frame(cells: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    """Long frame from {(benchmark, method): [score of seed 0, seed 1, ...]}."""
    rows = [
        {"benchmark": b, "method": m, "seed": s, "delta_m": v}
        for (b, m), values in cells.items()
        for s, v in enumerate(values)
    ]
    return pd.DataFrame(rows)


# ---- per cell ------------------------------------------------------------------------------


def test_interval_of_constant_scores_is_a_point():
    # [2.5, 2.5, 2.5]: std 0, so the t interval has zero width.
    out = stats.cell_summary(frame({("a", "ls"): [2.5, 2.5, 2.5]}))
    row = out.loc[("a", "ls")]
    assert (row["n"], row["mean"], row["std"]) == (3, 2.5, 0.0)
    assert row["ci_low"] == row["ci_high"] == 2.5


def test_cell_summary_mean_std_and_ci_bounds():
    # mean of [1, 2, 6] = 3, sample std = sqrt(((-2)^2 + 1 + 3^2) / 2) = sqrt(7); the 95% t
    # interval is 3 -+ t_{0.975, 2} sqrt(7) / sqrt(3), with t_{0.975, 2} = 4.302653 (tables).
    out = stats.cell_summary(frame({("a", "ls"): [1.0, 2.0, 6.0]})).iloc[0]
    assert out["mean"] == 3.0 and out["std"] == pytest.approx(math.sqrt(7))
    half = 4.302653 * math.sqrt(7 / 3)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((3 - half, 3 + half), abs=1e-5)


def test_t_interval_holds_its_coverage_at_three_seeds():
    """Normal scores, n = 3: the 95% t interval covers the true mean in 95% of 4,000 draws
    (binomial sd 0.34%); the seeds' range, which the percentile bootstrap of 3 seeds gives,
    covers it with probability 1 - 2 / 2**2 = 75%."""
    rng = np.random.default_rng(0)
    draws = rng.normal(0.0, 1.0, size=(4000, 3))
    covered = [low <= 0.0 <= high for low, high in map(stats.t_interval, draws)]
    in_range = (draws.min(axis=1) <= 0) & (draws.max(axis=1) >= 0)
    assert abs(np.mean(covered) - 0.95) < 0.015
    assert abs(in_range.mean() - 0.75) < 0.025


def test_single_seed_has_no_interval_and_no_benchmark_column_is_one_benchmark():
    data = frame({("a", "ls"): [4.0]}).drop(columns="benchmark")
    row = stats.cell_summary(data).loc[(stats.SINGLE, "ls")]
    assert row["mean"] == 4.0 and math.isnan(row["std"]) and math.isnan(row["ci_low"])


def test_missing_columns_are_named():
    with pytest.raises(KeyError, match="seed"):
        stats.cell_summary(pd.DataFrame({"method": ["ls"], "delta_m": [1.0]}))


# ---- probability of improvement --------------------------------------------------------------


def test_probability_of_improvement_on_separated_and_identical_samples():
    data = frame(
        {
            ("a", "ls"): [10.0, 11.0, 12.0],
            ("a", "good"): [1.0, 2.0, 3.0],  # every run below every LS run: P = 1
            ("a", "bad"): [20.0, 21.0, 22.0],  # every run above: P = 0
            ("a", "same"): [10.0, 11.0, 12.0],  # 3 ties (1/2 each) + 3 of 6 others: P = 1/2
        }
    )
    out = stats.probability_of_improvement(data, "ls", reps=300)
    assert out.loc["good", "p_improvement"] == 1.0
    assert out.loc["good", "ci_low"] == out.loc["good", "ci_high"] == 1.0
    assert out.loc["bad", "p_improvement"] == 0.0
    assert out.loc["same", "p_improvement"] == 0.5
    assert "ls" not in out.index


def test_probability_of_improvement_averages_over_benchmarks():
    # a: x = [1, 3], y = [2, 4]: pairs (1<2, 1<4, 3>2, 3<4) give 3/4; b: x = y = [5]: 1/2.
    # rliable averages over tasks: (3/4 + 1/2) / 2 = 5/8.
    data = frame(
        {("a", "x"): [1.0, 3.0], ("a", "ls"): [2.0, 4.0], ("b", "x"): [5.0], ("b", "ls"): [5.0]}
    )
    out = stats.probability_of_improvement(data, "ls").loc["x"]
    assert out["p_improvement"] == pytest.approx(5 / 8) and out["benchmarks"] == 2
    assert math.isnan(out["ci_low"])  # one seed on b: nothing to resample


def test_counted_u_equals_scipy_mann_whitney_bit_for_bit():
    # The bootstrap's statistic counts U from histograms instead of ranking every resample:
    # on samples full of ties, one row or a batch of resamples, it must be scipy's U exactly.
    rng = np.random.default_rng(3)
    for _ in range(50):
        pool = rng.normal(size=int(rng.integers(1, 12))) * 10.0 ** rng.integers(-3, 4)
        nx, ny, rows = (int(v) for v in rng.integers(1, 25, 3))
        x, y = rng.choice(pool, (rows, nx)), rng.choice(pool, (rows, ny))
        scipy_u = st.mannwhitneyu(y, x, axis=-1).statistic / (nx * ny)
        codes = [stats._pair_codes(a, b) for a, b in zip(x, y, strict=True)]
        counted = [stats._p_less(cx, cy, k) for cx, cy, k in codes]
        np.testing.assert_array_equal(counted, scipy_u)
        cx, cy, k = stats._pair_codes(x.ravel(), y.ravel())
        batch = stats._p_less(cx.reshape(rows, nx), cy.reshape(rows, ny), k)
        expected = st.mannwhitneyu(y, x, axis=-1).statistic / (nx * ny)
        np.testing.assert_array_equal(batch, expected)


# ---- paired tests and Holm --------------------------------------------------------------------


def test_holm_on_known_p_values():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01 = 0.03, 2 * 0.03 = 0.06, max(1 * 0.04, 0.06) = 0.06.
    out = stats.holm([0.01, 0.04, 0.03, math.nan])
    np.testing.assert_allclose(out[:3], [0.03, 0.06, 0.06])
    assert math.isnan(out[3])


def test_paired_t_test_value():
    # differences 1, 2, 3: t = 2 / (1 / sqrt 3) = sqrt 12 on 2 degrees of freedom, whose
    # two-sided p is 1 - t / sqrt(t^2 + 2) = 1 - sqrt(12 / 14).
    test, p = stats.paired_test(np.array([2.0, 4.0, 6.0]), np.array([1.0, 2.0, 3.0]))
    assert test == "paired-t" and p == pytest.approx(1 - math.sqrt(12 / 14))


def test_wilcoxon_only_where_it_can_reach_the_threshold_and_identical_samples():
    # six differences of one sign: exact two-sided p = 2 / 2^6 = 0.031 < 0.05, so at the
    # level 0.05 the rank test is used; at Holm's first level for 9 comparisons, 0.05 / 9, it
    # could never pass (0.031 > 0.0056), so the paired t is used instead.
    x = np.arange(6.0)
    test, p = stats.paired_test(x + np.arange(1.0, 7.0), x)
    assert test == "wilcoxon" and p == pytest.approx(2 / 64)
    assert stats.paired_test(x + np.arange(1.0, 7.0), x, 0.05 / 9)[0] == "paired-t"
    nine = np.arange(9.0)  # 2 / 2^9 = 0.0039 < 0.0056: the rank test again
    assert stats.paired_test(nine + np.arange(1.0, 10.0), nine, 0.05 / 9)[0] == "wilcoxon"
    assert stats.smallest_p("wilcoxon", 8) == 2 / 256 and stats.smallest_p("paired-t", 3) == 0
    assert stats.paired_test(x, x) == ("identical", 1.0)
    assert math.isnan(stats.paired_test(x[:1], x[:1] + 1)[1])


def test_detectable_difference_against_the_normal_approximation_and_by_simulation():
    """Two-sided paired t at level 0.05, power 0.8: for large n the detectable difference
    tends to (z_0.975 + z_0.8) sd / sqrt(n) = 2.8016 sd / sqrt(n) (Cohen 1988, Table 2.4.1);
    at n = 3 and level 0.05 / 9, simulated t-tests at that difference reject 80% of the time."""
    assert stats.detectable_difference(1.0, 2000, 0.05) == pytest.approx(
        (1.959964 + 0.841621) / math.sqrt(2000), rel=2e-3
    )
    assert stats.detectable_difference(0.0, 3, 0.05) == 0.0
    assert math.isnan(stats.detectable_difference(1.0, 1, 0.05))
    d = stats.detectable_difference(1.9, 3, 0.05 / 9)
    rng = np.random.default_rng(1)
    diffs = rng.normal(d, 1.9, size=(20000, 3))
    t = diffs.mean(axis=1) / (diffs.std(axis=1, ddof=1) / math.sqrt(3))
    p = 2 * st.t.sf(np.abs(t), 2)
    assert abs(np.mean(p < 0.05 / 9) - 0.8) < 0.015
    n = stats.seeds_to_detect(2.0, 1.9, 0.05 / 9)
    assert stats.detectable_difference(1.9, n, 0.05 / 9) <= 2.0
    assert stats.detectable_difference(1.9, n - 1, 0.05 / 9) > 2.0


def test_minimal_detectable_difference_per_benchmark():
    """Two methods against LS on 3 seeds with paired differences of sd 1 and 3: the pooled
    spread is sqrt((1 + 9) / 2) = sqrt(5); the level is 0.05 / 2 (Holm's first)."""
    ls = [10.0, 12.0, 11.0]
    data = frame(
        {
            ("a", "ls"): ls,
            ("a", "x"): [v + d for v, d in zip(ls, [-1.0, 0.0, 1.0], strict=True)],
            ("a", "y"): [v + d for v, d in zip(ls, [-3.0, 0.0, 3.0], strict=True)],
        }
    )
    out = stats.minimal_detectable_difference(data, "ls").loc["a"]
    assert (out["n"], out["family"], out["level"]) == (3, 2, 0.025)
    assert out["spread"] == pytest.approx(math.sqrt(5))
    assert out["mdd"] == pytest.approx(stats.detectable_difference(math.sqrt(5), 3, 0.025))
    assert out["seeds_for_2"] == stats.seeds_to_detect(2.0, math.sqrt(5), 0.025)


def test_leaderboard_marks_ties_within_noise():
    ls = np.array([10.0, 12.0, 11.0, 13.0, 9.0])
    data = frame(
        {
            ("a", "ls"): list(ls),
            # 5 below LS, small paired noise: best, and better than LS
            ("a", "good"): list(ls - 5 + np.array([0.1, -0.2, 0.0, 0.2, -0.1])),
            # LS plus noise: neither better nor worse than LS
            ("a", "same"): list(ls + np.array([0.3, -0.4, 0.1, -0.2, 0.1])),
            # 5 below LS, noisier than good: within noise of the best
            ("a", "close"): list(ls - 5 + np.array([0.4, -0.5, 0.6, -0.3, 0.0])),
        }
    )
    board = stats.leaderboard(data, "ls")
    t = board.table.loc["a"]
    assert t.loc["good", "vs_best"] == "best" and t.loc["close", "vs_best"] == "tie"
    assert t.loc["same", "vs_best"] == "" and t.loc["ls", "vs_best"] == ""
    assert t.loc["good", "vs_baseline"] == "better" and t.loc["same", "vs_baseline"] == "tie"
    assert t.loc["ls", "vs_baseline"] == ""
    assert t.loc["good", "p_improvement"] == 1.0
    assert "Holm" in board.note and "paired-t" in board.note
    assert "better than ls: close, good" in board.sentence
    assert "tied for best: close, good" in board.sentence


# ---- across benchmarks --------------------------------------------------------------------------


def ordered_table(n_benchmarks: int = 4) -> pd.DataFrame:
    """A beats B beats C on every benchmark, two seeds each."""
    cells = {}
    for i in range(n_benchmarks):
        for j, m in enumerate("ABC"):
            cells[(f"b{i}", m)] = [10.0 * j + i, 10.0 * j + i + 1]
    return frame(cells)


def test_friedman_and_nemenyi_on_a_known_order():
    # N = 4 benchmarks, k = 3 methods, rank sums 4, 8, 12:
    # chi2 = 12 / (N k (k + 1)) * (4^2 + 8^2 + 12^2) - 3 N (k + 1) = 56 - 48 = 8, and the
    # chi-square survival with 2 degrees of freedom is exp(-8 / 2).
    res = stats.friedman_nemenyi(ordered_table())
    assert res.statistic == pytest.approx(8.0) and res.pvalue == pytest.approx(math.exp(-4))
    assert res.mean_ranks.to_dict() == {"A": 1.0, "B": 2.0, "C": 3.0}
    # Nemenyi's critical difference: q_0.05(3) sqrt(k (k + 1) / (6 N)) = 2.343 * sqrt(1/2)
    # = 1.66: A-C (2 ranks apart) differ, A-B and B-C (1 apart) do not.
    p = res.nemenyi
    assert p.loc["A", "C"] < 0.05 < p.loc["A", "B"] and p.loc["B", "C"] > 0.05
    assert np.allclose(p.to_numpy(), p.to_numpy().T)


def test_mean_ranks_with_ties_and_constant_order():
    # The order A < B < C never changes when seeds are resampled: degenerate CIs at 1, 2, 3.
    out = stats.mean_ranks(ordered_table(), reps=200)
    assert out["mean_rank"].to_dict() == {"A": 1.0, "B": 2.0, "C": 3.0}
    assert (out["ci_low"] == out["mean_rank"]).all() and (out["ci_high"] == out["mean_rank"]).all()
    # B and C equal on every seed: they share rank (2 + 3) / 2; resampled independently, each
    # lands anywhere in [2, 3], while A stays first.
    data = ordered_table()
    is_c, is_b = data["method"] == "C", data["method"] == "B"
    data.loc[is_c, "delta_m"] = data.loc[is_b, "delta_m"].to_numpy()
    out = stats.mean_ranks(data, reps=200)
    assert out["mean_rank"].to_dict() == {"A": 1.0, "B": 2.5, "C": 2.5}
    assert out.loc["A", "ci_low"] == out.loc["A", "ci_high"] == 1.0
    assert (out.loc[["B", "C"], "ci_low"] >= 2).all() and (
        out.loc[["B", "C"], "ci_high"] <= 3
    ).all()


def test_ranks_need_every_cell():
    data = ordered_table()
    data = data[~((data["benchmark"] == "b1") & (data["method"] == "C"))]
    with pytest.raises(ValueError, match="C on b1"):
        stats.friedman_nemenyi(data)


def test_performance_profile_hand_values():
    # a: [0, 10], b: [5, 5]. tau = 0: (1/2 + 0) / 2; tau = 5: (1/2 + 1) / 2; tau = 10: 1.
    data = frame({("a", "x"): [0.0, 10.0], ("b", "x"): [5.0, 5.0]})
    out = stats.performance_profile(data, [-1.0, 0.0, 5.0, 10.0])
    np.testing.assert_allclose(out["x"], [0.0, 0.25, 0.75, 1.0])


# ---- figures ----------------------------------------------------------------------------------


def test_figures_draw_on_given_axes_or_their_own():
    plt = pytest.importorskip("matplotlib.pyplot")
    data = ordered_table()
    fig, axes = plt.subplots(1, 2)
    try:
        assert stats.plot_critical_difference(stats.friedman_nemenyi(data), axes[0]) is fig
        profile = stats.performance_profile(data, np.linspace(0, 30, 7))
        assert stats.plot_performance_profile(profile, axes[1]) is fig
        own = stats.plot_intervals(stats.mean_ranks(data, reps=100), label="rank")
        assert own is not fig and len(own.axes) == 1
        plt.close(own)
    finally:
        plt.close(fig)


def test_worked_example_in_the_docs_is_what_the_code_prints():
    # docs/reports.md, section "Statistics": its code block runs, and the sentence it quotes
    # is the one the code writes.
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "reports.md").read_text()
    section = text[text.index("## Statistics") :]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[-1]
    names: dict = {"print": lambda *args, **kwargs: None}
    exec(compile(code, "reports.md", "exec"), names)
    quoted = " ".join(section.split())
    assert names["board"].sentence.rstrip(".") in quoted.replace("*", "")
    assert names["cd"].statistic == pytest.approx(8.2)


def test_leaderboard_without_the_baseline_on_a_benchmark_says_so():
    data = frame({("a", "ls"): [1.0, 2.0], ("a", "x"): [0.0, 1.5], ("b", "x"): [3.0, 4.0]})
    board = stats.leaderboard(data, "ls")
    assert board.table.loc[("b", "x"), "vs_baseline"] == ""
    assert math.isnan(board.table.loc[("b", "x"), "p_improvement"])
    assert "b: ls not run; tied for best: x" in board.sentence
