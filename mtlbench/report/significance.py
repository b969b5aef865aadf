"""Uncertainty of the leaderboards (issue 14, item 3), through :mod:`mtlbench.stats`.

* **Per benchmark** (:func:`board_significance`): each variant's per-seed Δm% goes to
  :func:`mtlbench.stats.leaderboard`: a 95% t interval of the mean over seeds, rliable's
  P(improvement) over LS, and two-sided paired tests across seeds (the exact Wilcoxon test only
  where it can reach Holm's first threshold, else the paired t) against the best variant and
  against LS, Holm-corrected over the variants of the benchmark, and the smallest difference
  from LS those tests can detect (:func:`mtlbench.stats.minimal_detectable_difference`).
  Variants with a single seed are left out of the tests (nothing to resample, nothing to pair)
  and said so; a benchmark whose runs are replicates other than seeds (the toy's starting
  points) gets none of it.
* **Across benchmarks** (:func:`across_significance`): per method (the variant with most runs,
  as :func:`~mtlbench.report.leaderboard.cross_benchmark` picks it), the mean rank of its Δm%
  with a stratified-bootstrap CI (:func:`mtlbench.stats.mean_ranks`), P(improvement) over LS
  with its CI, Friedman + Nemenyi (Demšar, JMLR 2006) and the performance profile; only over the
  methods that ran on every such benchmark (Friedman's test needs complete blocks).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from mtlbench import stats
from mtlbench.report.base import Across, Significance
from mtlbench.report.variants import best_variant

BASELINE = "ls"
ALPHA = 0.05
#: The leaderboard CSV's new columns, after the existing ones.
COLUMNS = [
    "delta_m_ci_low",
    "delta_m_ci_high",
    "p_improvement",
    "p_vs_best",
    "p_vs_ls",
    "vs_best",
    "vs_ls",
]


def _per_seed(runs: pd.DataFrame) -> pd.DataFrame:
    """``method`` (the variant's label), ``seed``, ``delta_m`` of the runs with a finite Δm%."""
    frame = pd.DataFrame(
        {"method": runs["variant"].astype(str), "seed": runs["seed"], "delta_m": runs["_dm"]}
    )
    return frame[np.isfinite(frame["delta_m"].to_numpy(dtype=float))]


def board_significance(runs: pd.DataFrame, ls_label: str | None) -> Significance:
    """The statistics of one benchmark from its done runs (``variant``, ``seed``, ``_dm``, and
    ``start`` for replicates); ``ls_label``: LS's variant (None when LS has no done run)."""
    empty = pd.DataFrame(columns=COLUMNS)
    if len(runs) and "start" in runs and runs["start"].notna().any():
        return Significance(
            empty, reason="the runs are starting points, not seeds", replicates=True
        )
    if not len(runs):
        return Significance(empty, reason="no method has a done test run yet")
    frame = _per_seed(runs)
    if frame.empty:
        return Significance(empty, reason="no Δm% (the benchmark has no reference)")
    counts = frame.groupby("method")["seed"].nunique()
    single = sorted(counts.index[counts < 2])
    frame = frame[~frame["method"].isin(single)]
    if frame.empty:
        return Significance(empty, reason="a single seed per method", single=single)
    baseline = ls_label or BASELINE
    with warnings.catch_warnings():
        # near-constant paired differences (a method better by the same amount on every seed):
        # scipy warns of precision loss, and the t-test's p-value near 0 is the right answer
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        board = stats.leaderboard(frame, baseline=baseline, alpha=ALPHA)
    table = _columns(board.table.droplevel("benchmark"), baseline)
    sentence = stats.significance_sentence(_for_sentence(table), baseline, ALPHA)
    if ls_label is not None and ls_label in single:  # LS ran, with one seed: not "not run"
        sentence = sentence.replace(f"{baseline} not run", f"{baseline} has a single seed")
    if single:
        sentence = sentence[:-1] + f"; not tested (a single seed): {', '.join(single)}."
    return Significance(table, board.note, sentence + _detectable(board.detectable), single=single)


def _detectable(detectable: pd.DataFrame) -> str:
    """`` Differences from LS below X points are undetectable ...`` (empty without a spread),
    so that a tie reads as what it is: a difference this table cannot see."""
    if detectable.empty or not math.isfinite(float(detectable["mdd"].iloc[0])):
        return ""
    row = detectable.iloc[0]
    more = (
        f"; 2 points would take {int(row['seeds_for_2'])} seeds"
        if pd.notna(row["seeds_for_2"])
        else "; 2 points would take over 1,000 seeds"
    )
    return (
        f" Differences from {BASELINE} below {row['mdd']:.2g} Δm% points are undetectable here "
        f"(paired t at level {ALPHA} / {int(row['family'])}, power {stats.POWER}, "
        f"n = {int(row['n'])}, spread {row['spread']:.2g} of the paired differences{more})."
    )


def _columns(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """stats' table as the CSV's columns; a comparison without a p-value (fewer than two
    paired seeds) is left empty, not called a tie."""
    out = pd.DataFrame(index=table.index)
    out["delta_m_ci_low"] = table["ci_low"]
    out["delta_m_ci_high"] = table["ci_high"]
    out["p_improvement"] = table.get("p_improvement", math.nan)
    out["p_vs_best"] = table["p_holm_best"]
    out["p_vs_ls"] = table["p_holm_baseline"]
    best = table["vs_best"] == "best"
    tested = table["p_holm_best"].notna()
    out["vs_best"] = np.where(
        best, "best", np.where(~tested, "", table["vs_best"].replace("", "worse"))
    )
    out["vs_ls"] = np.where(table["p_holm_baseline"].notna(), table["vs_baseline"], "")
    out.loc[out.index == baseline, "vs_ls"] = ""
    return out


def _for_sentence(table: pd.DataFrame) -> pd.DataFrame:
    """The columns :func:`mtlbench.stats.significance_sentence` reads (untested: no mark)."""
    marks = table[["vs_best", "vs_ls"]].rename(columns={"vs_ls": "vs_baseline"})
    marks.index = pd.MultiIndex.from_product(
        [[stats.SINGLE], marks.index], names=["benchmark", "method"]
    )
    return marks


def _chosen_runs(bench: str, table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per base method the runs of its variant with most runs (as ``cross_benchmark``)."""
    methods = table[table["role"] == "method"]
    label = {str(b): str(best_variant(g)["method"]) for b, g in methods.groupby("base_method")}
    frame = _per_seed(runs)
    keep = {v: b for b, v in label.items()}
    frame = frame[frame["method"].isin(keep)]
    return frame.assign(benchmark=bench, method=frame["method"].map(keep))


def _friedman(frame: pd.DataFrame, notes: list[str]) -> stats.FriedmanResult | None:
    """Friedman + Nemenyi; None (with a note) where every method ties on every benchmark, for
    which Friedman's statistic is undefined (0 / 0)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
        result = stats.friedman_nemenyi(frame)
    if not math.isfinite(result.statistic):
        notes.append("no Friedman test: the methods tie on every benchmark")
        return None
    return result


def across_significance(
    boards: Mapping[str, tuple[pd.DataFrame, pd.DataFrame]],
) -> Across | None:
    """From the benchmarks that have per-seed Δm% (``boards``: benchmark -> (leaderboard table,
    done runs)); None with fewer than two such benchmarks or two common methods."""
    frames = [_chosen_runs(b, t, r) for b, (t, r) in boards.items()]
    frames = [f for f in frames if len(f)]
    if len(frames) < 2:
        return None
    frame = pd.concat(frames, ignore_index=True)
    benches = list(dict.fromkeys(frame["benchmark"]))
    where = frame.groupby("method")["benchmark"].agg(set)
    notes = [
        f"{m} left out (no test runs on {', '.join(b for b in benches if b not in ran)})"
        for m, ran in where.items()
        if len(ran) < len(benches)
    ]
    common = [m for m, ran in where.items() if len(ran) == len(benches)]
    if len(common) < 2:
        return None
    frame = frame[frame["method"].isin(common)]
    ranks = stats.mean_ranks(frame)
    if BASELINE in common:
        poi = stats.probability_of_improvement(frame, BASELINE)
        ranks = ranks.join(poi.add_prefix("poi_").drop(columns="poi_benchmarks"))
    friedman = _friedman(frame, notes) if len(common) >= 3 else None
    taus = np.linspace(frame["delta_m"].min(), frame["delta_m"].max(), 201)
    profile = stats.performance_profile(frame, taus)
    return Across(benches, frame, ranks, friedman, profile, notes)
