"""Load: the records of a results folder as one frame (one row per trial) plus the per-epoch
curves the figures need, and the ``bench*.csv`` tables of ``mtlbench bench``.

Records are read only through :func:`mtlbench.records.scan` and flattened by
:func:`mtlbench.records.to_row`; this module adds what the report needs beside the flat rows (the
curves, kept by row id ``rid``) and keeps one record per trial id.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mtlbench.records import SCHEMA, Record, rows_frame, scan, to_row
from mtlbench.registry import ConfigError
from mtlbench.report.timing import machine


@dataclass
class Results:
    """The records of a results folder: one row per trial, plus what the figures need.

    ``skipped`` lists the JSON files that are not valid records (``path: reason``, paths
    relative to ``root``); ``duplicates`` counts records dropped because their trial id was
    found twice; ``bench_table`` holds the rows of the ``bench*.csv`` files (``bench_notes``:
    the files skipped and why).
    """

    root: Path
    frame: pd.DataFrame
    curves: dict[int, dict[str, Any]]  # row id ("rid") -> train_loss, weights, traj, extra
    skipped: list[str] = field(default_factory=list)
    duplicates: int = 0
    bench_table: pd.DataFrame | None = None
    bench_notes: list[str] = field(default_factory=list)
    records: dict[str, list[Record]] = field(default_factory=dict)  # by benchmark, for notes
    tuning_runs: int = 0  # records of tuning trials (stage "tune"): counted, not tabled
    roots: list[Path] = field(default_factory=list)  # every folder read (:func:`combine`)
    origins: list[str] = field(default_factory=list)  # where records came from, for the page

    @property
    def label(self) -> str:
        """The folders read, for the page: ``results/multimnist + results/mine``."""
        return " + ".join(str(r) for r in self.roots) if len(self.roots) > 1 else str(self.root)


def _bench_files(root: Path) -> list[Path]:
    """The ``bench*.csv`` files under ``root`` (``mtlbench bench`` output), hidden ones skipped."""
    return sorted(
        p
        for p in root.rglob("bench*.csv")
        if not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _curves(rec: Record) -> dict[str, Any]:
    """The curves a figure draws: per-task training loss and weights; for the toy, the
    loss-space trajectory (``curves.val`` L1 / L2) and ``extra`` (start and end points)."""
    curves = rec.get("curves") or {}
    out: dict[str, Any] = {}
    for key in ("train_loss", "weights"):
        value = curves.get(key)
        if isinstance(value, dict) and value:
            out[key] = value
    if (rec.get("config") or {}).get("benchmark") == "toy":
        val = curves.get("val") or {}
        if "L1" in val and "L2" in val:
            out["traj"] = (val["L1"], val["L2"])
        if isinstance(rec.get("extra"), dict):
            out["extra"] = rec["extra"]
    return out


def _tuning(rec: Record) -> str | None:
    """A final run's tuning tag (:mod:`mtlbench.tune`: the configuration its tuning stage
    selected, ``selected``, with the budget, sampler and metric) as sorted JSON; None for a run
    that was not tuned."""
    tag = (rec.get("config") or {}).get("tuning")
    return json.dumps(tag, sort_keys=True) if isinstance(tag, dict) and tag else None


def _one_per_trial(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per trial id: the ``done`` one, then the most recently finished, then the last
    path; rows end in path order. (The copy consolidates the frame's columns first: one block per
    column left by the numeric conversions made pandas warn of a fragmented frame.)"""
    frame = frame.copy().assign(
        _done=frame["status"] == "done", _finished=frame["finished_at"].fillna("").astype(str)
    )
    frame = frame.sort_values(["trial_id", "_done", "_finished", "path"], kind="stable")
    frame = frame.drop_duplicates("trial_id", keep="last").sort_values("path", kind="stable")
    return frame.drop(columns=["_done", "_finished"]).reset_index(drop=True)


def read_results(results_dir: str | Path) -> Results:
    """All records under ``results_dir`` in one pass (raises :class:`ConfigError` when the folder
    is missing or holds no record). A trial id found twice (the same trial in two sweep folders)
    is kept once: its ``done`` record, the most recently finished.

    Parsing stays in one process: with a process pool the rows and curves must be pickled
    back, which costs more than it saves on two cores."""
    root = Path(results_dir)
    try:
        found = scan(root)
    except FileNotFoundError as error:
        raise ConfigError(str(error)) from None
    skipped = [f"{path.relative_to(root).as_posix()}: {why}" for path, why in found.skipped]
    if not found.records:
        raise ConfigError(
            f"no run records ({SCHEMA}) under {root}"
            + (f"; {len(skipped)} other JSON files skipped" if skipped else "")
            + ": run a sweep or `mtlbench run --out` there first"
        )
    rows = [to_row(rec, path.relative_to(root).as_posix()) for path, rec in found.records]
    for rid, (row, (_, rec)) in enumerate(zip(rows, found.records, strict=True)):
        row["rid"] = rid
        row["tuning"] = _tuning(rec)
        row["machine"] = machine(rec)
    curves = {rid: _curves(rec) for rid, (_, rec) in enumerate(found.records)}
    frame = _one_per_trial(rows_frame(rows))
    n = len(frame)
    tuning = frame["stage"] == "tune"
    frame = frame[~tuning].reset_index(drop=True)
    results = Results(root, frame, curves, skipped, duplicates=len(rows) - n, roots=[root])
    results.tuning_runs = int(tuning.sum())
    for _, rec in found.records:
        bench = str((rec.get("config") or {}).get("benchmark") or "?")
        results.records.setdefault(bench, []).append(rec)
    results.bench_table, results.bench_notes = read_bench_csv(_bench_files(root), root)
    return results


def _bench_table(path: Path, rel: str) -> pd.DataFrame | str:
    """One ``bench.csv`` normalised (``method, K, step_median_s, workload, source``), or why
    it is skipped."""
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as error:
        return f"{rel}: not readable as CSV ({type(error).__name__})"
    table.columns = [str(c).strip() for c in table.columns]
    lower = {c.lower(): c for c in table.columns}
    rename = {lower[k]: k for k in ("method", "workload", "step_median_s") if k in lower}
    if "k" in lower:
        rename[lower["k"]] = "K"
    table = table.rename(columns=rename)
    need = [c for c in ("method", "K", "step_median_s") if c not in table.columns]
    if need:
        return f"{rel}: skipped, no column {', '.join(need)}"
    if "workload" not in table.columns:
        table["workload"] = path.parent.name
    table["K"] = pd.to_numeric(table["K"], errors="coerce")
    table["step_median_s"] = pd.to_numeric(table["step_median_s"], errors="coerce")
    table = table.dropna(subset=["K", "step_median_s"])
    table["source"] = rel
    return table


def read_bench_csv(paths: Sequence[Path], root: Path) -> tuple[pd.DataFrame | None, list[str]]:
    """Rows of ``bench.csv`` files (``mtlbench bench``): needs ``method``, ``K`` and
    ``step_median_s``; ``workload`` defaults to the file's folder name. Other columns are kept."""
    tables, notes = [], []
    for path in paths:
        table = _bench_table(path, path.relative_to(root).as_posix())
        if isinstance(table, str):
            notes.append(table)
        else:
            tables.append(table)
    if not tables:
        return None, notes
    return pd.concat(tables, ignore_index=True), notes


def combine(parts: Sequence[Results]) -> Results:
    """Several folders' :class:`Results` as one: rows and curves (row ids renumbered), records,
    skipped files and bench tables; paths are prefixed with their folder. A trial id found in
    two folders is kept once (:func:`_one_per_trial`)."""
    frames, curves, skipped, records = [], {}, [], {}
    offset = 0
    for part in parts:
        frame = part.frame.copy()
        frame["path"] = part.root.as_posix() + "/" + frame["path"].astype(str)
        frame["rid"] = frame["rid"] + offset
        frames.append(frame)
        curves.update({rid + offset: c for rid, c in part.curves.items()})
        offset += max(part.curves, default=-1) + 1
        skipped += [f"{part.root.as_posix()}/{line}" for line in part.skipped]
        for bench, recs in part.records.items():
            records.setdefault(bench, []).extend(recs)
    for bench, recs in records.items():  # one per trial id, its done record first
        ordered = sorted(recs, key=lambda r: r.get("status") == "done", reverse=True)
        records[bench] = list({str(r.get("trial_id")): r for r in reversed(ordered)}.values())
    frame = pd.concat(frames, ignore_index=True)
    kept = _one_per_trial(frame)
    tables = [p.bench_table for p in parts if p.bench_table is not None]
    return Results(
        parts[0].root,
        kept,
        curves,
        skipped,
        duplicates=sum(p.duplicates for p in parts) + len(frame) - len(kept),
        bench_table=pd.concat(tables, ignore_index=True) if tables else None,
        bench_notes=[note for p in parts for note in p.bench_notes],
        records=records,
        tuning_runs=sum(p.tuning_runs for p in parts),
        roots=[root for p in parts for root in p.roots],
        origins=[origin for p in parts for origin in p.origins],
    )
