"""Runs without a result (failed, diverged, still running) and the notes that say so.

A value that does not exist is shown as missing, never as zero; these helpers say why.
"""

from __future__ import annotations

import pandas as pd

from mtlbench.report.variants import fmt_setting


def reason(row: pd.Series) -> str:
    """Why a run has no result: its status, with the error or the divergence point."""
    status = row["status"]
    if status == "diverged":
        where = []
        if pd.notna(row.get("diverged_epoch")):
            where.append(f"epoch {int(row['diverged_epoch'])}")
        if pd.notna(row.get("diverged_step")):
            where.append(f"step {int(row['diverged_step'])}")
        return "diverged" + (f" at {', '.join(where)}" if where else "")
    if status == "failed":
        return "failed" + (f" ({row['error']})" if row.get("error") else "")
    if status == "running":
        return "still running, or killed before it finished (no result yet)"
    return f"status {status!r}"


def replicate(row: pd.Series) -> str:
    """The replicate a run is (``seed 0``, ``seed 0, start 3``)."""
    seed = row.get("seed")
    text = f"seed {int(seed)}" if pd.notna(seed) else "seed ?"
    start = row.get("start")
    if pd.notna(start):
        value = int(start) if isinstance(start, float) and start.is_integer() else start
        text += f", start {fmt_setting(value)}"
    return text


def missing_runs(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per run of a benchmark that is not done: multi-task runs, then single-task."""
    frames = []
    for stl in (False, True):
        part = rows[(rows["mode"] == "stl") == stl]
        part = part[part["status"] != "done"]
        if stl and part.empty:
            continue
        frames.append(
            pd.DataFrame(
                {
                    "benchmark": part["benchmark"],
                    "method": part["variant"],
                    "replicate": [replicate(r) for _, r in part.iterrows()],
                    "status": part["status"],
                    "reason": [reason(r) for _, r in part.iterrows()],
                    "trial_id": part["trial_id"],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def status_notes(mtl: pd.DataFrame, done: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """Notes on runs not done per variant, on methods split into variants, and on labels."""
    notes = []
    count = done.groupby("variant", sort=False).size()
    runs = mtl.groupby("variant", sort=False).size()
    for variant, g in mtl[mtl["status"] != "done"].groupby("variant", sort=False):
        what = ", ".join(f"{k} {v}" for k, v in g["status"].value_counts().items())
        n_done = int(count.get(variant, 0))
        notes.append(f"{variant}: {n_done} of {int(runs[variant])} runs done ({what})")
    variants_by_method = mtl.groupby("method", sort=False)["variant"].nunique()
    split = variants_by_method[variants_by_method > 1]
    if len(split):
        notes.append(
            "not averaged together (different settings): "
            + "; ".join(
                f"{m}: {', '.join(sorted(mtl[mtl['method'] == m]['variant'].unique()))}"
                for m in split.index
            )
        )
    labelled = [v for v in table["method"] if "[" in str(v) and str(v).split(" [")[0] not in split]
    if labelled:
        notes.append(
            "settings that differ from the benchmark's usual ones are shown in brackets: "
            + ", ".join(labelled)
        )
    return notes
