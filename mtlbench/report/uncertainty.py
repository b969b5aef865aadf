"""The report's statistics across benchmarks (issue 14, item 3): mean rank of Δm% with a
bootstrap CI and P(improvement) over LS (a table), the critical-difference diagram (Friedman +
Nemenyi, Demšar 2006) and rliable's performance profile (figures). The numbers come from
:func:`mtlbench.report.significance.across_significance`, the figures from :mod:`mtlbench.stats`'
plotting functions drawn on the report's own (pyplot-free) figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mtlbench import stats
from mtlbench.report.base import Across
from mtlbench.report.page import Report
from mtlbench.report.render import MISSING, Cell, Table, fmt_pm
from mtlbench.report.significance import across_significance


def across(report: Report) -> None:
    """The part of "Across benchmarks" with uncertainty, or one line on why it is absent."""
    boards = {
        b: (board.table, board.runs)
        for b, board in report.boards.items()
        if board.significance is not None and not board.significance.reason
    }
    result = across_significance(boards)
    if result is None:
        report.doc.p(
            "Mean ranks with confidence intervals, the critical-difference diagram and "
            "performance profiles need two benchmarks with Δm% over seeds and two methods run "
            f"on both (here: {', '.join(boards) or 'none'})."
        )
        return
    report.doc.h(3, "Across benchmarks, with uncertainty")
    report.doc.p(
        f"Over {', '.join(result.benchmarks)}, each method with its variant of most runs. Mean "
        "rank: per benchmark the methods are ranked on their mean Δm% (1 = best, ties share the "
        "average rank), then averaged; 95% CI: stratified bootstrap of every cell's seeds. "
        "P(impr.): rliable's probability that a run of the method has a lower Δm% than a run "
        "of LS, averaged over benchmarks, with its stratified-bootstrap CI (docs/reports.md, "
        "“Statistics”)."
    )
    report.emit(_ranks_table(result.ranks))
    report.doc.ul(result.notes)
    if result.friedman is not None:
        f = result.friedman
        report.doc.p(
            f"Friedman's χ² = {f.statistic:.2f} (p = {f.pvalue:.3g}) over {len(result.benchmarks)} "
            "benchmarks; the diagram puts each method at its mean rank and joins by a bar the "
            "methods that Nemenyi's test does not separate (p ≥ 0.05)."
        )
        report.figure(draw_cd, "critical_difference.png", "critical-difference diagram", f)
    else:
        report.doc.p(
            "No critical-difference diagram: Friedman's test needs three methods that do not "
            "all tie."
        )
    report.doc.p(
        "Performance profile: for each threshold τ, the fraction of a method's runs with Δm% ≤ τ, "
        "averaged over benchmarks; higher and further left is better."
    )
    palette = report.palette
    report.figure(draw_profile, "performance_profile.png", "performance profile", result, palette)


def _interval(low: Any, high: Any) -> str:
    if MISSING in (lo := fmt_pm(low, None, decimals=2), hi := fmt_pm(high, None, decimals=2)):
        return MISSING
    return f"[{lo}, {hi}]"


def _ranks_table(ranks: pd.DataFrame) -> Table:
    """Mean rank with its CI and P(improvement) over LS with its CI, per method."""
    poi = "poi_p_improvement" in ranks
    rows = []
    for method, r in ranks.iterrows():
        cells = [Cell(str(method)), Cell(fmt_pm(r["mean_rank"], None, decimals=2))]
        cells.append(Cell(_interval(r["ci_low"], r["ci_high"])))
        if poi:
            cells.append(Cell(fmt_pm(r["poi_p_improvement"], None, decimals=2)))
            cells.append(Cell(_interval(r["poi_ci_low"], r["poi_ci_high"])))
        rows.append(cells)
    headers = ["method", "mean rank of Δm% ↓", "rank 95% CI"]  # unique headers (the Styler)
    headers += ["P(impr. over LS) ↑", "P(impr.) 95% CI"] if poi else []
    return Table("mean_ranks", headers, rows, ranks.reset_index(names="method"))


def draw_cd(result: stats.FriedmanResult, path: Path) -> Path:
    """The critical-difference diagram on a figure of the report's theme."""
    import matplotlib as mpl  # optional heavy dependency: matplotlib

    import mtlbench.report.figures as figures  # optional heavy dependency: matplotlib

    with figures.theme(), mpl.rc_context(figures.LIFTED_TITLES):  # the rank axis is on top
        room = figures.label_room(result.mean_ranks.index, 0.08, 0.6)  # labels beside the axis
        size = (6.0, 0.3 * len(result.mean_ranks) + 1.0)
        fig, axes = figures.figure(1, 1, size, top=0.9, left=room, right=room)
        stats.plot_critical_difference(result, ax=axes[0])
        return figures.save(fig, path)


def draw_profile(result: Across, palette: dict[str, Any], path: Path) -> Path:
    """The performance profile, each method in its report colour (the palette's colour of the
    variant it enters with is its base method's where the labels agree)."""
    import seaborn as sns  # optional heavy dependency: seaborn

    import mtlbench.report.figures as figures  # optional heavy dependency: matplotlib

    methods = list(result.profile.columns)
    colours = figures.palette_for(methods, palette)
    with figures.theme(), sns.color_palette([colours[m] for m in methods]):
        room = figures.label_room(methods, 0.08, 1.1)
        fig, axes = figures.figure(1, 1, (5.0, 3.4), right=room)
        stats.plot_performance_profile(result.profile, ax=axes[0])
        legend = axes[0].get_legend()
        if legend is not None:
            legend.set_bbox_to_anchor((1.02, 1.0))
            legend.set_loc("upper left")
        return figures.save(fig, path)
