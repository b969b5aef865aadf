"""Leaderboard: pure numbers per benchmark (means, sample standard deviations, ranks, ratios).

* **Δm%** is recomputed for every done record from its test metrics and the reference of its
  variant (:mod:`mtlbench.report.reference`) by :func:`mtlbench.metrics.delta_m_frame`; the
  record's own ``delta_m`` is only cross-checked. Per run first, then mean ± sample standard
  deviation (ddof = 1) over seeds. The convention is written out in ``docs/reports.md``.
* **Mean rank** (MR): per metric, variants ranked on their means (1 = best, ties share the
  lowest rank, :func:`mtlbench.metrics.mean_rank`), averaged over metrics.
* **Time × LS**: each run's per-step median (``timing.step_median_s``) or total training time
  (``timing.train_s``) divided by the mean of LS's runs on the same benchmark (the LS variant
  with the most runs) and the same machine (:mod:`mtlbench.report.timing`), then averaged over
  seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from mtlbench.metrics import delta_m_frame, mean_rank
from mtlbench.report.base import BenchInfo, Board, Col, RefInfo, tie_round
from mtlbench.report.benchmarks import bench_info
from mtlbench.report.missing import missing_runs, status_notes
from mtlbench.report.reference import Choice, choose
from mtlbench.report.significance import board_significance
from mtlbench.report.timing import time_ratios
from mtlbench.report.variants import best_variant, prepare

FRONT = ["benchmark", "method", "base_method", "role", "n", "runs"]
# per-run column -> leaderboard column (mean, and "<name>_std")
PER_RUN = {
    "_dm": "delta_m",
    "_dmt": "delta_m_task",
    "_step_x": "step_x_ls",
    "_total_x": "total_x_ls",
}


def _delta_m(done: pd.DataFrame, choice: Choice, ranked: list[Col], notes: list[str]) -> None:
    """Per-run Δm% (metric- and task-averaged) into ``_dm`` / ``_dmt``."""
    done["_dm"] = math.nan
    done["_dmt"] = math.nan
    groups = done.groupby("variant", sort=False).groups if ranked else {}
    for variant, idx in groups.items():
        ref = choice.refs.get(str(variant))
        if ref is None:
            continue
        lacking = [c.name for c in ranked if not np.isfinite(ref.values.get(c.name, math.nan))]
        if lacking:
            notes.append(f"{variant}: no Δm% (reference lacks {', '.join(lacking)})")
            continue
        m_avg, t_avg = delta_m_frame(done.loc[idx], ref.values, ranked)  # type: ignore[arg-type]
        done.loc[idx, "_dm"] = m_avg
        done.loc[idx, "_dmt"] = t_avg
    stored = done["delta_m"]
    both = stored.notna() & done["_dm"].notna()
    diff = (stored[both] - done.loc[both, "_dm"]).abs()
    bad = diff > 1e-6 * np.maximum(1.0, done.loc[both, "_dm"].abs())
    if bad.any():
        # A reference whose seeds grew after a run finished (sequential seeding, issue 21)
        # names fewer records in the source the run stored than the reference of today.
        current = {r.source for r in choice.refs.values() if r is not None}
        sources = done.loc[bad[bad].index, "stored_reference_source"].dropna()
        earlier = int((~sources.isin(current)).sum())
        why = (
            f"{earlier} of them against an earlier state of the reference, built from other "
            "single-task records than today's, as when its seeds grew after they ran"
            if earlier
            else "e.g. computed against another reference"
        )
        notes.append(
            f"{int(bad.sum())} of {int(both.sum())} records carry a stored Δm% that differs from "
            f"the recomputed one (largest gap {diff.max():.3g}; {why}); the table shows the "
            "recomputed values"
        )


def _ls_label(done: pd.DataFrame, notes: list[str]) -> str | None:
    """LS's variant on this benchmark (the one with the most runs), the denominator of time."""
    ls_variants = done[done["method"] == "ls"]["variant"].value_counts()
    if not len(ls_variants):
        if not done.empty:
            notes.append("no time × LS: no done LS run on this benchmark")
        return None
    ls_label = str(ls_variants.index[0])
    if len(ls_variants) > 1:
        notes.append(f"time × LS is relative to {ls_label} (the LS variant with most runs)")
    return ls_label


def _seeds(s: pd.Series) -> str:
    return ",".join(str(int(x)) for x in sorted(s.dropna().unique()))


def _aggregate(done: pd.DataFrame, mtl: pd.DataFrame, cols: list[Col], bench: str) -> pd.DataFrame:
    """One row per variant: means and sample stds over its done runs."""
    value_cols = {f"test/{c.name}": c.name for c in cols}
    for c in value_cols:
        if c not in done:
            done[c] = math.nan
    agg_cols = [*value_cols, *PER_RUN, "step_median_s", "train_s"]
    grouped = done.groupby("variant", sort=False)[agg_cols]
    mean, std = grouped.mean(), grouped.std(ddof=1)
    count = done.groupby("variant", sort=False).size()
    runs = mtl.groupby("variant", sort=False).size()
    base = mtl.groupby("variant", sort=False)["method"].first()
    seeds = done.groupby("variant", sort=False)["seed"].agg(_seeds)
    trials = done.groupby("variant", sort=False)["trial_id"].agg(lambda s: " ".join(sorted(s)))
    out = []
    for variant in runs.index:
        have = variant in mean.index
        r: dict[str, Any] = {
            "benchmark": bench,
            "method": variant,
            "base_method": base[variant],
            "role": "method",
            "n": int(count.get(variant, 0)),
            "runs": int(runs[variant]),
        }
        for src, dst in [*value_cols.items(), *PER_RUN.items()]:
            r[dst] = mean.at[variant, src] if have else math.nan
            r[f"{dst}_std"] = std.at[variant, src] if have else math.nan
        r["step_median_s"] = mean.at[variant, "step_median_s"] if have else math.nan
        r["train_s"] = mean.at[variant, "train_s"] if have else math.nan
        r["seeds"] = seeds.get(variant, "")
        r["trials"] = trials.get(variant, "")
        out.append(r)
    # the same columns without a row (only references run so far): later sections read them
    stats = [n for c in [*value_cols.values(), *PER_RUN.values()] for n in (c, f"{c}_std")]
    columns = [*FRONT, *stats, "step_median_s", "train_s", "seeds", "trials"]
    return pd.DataFrame(out, columns=columns)


def _ranked_and_sorted(table: pd.DataFrame, ranked: list[Col]) -> pd.DataFrame:
    """``mean_rank`` over the ranked metrics; rows by Δm%, then MR."""
    if ranked and not table.empty:
        metric_table = tie_round(table.set_index("method")[[c.name for c in ranked]])
        higher = {c.name: bool(c.higher_is_better) for c in ranked}
        table["mean_rank"] = mean_rank(metric_table, higher).to_numpy()
    else:
        table["mean_rank"] = math.nan
    if not table.empty:
        sort_by = [c for c in ("delta_m", "mean_rank") if c in table]
        table = table.sort_values(sort_by, na_position="last", kind="stable")
    return table


def _reference_row(reference: RefInfo, cols: list[Col], bench: str) -> dict[str, Any]:
    row: dict[str, Any] = {"benchmark": bench, "role": "reference", "base_method": "stl"}
    if reference.kind == "stl":
        row["method"] = "STL"
        row["n"] = min(reference.n.values()) if reference.n else 0
        row["runs"] = sum(reference.n.values())
        row["trials"] = " ".join(t for ts in reference.trials.values() for t in ts)
    else:
        row["method"] = f"STL ({reference.kind})"
        row["n"] = row["runs"] = 0
    for c in cols:
        row[c.name] = reference.values.get(c.name, math.nan)
        row[f"{c.name}_std"] = reference.std.get(c.name, math.nan)
    return row


def _assemble(
    table: pd.DataFrame, bench: str, absent: list[str], reference: RefInfo | None, cols: list[Col]
) -> pd.DataFrame:
    """The reference row on top, the variants, then one empty row per method not run."""
    columns = list(table.columns)
    extra = [
        {"benchmark": bench, "method": m, "base_method": m, "role": "not run", "n": 0, "runs": 0}
        for m in absent
    ]
    if extra:
        table = pd.concat([table, pd.DataFrame(extra)], ignore_index=True)
    if reference is not None:
        top = pd.DataFrame([_reference_row(reference, cols, bench)])
        table = pd.concat([top, table], ignore_index=True)
    order = FRONT + [c for c in columns if c not in FRONT]
    table = table.reindex(columns=order + [c for c in table.columns if c not in order])
    return table.reset_index(drop=True)


def compute_board(
    df: pd.DataFrame,
    benchmark: str,
    *,
    task_avg: bool = False,
    info: BenchInfo | None = None,
    methods: Iterable[str] = (),
    timing_ls: pd.DataFrame | None = None,
    timing_name: str = "the timing reference",
) -> Board:
    """:func:`leaderboard` as a :class:`Board` (``df`` already :func:`prepare`-d);
    ``timing_ls``: LS runs of a timing reference (:func:`mtlbench.report.timing.time_ratios`)."""
    rows = df[df["benchmark"] == benchmark]
    info = info or bench_info(benchmark, df)
    mtl = rows[rows["mode"] != "stl"]
    done = mtl[mtl["status"] == "done"].copy()
    choice = choose(rows, info)
    notes = [*info.notes, *choice.notes]
    unknown_dir = [c.name for c in info.metrics if c.higher_is_better is None]
    if unknown_dir and choice.shown is not None:
        notes.append(f"Δm% and ranks leave out {', '.join(unknown_dir)} (direction unknown)")
    _delta_m(done, choice, info.ranked, notes)
    ls_label = _ls_label(done, notes)
    timing = time_ratios(done, ls_label, notes, timing_ls, timing_name)
    table = _aggregate(done, mtl, info.metrics, benchmark)
    if not task_avg:
        table = table.drop(columns=[c for c in ("delta_m_task", "delta_m_task_std") if c in table])
    table = _ranked_and_sorted(table, info.ranked)
    present = set(mtl["method"])
    absent = [m for m in dict.fromkeys(methods) if m not in present and m != "stl"]
    if absent:
        notes.append(f"no test runs on {benchmark}: {', '.join(absent)}")
    table = _assemble(table, benchmark, absent, choice.shown, info.metrics)
    if timing:  # only then: a leaderboard timed on one machine keeps its columns
        table["time_x_ls_note"] = table["method"].map(timing).fillna("")
    notes += status_notes(mtl, done, table)
    missing = missing_runs(rows)
    sig = board_significance(done, ls_label)
    if not sig.replicates:  # the toy's starting points are not seeds: no such columns
        table = table.join(sig.table, on="method")
    board = Board(benchmark, table, done, info.metrics, choice.shown, missing, notes, ls_label)
    board.significance, board.timing = sig, timing
    return board


def leaderboard(
    df: pd.DataFrame,
    benchmark: str,
    *,
    task_avg: bool = False,
    info: BenchInfo | None = None,
    methods: Iterable[str] = (),
) -> pd.DataFrame:
    """The leaderboard of one benchmark as numbers: one row per method variant.

    ``df``: :func:`mtlbench.report.read_results`' frame (or
    :func:`mtlbench.records.load_results`'). ``methods``: methods to list as "not run" when the
    benchmark has no record of them.

    Columns: ``method`` (the variant's label), ``base_method``, ``role`` (``reference``,
    ``method`` or ``not run``), ``n`` (done runs), ``runs`` (all runs), ``<metric>`` and
    ``<metric>_std`` per metric, ``delta_m`` and ``delta_m_std`` (and ``delta_m_task`` /
    ``delta_m_task_std`` with ``task_avg``), ``mean_rank``, ``step_x_ls`` / ``total_x_ls``
    (time relative to LS, with ``_std``), ``step_median_s``, ``train_s``, ``seeds``, ``trials``,
    then (unless the runs are replicates other than seeds) the uncertainty of Δm%
    (:data:`mtlbench.report.significance.COLUMNS`): ``delta_m_ci_low`` / ``_high``,
    ``p_improvement`` over LS, Holm-adjusted ``p_vs_best`` / ``p_vs_ls``, ``vs_best`` (best, tie,
    worse) and ``vs_ls`` (better, worse, tie).
    The frame's ``attrs`` hold ``notes`` (list of str), ``reference`` (a :class:`RefInfo` or
    None), ``metrics`` (list of :class:`Col`), ``missing`` (a frame of missing runs), ``ls`` and
    ``significance`` (a :class:`~mtlbench.report.significance.Significance`: note, sentence).
    """
    board = compute_board(prepare(df), benchmark, task_avg=task_avg, info=info, methods=methods)
    table = board.table
    table.attrs = {
        "notes": board.notes,
        "reference": board.reference,
        "metrics": board.metrics,
        "missing": board.missing,
        "ls": board.ls,
        "significance": board.significance,
    }
    return table


def cross_benchmark(boards: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per method: the mean over benchmarks of its mean rank and of its Δm%, with the
    benchmarks each covers: only those where the method has a Δm% (the toy, without a
    reference, ranks 4 methods on a 1-4 scale against 1-10 elsewhere). A method with several
    variants on a benchmark enters with the variant that has most runs (its label is listed)."""
    per: dict[str, dict[str, Any]] = {}
    for bench, board in boards.items():
        methods = board[board["role"] == "method"]
        for base, g in methods.groupby("base_method", sort=False):
            best = best_variant(g)
            entry = per.setdefault(str(base), {"mr": {}, "dm": {}, "variants": []})
            if pd.notna(best.get("mean_rank")) and pd.notna(best.get("delta_m")):
                entry["mr"][bench] = float(best["mean_rank"])
            if pd.notna(best.get("delta_m")):
                entry["dm"][bench] = float(best["delta_m"])
            if len(g) > 1 or "[" in str(best["method"]):
                entry["variants"].append(f"{bench}: {best['method']}")
    rows = []
    for method, e in per.items():
        rows.append(
            {
                "method": method,
                "avg_mean_rank": float(np.mean(list(e["mr"].values()))) if e["mr"] else math.nan,
                "mean_rank_benchmarks": ", ".join(e["mr"]),
                "n_mean_rank": len(e["mr"]),
                "avg_delta_m": float(np.mean(list(e["dm"].values()))) if e["dm"] else math.nan,
                "delta_m_benchmarks": ", ".join(e["dm"]),
                "n_delta_m": len(e["dm"]),
                "variants_used": "; ".join(e["variants"]),
                **{f"mean_rank/{b}": e["mr"].get(b, math.nan) for b in boards},
                **{f"delta_m/{b}": e["dm"].get(b, math.nan) for b in boards},
            }
        )
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.sort_values(
            ["avg_mean_rank", "avg_delta_m"], na_position="last", kind="stable"
        ).reset_index(drop=True)
    return table
