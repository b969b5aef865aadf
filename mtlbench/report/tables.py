"""Display tables built from the leaderboards' numbers (text cells with best / second marks,
and the raw numbers each table's CSV holds)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from mtlbench.report.base import Col
from mtlbench.report.render import (
    MISSING,
    Cell,
    Table,
    column_decimals,
    decimals_for,
    fmt_pm,
    marks,
)
from mtlbench.report.timing import NOT_COMPARABLE

MAX_METRIC_COLUMNS = 12  # wider benchmarks (CelebA, QM9) get a separate per-metric table
SUMMARY = ("delta_m", "delta_m_task", "mean_rank")


def _count(x: Any) -> int:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return 0
    return int(v) if math.isfinite(v) else 0


def n_text(r: pd.Series) -> str:
    """``n`` of a leaderboard row: done runs, ``2/3`` when some runs are not done."""
    if r["role"] == "not run":
        return "0"
    n, runs = _count(r.get("n")), _count(r.get("runs"))
    if r["role"] == "reference":
        return str(n) if runs else MISSING
    return f"{n}/{runs}" if runs != n else str(n)


def _column_marks(board: pd.DataFrame, col: str, lower_is_better: bool) -> list[str]:
    """Marks of a column among the method rows (the reference and not-run rows get none)."""
    is_method = board["role"] == "method"
    return marks(board[col].where(is_method).tolist(), lower_is_better)


def _metric_cells(board: pd.DataFrame, cols: Sequence[Col]) -> list[list[Cell]]:
    """Per row, one ``mean ± std`` cell per metric, decimals per column."""
    columns = []
    for c in cols:
        values = board.get(c.name, pd.Series(math.nan, index=board.index))
        stds = board.get(f"{c.name}_std", pd.Series(math.nan, index=board.index))
        d = column_decimals(values.tolist())
        mark = (
            _column_marks(board, c.name, not c.higher_is_better)
            if c.higher_is_better is not None and c.name in board
            else [""] * len(board)
        )
        columns.append(
            [Cell(fmt_pm(v, s, decimals=d), m) for v, s, m in zip(values, stds, mark, strict=True)]
        )
    return [list(row) for row in zip(*columns, strict=True)] or [[] for _ in range(len(board))]


def _summary_cells(board: pd.DataFrame, task_avg: bool) -> list[list[Cell]]:
    """Per row: Δm% (one or two variants), MR, time/step × LS, total time × LS."""
    mark = {c: _column_marks(board, c, True) for c in SUMMARY if c in board}
    out = []
    for i, (_, r) in enumerate(board.iterrows()):
        cells = []
        for col in ("delta_m", "delta_m_task") if task_avg else ("delta_m",):
            if r["role"] == "reference":
                cells.append(Cell("0 (ref)" if col in board else MISSING))
                continue
            text = fmt_pm(r.get(col), r.get(f"{col}_std"), decimals=2)
            cells.append(Cell(text, mark[col][i] if col in mark else ""))
        if shows_uncertainty(board):
            cells += uncertainty_cells(r)
        rank = mark["mean_rank"][i] if "mean_rank" in mark else ""
        cells.append(Cell(fmt_pm(r.get("mean_rank"), None, decimals=2), rank))
        cells += time_cells(r)
        out.append(cells)
    return out


def time_cells(r: pd.Series) -> list[Cell]:
    """time/step × LS and total time × LS of a row; ``not comparable`` where the row's runs
    ran on another machine than LS's and no timing reference stands in
    (:mod:`mtlbench.report.timing`)."""
    if str(r.get("time_x_ls_note") or "") == NOT_COMPARABLE and not _finite_number(
        r.get("step_x_ls")
    ):
        return [Cell(NOT_COMPARABLE), Cell(NOT_COMPARABLE)]
    return [
        Cell(fmt_pm(r.get("step_x_ls"), r.get("step_x_ls_std"), decimals=2)),
        Cell(fmt_pm(r.get("total_x_ls"), r.get("total_x_ls_std"), decimals=2)),
    ]


UNCERTAINTY_HEADERS = ["95% CI", "P(impr.)", "vs best", "vs LS"]
MARK_TEXT = {"best": "best", "tie": "≈", "worse": "worse*", "better": "better*"}


def shows_uncertainty(board: pd.DataFrame) -> bool:
    """The table has the uncertainty columns: runs over seeds (not the toy's starting points)
    with a Δm% (without one, the page says so in a line instead)."""
    return "vs_best" in board and "delta_m" in board and board["delta_m"].notna().any()


def uncertainty_cells(r: pd.Series) -> list[Cell]:
    """The CI of Δm%, P(improvement) over LS and the marks against the best and LS
    (``≈``: a tie within noise; ``*``: significant); a variant with one seed says so."""
    if r["role"] == "reference":
        return [Cell("") for _ in UNCERTAINTY_HEADERS]
    low, high = r.get("delta_m_ci_low"), r.get("delta_m_ci_high")
    if _count(r.get("n")) == 1 and _finite_number(r.get("delta_m")):
        return [Cell("1 seed"), *[Cell(MISSING) for _ in UNCERTAINTY_HEADERS[1:]]]
    ci = (
        f"[{fmt_pm(low, None, decimals=2)}, {fmt_pm(high, None, decimals=2)}]"
        if _finite_number(low) and _finite_number(high)
        else MISSING
    )
    base = str(r.get("base_method")) == "ls" and not _finite_number(r.get("p_improvement"))
    return [
        Cell(ci),
        Cell(fmt_pm(r.get("p_improvement"), None, decimals=2)),
        Cell(MARK_TEXT.get(str(r.get("vs_best")), MISSING)),
        Cell("LS" if base else MARK_TEXT.get(str(r.get("vs_ls")), MISSING)),
    ]


def _finite_number(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def leaderboard_tables(
    board: pd.DataFrame, metrics: Sequence[Col] | None = None, *, task_avg: bool = False
) -> list[Table]:
    """The display tables of a leaderboard: one, or for more than :data:`MAX_METRIC_COLUMNS`
    metrics a summary plus a per-metric table. ``metrics`` default: ``board.attrs``'."""
    bench = board["benchmark"].iloc[0] if len(board) else "?"
    cols = list(metrics if metrics is not None else board.attrs.get("metrics", []))
    head = [[Cell(str(r["method"])), Cell(n_text(r))] for _, r in board.iterrows()]
    metric_cells = _metric_cells(board, cols)
    summary = _summary_cells(board, task_avg)
    dm = ["Δm% ↓ (metric-avg)"] + (["Δm% ↓ (task-avg)"] if task_avg else [])
    stats = UNCERTAINTY_HEADERS if shows_uncertainty(board) else []
    tail = [*dm, *stats, "MR ↓", "time/step × LS", "total time × LS"]
    metric_headers = [f"{c.name}{c.arrow}" for c in cols]
    name = f"leaderboard_{bench}"
    if len(cols) <= MAX_METRIC_COLUMNS:
        rows = [h + m + s for h, m, s in zip(head, metric_cells, summary, strict=True)]
        return [Table(name, ["method", "n", *metric_headers, *tail], rows, board)]
    return [
        Table(
            name, ["method", "n", *tail], [h + s for h, s in zip(head, summary, strict=True)], board
        ),
        Table(
            f"{name}_metrics",
            ["method", "n", *metric_headers],
            [h + m for h, m in zip(head, metric_cells, strict=True)],
        ),
    ]


def replicate_table(runs: pd.DataFrame, board: pd.DataFrame, cols: Sequence[Col]) -> Table:
    """Per method, the final point of each replicate (the toy's starting points): the metrics at
    the selected epoch, one column per start (the mean over seeds where a start has several),
    beside the time ratios of the leaderboard. CSV: one row per run."""
    names = [c.name for c in cols]
    starts = sorted(runs["start"].dropna().unique())
    decimals = {n: column_decimals(runs.get(f"test/{n}", pd.Series()).tolist()) for n in names}
    means = runs.groupby(["variant", "start"], sort=False)[[f"test/{n}" for n in names]].mean()
    methods = board[board["role"] == "method"]
    rows = []
    for _, r in methods.iterrows():
        cells = [Cell(str(r["method"])), Cell(n_text(r))]
        for s in starts:
            key = (r["method"], s)
            values = [means.at[key, f"test/{n}"] if key in means.index else math.nan for n in names]
            texts = [
                fmt_pm(v, None, decimals=decimals[n]) for v, n in zip(values, names, strict=True)
            ]
            cells.append(Cell(MISSING if set(texts) == {MISSING} else ", ".join(texts)))
        cells.append(Cell(fmt_pm(r.get("step_x_ls"), r.get("step_x_ls_std"), decimals=2)))
        cells.append(Cell(fmt_pm(r.get("total_x_ls"), r.get("total_x_ls_std"), decimals=2)))
        rows.append(cells)
    what = ", ".join(f"{c.name}{c.arrow}" for c in cols)
    headers = ["method", "n", *[f"start {_start(s)}: {what}" for s in starts]]
    data = runs[["variant", "start", "seed", "trial_id", *[f"test/{n}" for n in names]]]
    data = data.rename(columns={"variant": "method", **{f"test/{n}": n for n in names}})
    bench = board["benchmark"].iloc[0]
    return Table(
        f"final_points_{bench}", [*headers, "time/step × LS", "total time × LS"], rows, data
    )


def _start(s: Any) -> str:
    return str(int(s)) if isinstance(s, float) and s.is_integer() else str(s)


def cross_table(cross: pd.DataFrame, benches: Sequence[str]) -> Table:
    """Mean MR and Δm% over benchmarks, with the benchmarks each covers."""
    mr_marks = marks(cross["avg_mean_rank"].tolist(), True)
    dm_marks = marks(cross["avg_delta_m"].tolist(), True)
    rows = []
    for i, r in cross.iterrows():
        rows.append(
            [
                Cell(r["method"]),
                Cell(fmt_pm(r["avg_mean_rank"], None, decimals=2), mr_marks[i]),
                Cell(_covers(r["n_mean_rank"], r["mean_rank_benchmarks"])),
                Cell(fmt_pm(r["avg_delta_m"], None, decimals=2), dm_marks[i]),
                Cell(_covers(r["n_delta_m"], r["delta_m_benchmarks"])),
                *[Cell(fmt_pm(r[f"delta_m/{b}"], None, decimals=2)) for b in benches],
            ]
        )
    headers = ["method", "avg MR ↓", "MR covers", "avg Δm% ↓", "Δm% covers"]
    return Table("across_benchmarks", [*headers, *[f"Δm% {b}" for b in benches]], rows, cross)


def _covers(n: int, benches: str) -> str:
    return f"{n}: {benches}" if n else MISSING


def runtime_table(rt: pd.DataFrame) -> Table:
    """Time × LS per method (rows) and benchmark (two columns each)."""
    benches = list(dict.fromkeys(rt["benchmark"]))
    lookup = {(r["method"], r["benchmark"]): r for _, r in rt.iterrows()}
    rows = []
    for method in dict.fromkeys(rt["method"]):
        cells = [Cell(str(method))]
        for b in benches:
            r = lookup.get((method, b), {})
            cells.append(Cell(fmt_pm(r.get("step_x_ls"), None, decimals=2)))
            cells.append(Cell(fmt_pm(r.get("total_x_ls"), None, decimals=2)))
        rows.append(cells)
    headers = ["method"] + [h for b in benches for h in (f"{b} step × LS", f"{b} total × LS")]
    return Table("runtime", headers, rows, rt)


def time_to_target_table(frame: pd.DataFrame) -> Table:
    """Per benchmark and method: the runs that reached LS's quality, and the median steps and
    time to it relative to LS's (:mod:`.time_to_target`); ``never`` where none did."""
    rows = []
    for _, r in frame.iterrows():
        never = r["reached"] == 0
        rows.append(
            [
                Cell(str(r["benchmark"])),
                Cell(str(r["method"])),
                Cell(f"{int(r['reached'])}/{int(r['runs'])}"),
                Cell("never" if never else fmt_pm(r["steps_x_ls"], None, decimals=2)),
                Cell("never" if never else fmt_pm(r["time_x_ls"], None, decimals=2)),
            ]
        )
    headers = ["benchmark", "method", "reached", "steps × LS", "time × LS"]
    return Table("time_to_ls_quality", headers, rows, frame)


def missing_table(missing: pd.DataFrame, limit: int) -> Table:
    """The first ``limit`` missing runs (the CSV holds all of them)."""
    rows = [
        [Cell(str(r[c])) for c in ("benchmark", "method", "replicate", "reason")]
        for _, r in missing.head(limit).iterrows()
    ]
    return Table("missing", ["benchmark", "method", "run", "reason"], rows, missing)


def published_table(comp: pd.DataFrame, bench: str) -> Table:
    """Ours, the paper's and the difference per quantity; metrics with the paper's decimals."""
    quantities = comp.attrs["quantities"]
    headers = ["method", "paper label"]
    for q in quantities:
        name = {"delta_m": "Δm%", "time_rel_ls": "total time × LS"}.get(q, q)
        headers += [f"{name} ours", f"{name} paper", f"{name} diff"]
    rows = []
    for _, r in comp.iterrows():
        cells = [Cell(r["ours_label"] or r["method"]), Cell(r["paper_label"] or MISSING)]
        for q in quantities:
            d = (
                2
                if q in ("delta_m", "time_rel_ls")
                else decimals_for(r[f"{q}/paper"]) or decimals_for(r[f"{q}/ours"])
            )
            cells += [
                Cell(fmt_pm(r[f"{q}/{k}"], None, decimals=d)) for k in ("ours", "paper", "diff")
            ]
        rows.append(cells)
    return Table(f"published_{bench}", headers, rows, comp)


def selected_table(configs: pd.DataFrame, bench: str) -> Table:
    """The configuration each tuned method's tuning stage selected (:mod:`.selected`): one row
    per setting, the method named on its first row; the CSV repeats it on every row."""
    rows, last = [], None
    for _, r in configs.iterrows():
        method = str(r["method"])
        rows.append(
            [
                Cell(method if method != last else ""),
                Cell(str(r["setting"])),
                Cell(str(r["selected"])),
                Cell(MISSING if pd.isna(r["untuned"]) else str(r["untuned"])),
                Cell(str(r["range"])),
                Cell(str(r["edge"] or "")),
            ]
        )
        last = method
    headers = ["method", "setting", "selected", "without tuning", "drawn from", "at an edge"]
    return Table(f"selected_{bench}", headers, rows, configs)
