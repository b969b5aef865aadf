"""Leaderboard statistics with uncertainty (issue 14, item 3): pure functions on pandas frames.

Input everywhere: a long frame with one row per method x seed [x benchmark] and a score column
where **lower is better** (Δm%). Columns ``method`` and ``seed`` are required, ``benchmark`` is
optional (absent: one benchmark). Seeds are treated as independent replicates; a method and its
baseline with the same seed share initialisation and data order, which is what the paired tests
use.

* :func:`cell_summary`: mean, sample std (ddof = 1) and a t interval over seeds.
* :func:`probability_of_improvement`: rliable's P(X < Y) (Agarwal et al., NeurIPS 2021,
  "Deep RL at the Edge of the Statistical Precipice"), with a stratified-bootstrap CI.
* :func:`paired_tests` and :func:`leaderboard`: paired tests that can reach their threshold
  (:mod:`mtlbench.inference`) against LS and the best method, Holm-corrected per benchmark;
  :func:`minimal_detectable_difference`: the smallest difference they can detect.
* :func:`mean_ranks`, :func:`friedman_nemenyi`: ranks across benchmarks with a stratified-bootstrap
  CI; Friedman's test and Nemenyi's post-hoc test (Demšar, JMLR 2006) for the CD diagram.
* :func:`performance_profile`: rliable's score distribution, here P(score <= tau).

The bootstrap (P(improvement), ranks) is :func:`scipy.stats.bootstrap`; Nemenyi and the CD
diagram are scikit-posthocs; Holm is statsmodels. rliable's own code is not used: its last
release (1.2.0) pins ``arch<8``, arch 7 does not import with pandas 3 and arch 8 renamed
``random_state``, so its bootstrap cannot run here (docs/reports.md, "Statistics").
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats as st

from mtlbench.inference import (
    POWER,
    detectable_difference,
    paired_test,
    seeds_to_detect,
    smallest_p,
    t_interval,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: The benchmark label used when the frame has no ``benchmark`` column.
SINGLE = "-"


def _require(module: str, package: str) -> ModuleType:
    """Import ``module`` or fail with the one line that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError(
            f"mtlbench.stats needs {package}: pip install '{package}' (a dependency of mtlbench)"
        ) from err


def _cells(frame: pd.DataFrame, score: str) -> pd.DataFrame:
    """The frame with a ``benchmark`` column and without rows whose score is missing."""
    missing = {"method", "seed", score} - set(frame.columns)
    if missing:
        raise KeyError(f"the frame lacks the column(s) {sorted(missing)}")
    out = frame if "benchmark" in frame.columns else frame.assign(benchmark=SINGLE)
    return out[np.isfinite(out[score].to_numpy(dtype=float))]


def _bootstrap(samples: Sequence[np.ndarray], statistic: Any, confidence: float, reps: int, rng):
    """Percentile bootstrap that resamples each sample independently (= stratified)."""
    return st.bootstrap(
        list(samples),
        statistic,
        paired=False,
        vectorized=True,
        n_resamples=reps,
        confidence_level=confidence,
        method="percentile",
        rng=rng,
    ).confidence_interval


def cell_summary(
    frame: pd.DataFrame, score: str = "delta_m", *, confidence: float = 0.95
) -> pd.DataFrame:
    """Per benchmark x method: ``n``, ``mean``, ``std`` (ddof = 1) and the ``confidence``
    t interval of the mean over seeds (``ci_low``, ``ci_high``; :func:`t_interval`).
    Constant scores give a zero-width CI; a single seed gives NaN."""
    data = _cells(frame, score)
    rows = []
    for (bench, method), cell in data.groupby(["benchmark", "method"], sort=True):
        x = cell[score].to_numpy(dtype=float)
        low, high = t_interval(x, confidence)
        std = float(np.std(x, ddof=1)) if len(x) > 1 else math.nan
        rows.append((bench, method, len(x), float(x.mean()), std, low, high))
    cols = ["benchmark", "method", "n", "mean", "std", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=cols).set_index(["benchmark", "method"])


def _histograms(codes: np.ndarray, k: int) -> np.ndarray:
    """Per row of ``codes`` (integers in [0, k); batch shape x n), how often each value occurs:
    an integer array of the batch shape x k, from one ``bincount`` for all rows."""
    batch = codes.shape[:-1]
    rows = math.prod(batch)
    offsets = (np.arange(rows, dtype=np.int64) * k).reshape(*batch, 1)
    flat = np.bincount((codes.astype(np.int64) + offsets).ravel(), minlength=rows * k)
    return flat.reshape(*batch, k)


def _pair_codes(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """x and y as indices into the sorted distinct values of both, and how many there are:
    order and ties kept, so every statistic of ranks (here U) is unchanged."""
    values, codes = np.unique(np.concatenate([x, y]), return_inverse=True)
    return codes[: len(x)], codes[len(x) :], len(values)


def _p_less(cx: np.ndarray, cy: np.ndarray, k: int) -> np.ndarray:
    """P(X < Y) + P(X = Y) / 2 along the last axis, for x and y given as :func:`_pair_codes`
    (a batch of bootstrap resamples in the leading axes): the Mann-Whitney U of (y, x) over
    n_x n_y.

    ``U = #{(i, j): x_i < y_j} + #{(i, j): x_i = y_j} / 2`` is counted without ranking: each
    row becomes a histogram over the k values and ``2U = sum_v h_y(v) (2 #{x < v} + h_x(v))``.
    Every term is an integer, so U equals scipy's ``mannwhitneyu(y, x).statistic`` (the rank
    sum of y less n_y (n_y + 1) / 2, exact in floating point) to the last bit, with one pass
    over all resamples instead of a ranking of each.
    """
    hx, hy = _histograms(cx, k), _histograms(cy, k)
    below = np.cumsum(hx, axis=-1) - hx  # values of x strictly below each value
    twice_u = np.sum(hy * (2 * below + hx), axis=-1)
    return (twice_u / 2) / (cx.shape[-1] * cy.shape[-1])


def probability_of_improvement(
    frame: pd.DataFrame,
    baseline: str = "ls",
    score: str = "delta_m",
    *,
    confidence: float = 0.95,
    reps: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per method: rliable's probability of improvement over ``baseline`` and its CI.

    ``P(X > Y) = 1/T sum_t P(X_t < Y_t)`` with lower scores better, ties counted half: the
    Mann-Whitney U statistic of each benchmark's seeds over n_x n_y, averaged over the T
    benchmarks where both methods ran (Agarwal et al. 2021, section 4.3). 0.5 means neither is
    better. The CI resamples the seeds of each (benchmark, method) cell independently
    (``reps = 0``: no CI). The resampled samples are the seeds' indices among the distinct
    scores of their benchmark (:func:`_pair_codes`): the bootstrap draws the same rows as on the
    scores themselves, and U, a statistic of ranks, is the same.
    """
    data = _cells(frame, score)
    rng = np.random.default_rng(seed)
    groups = {k: g[score].to_numpy(dtype=float) for k, g in data.groupby(["benchmark", "method"])}
    rows = []
    for method in sorted(set(data["method"]) - {baseline}):
        benches = [b for (b, m) in groups if m == method and (b, baseline) in groups]
        if not benches:
            continue
        pairs = [_pair_codes(groups[(b, method)], groups[(b, baseline)]) for b in benches]
        xs, ys, ks = (list(part) for part in zip(*pairs, strict=True))

        def stat(*s: np.ndarray, axis: int = -1, ks: list[int] = ks) -> np.ndarray:
            s, t = tuple(np.moveaxis(a, axis, -1) for a in s), len(ks)
            return np.mean([_p_less(s[i], s[t + i], ks[i]) for i in range(t)], axis=0)

        point = float(stat(*xs, *ys))
        low = high = math.nan
        if reps > 0 and all(len(a) > 1 for a in xs + ys):
            ci = _bootstrap(xs + ys, stat, confidence, reps, rng)
            low, high = float(ci.low), float(ci.high)
        rows.append((method, len(benches), point, low, high))
    cols = ["method", "benchmarks", "p_improvement", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=cols).set_index("method")


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (statsmodels); NaN stays NaN and is not counted."""
    multitest = _require("statsmodels.stats.multitest", "statsmodels")
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multitest.multipletests(p[ok], method="holm")[1]
    return out


def paired_tests(
    frame: pd.DataFrame, reference: str = "ls", score: str = "delta_m", alpha: float = 0.05
) -> pd.DataFrame:
    """Per benchmark x method: the paired test against ``reference`` (a method name, or
    ``"best"`` for the method with the lowest mean on that benchmark) on the seeds both ran.

    The family is the methods of one benchmark (one table column, m comparisons); each test is
    chosen so that it can reach Holm's first threshold ``alpha / m`` (:func:`paired_test`).
    Columns: ``reference``, ``n_pairs``, ``test``, ``p``, ``p_holm``, ``diff`` (mean of
    x - reference), ``min_p`` (the smallest p that test can give, :func:`smallest_p`) and
    ``family`` (m).
    """
    data = _cells(frame, score)
    rows = []
    for bench, block in data.groupby("benchmark", sort=True):
        wide = block.pivot_table(index="seed", columns="method", values=score, aggfunc="mean")
        ref = str(wide.mean().idxmin()) if reference == "best" else reference
        if ref not in wide.columns:
            continue
        others = wide.columns.drop(ref)
        part = []
        for method in others:
            pair = wide[[method, ref]].dropna()
            x, y = pair[method].to_numpy(), pair[ref].to_numpy()
            test, p = paired_test(x, y, alpha / max(len(others), 1))
            diff = float((pair[method] - pair[ref]).mean()) if len(pair) else math.nan
            part.append([bench, method, ref, len(pair), test, p, diff, smallest_p(test, len(x))])
        adjusted = holm([r[5] for r in part])
        rows += [r[:6] + [a, *r[6:], len(others)] for r, a in zip(part, adjusted, strict=True)]
    cols = "benchmark method reference n_pairs test p p_holm diff min_p family".split()
    return pd.DataFrame(rows, columns=cols).set_index(["benchmark", "method"])


def minimal_detectable_difference(
    frame: pd.DataFrame,
    baseline: str = "ls",
    score: str = "delta_m",
    *,
    alpha: float = 0.05,
    power: float = POWER,
) -> pd.DataFrame:
    """Per benchmark, the smallest difference from ``baseline`` the leaderboard's test can
    detect: paired, at Holm's strictest level ``alpha / m`` (m comparisons with the baseline,
    the level a lone true difference must pass), at ``power``, from the observed spread.

    ``spread`` pools the variances of the paired differences method - baseline over the
    methods (the root of their mean); ``n`` is the median number of pairs. Columns: ``n``,
    ``family`` (m), ``level``, ``spread``, ``mdd`` and ``seeds_for_2`` (pairs needed to detect
    2 points at that spread)."""
    data = _cells(frame, score)
    rows = []
    for bench, block in data.groupby("benchmark", sort=True):
        wide = block.pivot_table(index="seed", columns="method", values=score, aggfunc="mean")
        if baseline not in wide.columns or len(wide.columns) < 2:
            continue
        diffs = [(wide[m] - wide[baseline]).dropna() for m in wide.columns.drop(baseline)]
        variances = [float(d.var(ddof=1)) for d in diffs if len(d) > 1]
        spread = math.sqrt(float(np.mean(variances))) if variances else math.nan
        n = int(np.median([len(d) for d in diffs]))
        level = alpha / len(diffs)
        rows.append(
            (
                bench,
                n,
                len(diffs),
                level,
                spread,
                detectable_difference(spread, n, level, power),
                seeds_to_detect(2.0, spread, level, power) if math.isfinite(spread) else None,
            )
        )
    cols = ["benchmark", "n", "family", "level", "spread", "mdd", "seeds_for_2"]
    return pd.DataFrame(rows, columns=cols).set_index("benchmark")


@dataclass(frozen=True)
class Leaderboard:
    """A leaderboard with uncertainty: ``table`` per benchmark x method, ``note`` naming the
    statistics, ``sentence`` saying which differences are significant, ``detectable`` the
    smallest difference from the baseline its test can detect per benchmark
    (:func:`minimal_detectable_difference`)."""

    table: pd.DataFrame
    note: str
    sentence: str
    detectable: pd.DataFrame


def _mark(row: pd.Series, alpha: float) -> str:
    """``best``, ``tie`` (not significantly worse than the best) or empty."""
    if row["rank_group"] == "best":
        return "best"
    return "tie" if not row["p_holm_best"] < alpha else ""


def leaderboard(
    frame: pd.DataFrame,
    baseline: str = "ls",
    score: str = "delta_m",
    *,
    alpha: float = 0.05,
    confidence: float = 0.95,
) -> Leaderboard:
    """Everything per cell: :func:`cell_summary`, P(improvement) over ``baseline`` on that
    benchmark, Holm-adjusted paired p-values against the best method and against the baseline,
    ``vs_best`` (``best`` / ``tie`` / empty) and ``vs_baseline`` (``better`` / ``worse`` /
    ``tie``). Methods whose difference is not significant at ``alpha`` are ties."""
    data = _cells(frame, score)
    table = cell_summary(data, score, confidence=confidence)
    poi = [
        probability_of_improvement(g, baseline, score, reps=0)["p_improvement"].rename(b)
        for b, g in data.groupby("benchmark")
    ]
    if poi:
        table["p_improvement"] = pd.concat(poi, axis=1).stack().swaplevel()
    best = paired_tests(data, "best", score, alpha)
    base = paired_tests(data, baseline, score, alpha)
    table["p_holm_best"] = best["p_holm"]
    table["p_holm_baseline"] = base["p_holm"]
    best_of = data.groupby(["benchmark", "method"])[score].mean().groupby(level=0).idxmin()
    table["rank_group"] = ["best" if best_of[b] == (b, m) else "" for b, m in table.index]
    table["vs_best"] = table.apply(_mark, axis=1, alpha=alpha)
    signif = table["p_holm_baseline"] < alpha
    direction = np.where(base["diff"].reindex(table.index) < 0, "better", "worse")
    table["vs_baseline"] = np.where(signif, direction, "tie")
    untested = ~table.index.isin(base.index)  # the baseline itself, or not run there
    table.loc[untested, "vs_baseline"] = ""
    table = table.drop(columns="rank_group")
    tests = sorted(set(best["test"]) | set(base["test"]) - {"none", "identical"})
    floor = base["min_p"].dropna()
    reachable = ""
    if len(floor):
        reachable = (
            ", which can give any p"
            if floor.max() == 0
            else f"; the smallest p these tests can give here is {floor.max():.2g}"
        )
    note = (
        f"mean ± std over seeds; {confidence:.0%} CI: Student's t interval over seeds; "
        f"P(improvement) over {baseline}: rliable's definition; significance: two-sided "
        f"{' / '.join(tests) or 'paired'} test across seeds (the exact Wilcoxon test only "
        f"where it can reach Holm's first threshold alpha / m, else the paired t{reachable}), "
        f"Holm-corrected per benchmark, alpha = {alpha}; 'tie': not significantly different."
    )
    detectable = minimal_detectable_difference(data, baseline, score, alpha=alpha)
    return Leaderboard(table, note, significance_sentence(table, baseline, alpha), detectable)


def significance_sentence(table: pd.DataFrame, baseline: str, alpha: float = 0.05) -> str:
    """One sentence: per benchmark, which methods differ from ``baseline`` beyond noise and
    which tie with the best (a :class:`Leaderboard` table)."""
    parts = []
    for bench, block in table.groupby(level="benchmark", sort=True):
        methods = block.index.get_level_values("method")
        better = [m for m, v in zip(methods, block["vs_baseline"], strict=True) if v == "better"]
        worse = [m for m, v in zip(methods, block["vs_baseline"], strict=True) if v == "worse"]
        top = [m for m, v in zip(methods, block["vs_best"], strict=True) if v in ("best", "tie")]
        said = [f"better than {baseline}: {', '.join(better) or 'none'}"]
        if baseline not in methods:
            said = [f"{baseline} not run"]
        if worse:
            said.append(f"worse: {', '.join(worse)}")
        said.append(f"tied for best: {', '.join(top)}")
        label = "" if bench == SINGLE else f"{bench}: "
        parts.append(label + "; ".join(said))
    return f"Significant at alpha = {alpha} (Holm): " + " | ".join(parts) + "."


def _rank_table(frame: pd.DataFrame, score: str) -> pd.DataFrame:
    """Benchmark x method table of seed means; every method must have run on every benchmark."""
    wide = _cells(frame, score).pivot_table(
        index="benchmark", columns="method", values=score, aggfunc="mean"
    )
    holes = wide.isna().stack()
    if holes.any():
        missing = ", ".join(f"{m} on {b}" for b, m in holes[holes].index)
        raise ValueError(f"ranks need every method on every benchmark; missing: {missing}")
    return wide


def mean_ranks(
    frame: pd.DataFrame,
    score: str = "delta_m",
    *,
    confidence: float = 0.95,
    reps: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per method: the mean over benchmarks of its rank (1 = lowest mean score, ties share the
    average rank, as Friedman's test ranks) and a stratified-bootstrap CI: each cell's seeds are
    resampled independently, the means re-ranked and averaged over benchmarks."""
    wide = _rank_table(frame, score)
    data = _cells(frame, score)
    cells = [(b, m) for b in wide.index for m in wide.columns]
    groups = data.groupby(["benchmark", "method"])[score]
    samples = [groups.get_group(c).to_numpy(dtype=float) for c in cells]
    shape = wide.shape

    def stat(*s: np.ndarray, axis: int = -1) -> np.ndarray:
        means = np.stack([x.mean(axis=axis) for x in s], axis=-1)
        means = means.reshape(means.shape[:-1] + shape)
        return np.moveaxis(st.rankdata(means, axis=-1).mean(axis=-2), -1, 0)

    out = pd.DataFrame({"mean_rank": stat(*samples)}, index=wide.columns)
    out["ci_low"] = out["ci_high"] = math.nan
    if all(len(x) > 1 for x in samples):
        rng = np.random.default_rng(seed)
        ci = _bootstrap(samples, stat, confidence, reps, rng)
        out["ci_low"], out["ci_high"] = ci.low, ci.high
    out["benchmarks"] = shape[0]
    return out.sort_values("mean_rank")


@dataclass(frozen=True)
class FriedmanResult:
    """Friedman's chi-square test over benchmarks (blocks) and methods, and Nemenyi's post-hoc
    p-values (methods x methods)."""

    statistic: float
    pvalue: float
    mean_ranks: pd.Series
    nemenyi: pd.DataFrame


def friedman_nemenyi(frame: pd.DataFrame, score: str = "delta_m") -> FriedmanResult:
    """Friedman's test on the benchmark x method table of seed means (scipy) and Nemenyi's
    all-pairs post-hoc test (scikit-posthocs), as Demšar (2006) prescribes for comparing several
    methods over several data sets. Needs three methods and two benchmarks at least."""
    posthocs = _require("scikit_posthocs", "scikit-posthocs")
    wide = _rank_table(frame, score)
    if wide.shape[1] < 3 or wide.shape[0] < 2:
        raise ValueError("Friedman's test needs at least 3 methods and 2 benchmarks")
    res = st.friedmanchisquare(*(wide[m].to_numpy() for m in wide.columns))
    ranks = pd.Series(st.rankdata(wide.to_numpy(), axis=1).mean(axis=0), index=wide.columns)
    nemenyi = posthocs.posthoc_nemenyi_friedman(wide.reset_index(drop=True))
    return FriedmanResult(float(res.statistic), float(res.pvalue), ranks, nemenyi)


def performance_profile(
    frame: pd.DataFrame, taus: Sequence[float] | np.ndarray, score: str = "delta_m"
) -> pd.DataFrame:
    """rliable's performance profile (score distribution) for a lower-is-better score: per
    method and threshold tau, the fraction of its runs with ``score <= tau`` on each benchmark
    (the empirical CDF, :func:`scipy.stats.ecdf`), averaged over benchmarks. Index: tau."""
    data = _cells(frame, score)
    t = np.asarray(taus, dtype=float)
    curves = {}
    for method, block in data.groupby("method", sort=True):
        per_bench = [
            st.ecdf(g[score].to_numpy(dtype=float)).cdf.evaluate(t)
            for _, g in block.groupby("benchmark")
        ]
        curves[method] = np.mean(per_bench, axis=0)
    return pd.DataFrame(curves, index=pd.Index(t, name="tau"))


def _axes(ax: Axes | None, size: tuple[float, float]) -> Axes:
    """``ax``, or a new seaborn-styled figure's axes."""
    if ax is not None:
        return ax
    plt = _require("matplotlib.pyplot", "matplotlib")
    sns = _require("seaborn", "seaborn")
    with sns.axes_style("whitegrid"):
        return plt.figure(figsize=size).add_subplot()


def plot_intervals(summary: pd.DataFrame, ax: Axes | None = None, label: str = "Δm%") -> Figure:
    """Means with their CIs, one line per row of :func:`cell_summary` or :func:`mean_ranks`
    (``mean`` or ``mean_rank``, ``ci_low``, ``ci_high``), best at the top."""
    sns = _require("seaborn", "seaborn")
    ax = _axes(ax, (5.0, 0.4 * len(summary) + 1.0))
    col = "mean" if "mean" in summary.columns else "mean_rank"
    rows = summary.sort_values(col, ascending=False)
    names = [" / ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in rows.index]
    colors = sns.color_palette(n_colors=len(rows))
    y = np.arange(len(rows))
    ax.hlines(y, rows["ci_low"], rows["ci_high"], colors=colors, lw=6, alpha=0.6)
    ax.scatter(rows[col], y, color="black", zorder=3, s=12)
    ax.set_yticks(y, names)
    ax.set_xlabel(f"{label} (lower is better)")
    return ax.figure


def plot_critical_difference(result: FriedmanResult, ax: Axes | None = None) -> Figure:
    """Demšar's critical-difference diagram (scikit-posthocs): methods on the mean-rank axis,
    a bar joins methods whose Nemenyi p-value is not below 0.05."""
    posthocs = _require("scikit_posthocs", "scikit-posthocs")
    ax = _axes(ax, (7.0, 0.3 * len(result.mean_ranks) + 1.5))
    posthocs.critical_difference_diagram(result.mean_ranks, result.nemenyi, ax=ax)
    ax.set_title(f"Friedman p = {result.pvalue:.3g}; bars: Nemenyi p >= 0.05", fontsize=9, pad=24)
    return ax.figure


def plot_performance_profile(
    profile: pd.DataFrame, ax: Axes | None = None, label: str = "Δm%"
) -> Figure:
    """Curves of :func:`performance_profile`: higher (further left) is better."""
    sns = _require("seaborn", "seaborn")
    ax = _axes(ax, (5.0, 3.5))
    long = profile.reset_index().melt(id_vars="tau", var_name="method", value_name="fraction")
    sns.lineplot(data=long, x="tau", y="fraction", hue="method", ax=ax, drawstyle="steps-post")
    ax.set_xlabel(f"threshold τ on {label}")
    ax.set_ylabel(f"fraction of runs with {label} ≤ τ")
    ax.set_ylim(-0.02, 1.02)
    return ax.figure
