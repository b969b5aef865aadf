"""Reports from stored run records: leaderboards, runtime tables and figures, one folder.

``build_report(results_dir, out_dir, formats)`` reads every record under ``results_dir`` (and any
``bench.csv`` written by ``mtlbench bench``) and writes ``out_dir/index.md`` (plus
``index.html``), ``figures/*.png`` and, on request, ``tables/*.tex`` (booktabs) and
``tables/*.csv`` (raw numbers). Nothing is typed in: every number comes from the records, from a
benchmark's published reference, or from the LDC-MTL paper's numbers shipped as data
(``mtlbench/data/ldc_mtl_published.csv``, one row per number with its source).

How the numbers are made (``docs/reports.md`` says the same for users):

* **Variants.** Records of one benchmark are grouped by method, hyper-parameters, protocol and
  trainer policies; different settings are never averaged together. A variant is labelled with
  the keys that set it apart (``ldc_mtl [lr=0.0003]``): protocol and policy keys that differ from
  the benchmark's most common setting, hyper-parameters that differ between the variants of the
  method. Protocol keys that index replicates (the toy's initial point ``start``) are not
  variants: such runs are replicates like seeds.
* **Δm%** is recomputed for every record from its test metrics and the reference (the record's
  own ``delta_m`` is only cross-checked): the benchmark's published reference when it has one,
  else the single-task (``mode == "stl"``) records of the same results folder with the same
  data protocol (mean over seeds per metric), else, for a benchmark this installation does not
  know, the reference stored in the records. Per seed first, then mean ± sample standard
  deviation (ddof = 1) over seeds. Metric-averaged by default (protocols.md section 3.1),
  task-averaged on request; both positive = worse than the reference.
* **Mean rank** (MR): per metric, variants ranked on their means (1 = best, ties share the
  lowest rank, :func:`mtlbench.metrics.mean_rank`), averaged over metrics.
* **Time × LS**: the variant's mean over seeds of the per-step median (``timing.step_median_s``)
  or of the total training time (``timing.train_s``), divided by LS's mean on the same
  benchmark (the LS variant with the most runs).
* **Missing** values are shown as ``—``, never as zero, and the report lists every run that is
  missing and why (failed with its error, diverged with its step, still running).

Reading is done here, not with :func:`mtlbench.records.load_results`, to keep the per-epoch
curves the figures need in the same single pass over the files (and to skip per-file warnings:
unreadable files are counted and listed in the report).
"""

from __future__ import annotations

import html
import json
import math
import multiprocessing
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtlbench import references
from mtlbench.metrics import delta_m_frame
from mtlbench.records import REPLICATE_KEYS, SCHEMA, first_line, rows_frame, scan, to_row
from mtlbench.registry import ConfigError

FORMATS = ("md", "tex", "csv", "html")
MISSING = "—"
PUBLISHED_CSV = Path(__file__).parent / "data" / "ldc_mtl_published.csv"
MAX_METRIC_COLUMNS = 12  # wider benchmarks (CelebA, QM9) get a separate per-metric table
MAX_LISTED = 50  # missing runs listed on the index page (all of them go to the CSV)
MAX_LINES = 20  # methods per training-dynamics figure
MAX_TOY_RUNS = 3  # trajectories per (method, initial point) drawn on the toy figure
MAX_WORKERS = 4  # processes that draw figures (one per core, at most this)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


@dataclass
class Results:
    """The records of a results folder: one row per trial, plus what the figures need."""

    root: Path
    frame: pd.DataFrame
    curves: dict[int, dict[str, Any]]  # row id ("rid") -> train_loss, weights, traj, extra
    skipped: list[str] = field(default_factory=list)
    duplicates: int = 0
    bench_table: pd.DataFrame | None = None
    bench_notes: list[str] = field(default_factory=list)


def _bench_files(root: Path) -> list[Path]:
    """The ``bench*.csv`` files under ``root`` (``mtlbench bench`` output), hidden ones skipped."""
    return sorted(
        p
        for p in root.rglob("bench*.csv")
        if not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _curves(rec: dict[str, Any]) -> dict[str, Any]:
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


def read_results(results_dir: str | Path) -> Results:
    """All records under ``results_dir`` in one pass (raises :class:`ConfigError` when the folder
    is missing or holds no record). A trial id found twice (the same trial in two sweep folders)
    is kept once: its ``done`` record, the most recently finished.

    Parsing stays in one process: with a process pool the records' rows and curves must be
    pickled back, and on two busy cores that cost more than it saved."""
    root = Path(results_dir)
    try:
        found = scan(root)
    except FileNotFoundError as error:
        raise ConfigError(str(error)) from None
    rows = [to_row(rec, path.relative_to(root).as_posix()) for path, rec in found.records]
    for rid, row in enumerate(rows):
        row["rid"] = rid
    curves = {rid: _curves(rec) for rid, (_, rec) in enumerate(found.records)}
    skipped = [f"{path.relative_to(root).as_posix()}: {why}" for path, why in found.skipped]
    bench_files = _bench_files(root)
    if not rows:
        raise ConfigError(
            f"no run records ({SCHEMA}) under {root}"
            + (f"; {len(skipped)} other JSON files skipped" if skipped else "")
            + ": run a sweep or `mtlbench run --out` there first"
        )
    frame = rows_frame(rows)
    n = len(frame)
    frame["_done"] = frame["status"] == "done"
    frame["_finished"] = frame["finished_at"].fillna("").astype(str)
    frame = frame.sort_values(["trial_id", "_done", "_finished", "path"], kind="stable")
    frame = frame.drop_duplicates("trial_id", keep="last").sort_values("path", kind="stable")
    frame = frame.drop(columns=["_done", "_finished"]).reset_index(drop=True)
    results = Results(root, frame, curves, skipped, duplicates=n - len(frame))
    results.bench_table, results.bench_notes = read_bench_csv(bench_files, root)
    return results


def read_bench_csv(paths: Sequence[Path], root: Path) -> tuple[pd.DataFrame | None, list[str]]:
    """Rows of ``bench.csv`` files (``mtlbench bench``): needs ``method``, ``K`` and
    ``step_median_s``; ``workload`` defaults to the file's folder name. Other columns are kept."""
    tables, notes = [], []
    for path in paths:
        rel = path.relative_to(root).as_posix()
        try:
            table = pd.read_csv(path)
        except (OSError, ValueError) as error:
            notes.append(f"{rel}: not readable as CSV ({type(error).__name__})")
            continue
        table.columns = [str(c).strip() for c in table.columns]
        lower = {c.lower(): c for c in table.columns}
        rename = {lower[k]: k for k in ("method", "workload", "step_median_s") if k in lower}
        if "k" in lower:
            rename[lower["k"]] = "K"
        table = table.rename(columns=rename)
        need = [c for c in ("method", "K", "step_median_s") if c not in table.columns]
        if need:
            notes.append(f"{rel}: skipped, no column {', '.join(need)}")
            continue
        if "workload" not in table.columns:
            table["workload"] = path.parent.name
        table["K"] = pd.to_numeric(table["K"], errors="coerce")
        table["step_median_s"] = pd.to_numeric(table["step_median_s"], errors="coerce")
        table = table.dropna(subset=["K", "step_median_s"])
        table["source"] = rel
        tables.append(table)
    if not tables:
        return None, notes
    return pd.concat(tables, ignore_index=True), notes


# ---------------------------------------------------------------------------------------------
# Benchmarks: metrics, references
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Col:
    """One metric as the report sees it (``higher_is_better`` None when it cannot be told)."""

    name: str
    task: str
    higher_is_better: bool | None
    unit: str = ""

    @property
    def arrow(self) -> str:
        return {True: " ↑", False: " ↓"}.get(self.higher_is_better, " (?)")  # type: ignore[arg-type]


@dataclass
class BenchInfo:
    name: str
    metrics: list[Col]
    known: bool
    published: Any | None = None  # a mtlbench.benchmark.Reference
    notes: list[str] = field(default_factory=list)

    @property
    def ranked(self) -> list[Col]:
        """The metrics with a known direction (those that enter Δm% and ranks)."""
        return [m for m in self.metrics if m.higher_is_better is not None]


_HIGHER = (
    "acc",
    "accuracy",
    "f1",
    "iou",
    "miou",
    "pixacc",
    "within",
    "auc",
    "precision",
    "recall",
    "r2",
    "ap",
    "map",
    "top1",
    "top5",
)
_LOWER = (
    "err",
    "error",
    "loss",
    "mae",
    "mse",
    "rmse",
    "nll",
    "ce",
    "l1",
    "l2",
    "abs",
    "rel",
    "mean",
    "median",
)


def guess_direction(name: str) -> bool | None:
    """Higher-is-better guessed from a metric's name, for benchmarks this installation does not
    know (``left_acc`` -> True, ``depth_abs_err`` -> False); None when the name does not say."""
    tokens = [t for t in re.split(r"[^a-z0-9]+|_", name.lower()) if t]
    if any(t in _HIGHER or t.endswith("acc") for t in tokens):
        return True
    if any(t in _LOWER or t.endswith("err") for t in tokens):
        return False
    return None


def bench_info(name: str, frame: pd.DataFrame) -> BenchInfo:
    """What the benchmark class says about its metrics and reference; when the class is not
    registered here, what the records say (metrics from the test metrics, tasks from the STL
    records, directions guessed from the names), with a note."""
    try:
        from mtlbench import benchmark as benchmarks

        cls = benchmarks.get(name)
    except ConfigError:  # an unknown name
        return _inferred_info(name, frame, "")
    except Exception as error:  # a benchmark module failing to import
        return _inferred_info(name, frame, f" ({type(error).__name__}: {first_line(error)})")
    info = BenchInfo(
        name, [Col(m.name, m.task, m.higher_is_better, m.unit) for m in cls.metrics], True
    )
    try:
        info.published = cls(cls.default_protocol()).reference()
    except Exception as error:  # a benchmark whose constructor needs more than its protocol
        info.notes.append(
            f"could not ask {name} for its published reference "
            f"({type(error).__name__}: {first_line(error)})"
        )
    return info


def _inferred_info(name: str, frame: pd.DataFrame, why: str) -> BenchInfo:
    rows = frame[(frame["benchmark"] == name) & (frame["status"] == "done")]
    test_cols = [c for c in rows.columns if c.startswith("test/") and rows[c].notna().any()]
    task_of: dict[str, str] = {}
    for task, g in rows[rows["mode"] == "stl"].groupby("task", sort=False):
        for c in test_cols:
            if g[c].notna().any():
                task_of.setdefault(c[5:], str(task))
    if task_of:
        names = [c[5:] for c in test_cols if c[5:] in task_of]
        how = "the single-task records"
    else:
        stored: list[str] = []
        for text in rows["stored_reference"].dropna().unique():
            stored.extend(k for k in json.loads(text) if k not in stored)
        names = (
            [c[5:] for c in test_cols if c[5:] in stored] if stored else [c[5:] for c in test_cols]
        )
        how = "the reference stored in the records" if stored else "the records' test metrics"
    train_tasks = [t for s in rows["train_tasks"].unique() for t in str(s).split(",") if t]
    cols = []
    for metric in names:
        task = task_of.get(metric) or next(
            (t for t in dict.fromkeys(train_tasks) if metric.startswith(t)), metric
        )
        cols.append(Col(metric, task, guess_direction(metric)))
    unknown_dir = [c.name for c in cols if c.higher_is_better is None]
    notes = [
        f"benchmark {name!r} is not registered in this installation{why}: its metrics are "
        f"taken from {how}, and their directions guessed from their names"
        + (
            f"; direction unknown (left out of Δm% and ranks): {', '.join(unknown_dir)}"
            if unknown_dir
            else ""
        )
    ]
    return BenchInfo(name, cols, False, None, notes)


@dataclass
class RefInfo:
    """The reference of a leaderboard: values per metric and where they come from."""

    kind: str  # "published" | "stl" | "stored"
    values: dict[str, float]
    source: str
    std: dict[str, float] = field(default_factory=dict)
    n: dict[str, int] = field(default_factory=dict)  # seeds per task (STL)
    trials: dict[str, list[str]] = field(default_factory=dict)
    key: str = ""


def _parse(text: str, cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if text not in cache:
        try:
            cache[text] = json.loads(text) if text else {}
        except (TypeError, ValueError):
            cache[text] = {}
    return cache[text]


def stl_references(rows: pd.DataFrame, info: BenchInfo) -> dict[str, RefInfo | str]:
    """:func:`mtlbench.references.stl_references` of one benchmark's rows, as the report's
    :class:`RefInfo` (or the reason a data protocol has none)."""
    out: dict[str, RefInfo | str] = {}
    for key, ref in references.stl_references(rows, info.metrics).items():
        if isinstance(ref, str):
            out[key] = ref
            continue
        d = ref.details
        out[key] = RefInfo("stl", ref.values, ref.source, d["std"], d["n"], d["trials"], key)
    return out


# ---------------------------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------------------------


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def label_variants(df: pd.DataFrame) -> pd.Series:
    """A display label per row: the method, plus the settings that set its variant apart.

    Within a benchmark, protocol and policy keys are shown where they differ from the
    benchmark's most common value (by number of records); hyper-parameters where they differ
    between the variants of the same method. STL rows are labelled ``stl:<task>``.
    """
    labels = pd.Series(df["method"].astype(str), index=df.index, dtype=object)
    stl = df["mode"] == "stl"
    labels[stl] = "stl:" + df.loc[stl, "task"].astype(str)
    cache: dict[str, dict[str, Any]] = {}
    mtl = df[~stl]
    for _, g in mtl.groupby("benchmark", sort=False):
        modal = {
            col: _parse(g[col].value_counts().idxmax(), cache) for col in ("protocol", "policies")
        }
        combos = g.groupby(["method", "hparams", "protocol", "policies"], sort=False).size()
        by_method: dict[str, list[tuple[str, str, str]]] = {}
        for method, hp, proto, pol in combos.index:
            by_method.setdefault(method, []).append((hp, proto, pol))
        names: dict[tuple[str, str, str, str], str] = {}
        for method, variants in by_method.items():
            hps = [_parse(v[0], cache) for v in variants]
            hp_keys = sorted({k for d in hps for k in d})
            varying = [k for k in hp_keys if len({_fmt_value(d.get(k)) for d in hps}) > 1]
            for (hp, proto, pol), hpd in zip(variants, hps, strict=True):
                parts = []
                for col, text in (("protocol", proto), ("policies", pol)):
                    d, m = _parse(text, cache), modal[col]
                    for k in sorted(set(d) | set(m)):
                        if _fmt_value(d.get(k)) != _fmt_value(m.get(k)):
                            parts.append(f"{k}={_fmt_value(d.get(k))}")
                parts += [f"{k}={_fmt_value(hpd.get(k))}" for k in varying]
                names[(method, hp, proto, pol)] = (
                    f"{method} [{', '.join(parts)}]" if parts else str(method)
                )
        key = list(zip(g["method"], g["hparams"], g["protocol"], g["policies"], strict=True))
        labels[g.index] = [names[k] for k in key]
    return labels


def _prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Accept :func:`mtlbench.records.load_results` frames as well as :func:`read_results`'."""
    df = df.copy()
    if "start" not in df:
        cache: dict[str, dict[str, Any]] = {}
        df["start"] = df["protocol"].map(lambda p: _parse(p, cache).get("start"))
        df["protocol"] = df["protocol"].map(
            lambda p: json.dumps(
                {k: v for k, v in _parse(p, cache).items() if k not in REPLICATE_KEYS},
                sort_keys=True,
            )
        )
    for col, default in (
        ("stored_reference", None),
        ("error", None),
        ("train_tasks", ""),
        ("diverged_epoch", math.nan),
        ("rid", -1),
    ):
        if col not in df:
            df[col] = default
    if "variant" not in df:
        df["variant"] = label_variants(df)
    return df


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------


def _reason(row: pd.Series) -> str:
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


def _replicate(row: pd.Series) -> str:
    seed = row.get("seed")
    text = f"seed {int(seed)}" if pd.notna(seed) else "seed ?"
    if pd.notna(row.get("start")):
        text += f", start {row['start']}"
    return text


def leaderboard(
    df: pd.DataFrame,
    benchmark: str,
    *,
    task_avg: bool = False,
    info: BenchInfo | None = None,
    methods: Iterable[str] = (),
) -> pd.DataFrame:
    """The leaderboard of one benchmark as numbers: one row per method variant.

    ``df``: :func:`read_results`'s frame (or :func:`mtlbench.records.load_results`'s).
    ``methods``: methods to list as "not run" when the benchmark has no record of them.

    Columns: ``method`` (the variant's label), ``base_method``, ``role`` (``reference``,
    ``method`` or ``not run``), ``n`` (done runs), ``runs`` (all runs), ``<metric>`` and
    ``<metric>_std`` per metric, ``delta_m`` and ``delta_m_std`` (and ``delta_m_task`` /
    ``delta_m_task_std`` with ``task_avg``), ``mean_rank``, ``step_x_ls`` / ``total_x_ls``
    (time relative to LS, with ``_std``), ``step_median_s``, ``train_s``, ``seeds``, ``trials``.
    The frame's ``attrs`` hold ``notes`` (list of str), ``reference`` (a :class:`RefInfo` or
    None), ``metrics`` (list of :class:`Col`) and ``missing`` (a frame of missing runs).
    """
    from mtlbench.metrics import mean_rank

    df = _prepare(df)
    rows = df[df["benchmark"] == benchmark]
    info = info or bench_info(benchmark, df)
    notes = list(info.notes)
    cols = info.metrics
    ranked = info.ranked
    mtl = rows[rows["mode"] != "stl"]
    done = mtl[mtl["status"] == "done"].copy()

    # --- references, per variant ---
    refs: dict[str, RefInfo | None] = {}
    stl_refs = stl_references(rows, info) if info.published is None else {}
    published = None
    if info.published is not None:
        published = RefInfo("published", dict(info.published.values), info.published.source)
        n_stl = int((rows["mode"] == "stl").sum())
        if n_stl:
            notes.append(
                f"{n_stl} single-task record(s) in the folder are not used for Δm%: "
                "the benchmark's published reference is"
            )
    stored = None
    if published is None and not stl_refs and not info.known:
        texts = done["stored_reference"].dropna().unique()
        if len(texts) == 1:
            sources = done["stored_reference_source"].dropna().unique()
            source = sources[0] if len(sources) else "source not recorded"
            stored = RefInfo(
                "stored", json.loads(texts[0]), f"as stored in the records' delta_m ({source})"
            )
        elif len(texts) > 1:
            notes.append("the records store different references; none is used")
    variant_proto = mtl.groupby("variant", sort=False)["protocol"].first()
    no_ref: dict[str, str] = {}  # variant -> why it has no reference
    for variant, proto in variant_proto.items():
        if published is not None:
            refs[variant] = published
        elif stored is not None:
            refs[variant] = stored
        elif stl_refs:
            key = references.data_key(proto)
            found = stl_refs.get(key)
            if found is None and len(stl_refs) == 1:
                found = next(iter(stl_refs.values()))
                if isinstance(found, RefInfo):
                    notes.append(
                        f"{variant}: its data protocol differs from the STL records'; "
                        f"Δm% uses the only STL reference there is"
                    )
            if isinstance(found, str):
                no_ref[variant] = found
                found = None
            elif found is None:
                no_ref[variant] = "no STL record with the same data protocol"
            refs[variant] = found
        else:
            refs[variant] = None
    reasons = set(no_ref.values())
    if len(reasons) == 1 and len(no_ref) == len(variant_proto):
        notes.append(f"no Δm%: {reasons.pop()}")
    else:
        notes += [f"{variant}: no Δm% ({why})" for variant, why in no_ref.items()]
    used = list({id(r): r for r in refs.values() if r is not None}.values())
    reference = (
        used[0]
        if used
        else (
            published
            or stored
            or next((r for r in stl_refs.values() if isinstance(r, RefInfo)), None)
        )
    )
    if len(used) > 1:
        notes.append(f"{len(used)} different STL references are used (one per data protocol)")
    if reference is None and not mtl.empty and not stl_refs:
        notes.append(
            "no Δm%: the benchmark has no published reference and the results folder no "
            "single-task (stl) records for all its tasks"
        )
    unknown_dir = [c.name for c in cols if c.higher_is_better is None]
    if unknown_dir and reference is not None:
        notes.append(f"Δm% and ranks leave out {', '.join(unknown_dir)} (direction unknown)")

    # --- per-record Δm% and time ratios ---
    done["_dm"] = math.nan
    done["_dmt"] = math.nan
    for variant, idx in done.groupby("variant", sort=False).groups.items():
        ref = refs.get(variant)
        if ref is None:
            continue
        lacking = [c.name for c in ranked if not np.isfinite(ref.values.get(c.name, math.nan))]
        if lacking:
            notes.append(f"{variant}: no Δm% (reference lacks {', '.join(lacking)})")
            continue
        m_avg, t_avg = delta_m_frame(done.loc[idx], ref.values, ranked)
        done.loc[idx, "_dm"] = m_avg
        done.loc[idx, "_dmt"] = t_avg
    stored_dm = done["delta_m"]
    both = stored_dm.notna() & done["_dm"].notna()
    diff = (stored_dm[both] - done.loc[both, "_dm"]).abs()
    bad = diff > 1e-6 * np.maximum(1.0, done.loc[both, "_dm"].abs())
    if bad.any():
        notes.append(
            f"{int(bad.sum())} of {int(both.sum())} records carry a stored Δm% that differs from "
            f"the recomputed one (largest gap {diff.max():.3g}; e.g. computed against another "
            "reference); the table shows the recomputed values"
        )

    ls_variants = done[done["method"] == "ls"]["variant"].value_counts()
    ls_label = ls_variants.index[0] if len(ls_variants) else None
    if ls_label is None:
        if not done.empty:
            notes.append("no time × LS: no done LS run on this benchmark")
        ls_step = ls_total = math.nan
    else:
        ls = done[done["variant"] == ls_label]
        ls_step, ls_total = ls["step_median_s"].mean(), ls["train_s"].mean()
        if len(ls_variants) > 1:
            notes.append(f"time × LS is relative to {ls_label} (the LS variant with most runs)")
    done["_step_x"] = done["step_median_s"] / ls_step
    done["_total_x"] = done["train_s"] / ls_total

    # --- aggregate over seeds ---
    value_cols = {f"test/{c.name}": c.name for c in cols}
    for c in value_cols:
        if c not in done:
            done[c] = math.nan
    agg_cols = [*value_cols, "_dm", "_dmt", "_step_x", "_total_x", "step_median_s", "train_s"]
    grouped = done.groupby("variant", sort=False)[agg_cols]
    mean, std = grouped.mean(), grouped.std(ddof=1)
    count = done.groupby("variant", sort=False).size()
    runs = mtl.groupby("variant", sort=False).size()
    base = mtl.groupby("variant", sort=False)["method"].first()
    seeds = done.groupby("variant", sort=False)["seed"].agg(
        lambda s: ",".join(str(int(x)) for x in sorted(s.dropna().unique()))
    )
    trials = done.groupby("variant", sort=False)["trial_id"].agg(lambda s: " ".join(sorted(s)))
    out_rows = []
    for variant in runs.index:
        r: dict[str, Any] = {
            "benchmark": benchmark,
            "method": variant,
            "base_method": base[variant],
            "role": "method",
            "n": int(count.get(variant, 0)),
            "runs": int(runs[variant]),
        }
        have = variant in mean.index
        for c, name in value_cols.items():
            r[name] = mean.at[variant, c] if have else math.nan
            r[f"{name}_std"] = std.at[variant, c] if have else math.nan
        for src, dst in (
            ("_dm", "delta_m"),
            ("_dmt", "delta_m_task"),
            ("_step_x", "step_x_ls"),
            ("_total_x", "total_x_ls"),
        ):
            r[dst] = mean.at[variant, src] if have else math.nan
            r[f"{dst}_std"] = std.at[variant, src] if have else math.nan
        r["step_median_s"] = mean.at[variant, "step_median_s"] if have else math.nan
        r["train_s"] = mean.at[variant, "train_s"] if have else math.nan
        r["seeds"] = seeds.get(variant, "")
        r["trials"] = trials.get(variant, "")
        out_rows.append(r)
    table = pd.DataFrame(out_rows)
    if table.empty:
        table = pd.DataFrame(columns=["benchmark", "method", "base_method", "role", "n", "runs"])
    if not task_avg:
        table = table.drop(columns=[c for c in ("delta_m_task", "delta_m_task_std") if c in table])

    # --- mean rank over metrics ---
    if ranked and not table.empty:
        metric_table = _tie_round(table.set_index("method")[[c.name for c in ranked]])
        table["mean_rank"] = mean_rank(
            metric_table, {c.name: bool(c.higher_is_better) for c in ranked}
        ).to_numpy()
    else:
        table["mean_rank"] = math.nan

    # --- order: best Δm% first, then mean rank; not-run methods last ---
    if not table.empty:
        sort_by = [c for c in ("delta_m", "mean_rank") if c in table]
        table = table.sort_values(sort_by, na_position="last", kind="stable")
    present = set(base.values)
    absent = [m for m in dict.fromkeys(methods) if m not in present and m != "stl"]
    extra = [
        {
            "benchmark": benchmark,
            "method": m,
            "base_method": m,
            "role": "not run",
            "n": 0,
            "runs": 0,
        }
        for m in absent
    ]
    if extra:
        table = pd.concat([table, pd.DataFrame(extra)], ignore_index=True)
        notes.append(f"not run on {benchmark}: {', '.join(absent)}")

    # --- the reference row ---
    if reference is not None:
        ref_row: dict[str, Any] = {"benchmark": benchmark, "role": "reference"}
        if reference.kind == "stl":
            ref_row["method"] = "STL"
            ref_row["n"] = min(reference.n.values()) if reference.n else 0
            ref_row["runs"] = sum(reference.n.values())
            ref_row["trials"] = " ".join(t for ts in reference.trials.values() for t in ts)
        else:
            ref_row["method"] = f"STL ({reference.kind})"
            ref_row["n"] = ref_row["runs"] = 0
        ref_row["base_method"] = "stl"
        for c in cols:
            ref_row[c.name] = reference.values.get(c.name, math.nan)
            ref_row[f"{c.name}_std"] = reference.std.get(c.name, math.nan)
        table = pd.concat([pd.DataFrame([ref_row]), table], ignore_index=True)

    # --- missing runs ---
    not_done = mtl[mtl["status"] != "done"]
    missing = pd.DataFrame(
        {
            "benchmark": benchmark,
            "method": not_done["variant"],
            "replicate": [_replicate(r) for _, r in not_done.iterrows()],
            "status": not_done["status"],
            "reason": [_reason(r) for _, r in not_done.iterrows()],
            "trial_id": not_done["trial_id"],
        }
    )
    stl_missing = rows[(rows["mode"] == "stl") & (rows["status"] != "done")]
    if not stl_missing.empty:
        missing = pd.concat(
            [
                missing,
                pd.DataFrame(
                    {
                        "benchmark": benchmark,
                        "method": stl_missing["variant"],
                        "replicate": [_replicate(r) for _, r in stl_missing.iterrows()],
                        "status": stl_missing["status"],
                        "reason": [_reason(r) for _, r in stl_missing.iterrows()],
                        "trial_id": stl_missing["trial_id"],
                    }
                ),
            ],
            ignore_index=True,
        )
    for variant, g in not_done.groupby("variant", sort=False):
        counts = g["status"].value_counts()
        what = ", ".join(f"{k} {v}" for k, v in counts.items())
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
    front = ["benchmark", "method", "base_method", "role", "n", "runs"]
    order = front + [c for c in (out_rows[0] if out_rows else {}) if c not in front]
    table = table.reindex(columns=order + [c for c in table.columns if c not in order])
    table = table.reset_index(drop=True)
    table.attrs = {
        "notes": notes,
        "reference": reference,
        "metrics": cols,
        "missing": missing,
        "ls": ls_label,
    }
    return table


def cross_benchmark(boards: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per method: the mean over benchmarks of its mean rank and of its Δm%, with the
    benchmarks each covers. A method with several variants on a benchmark enters with the
    variant that has most runs (its label is listed)."""
    per: dict[str, dict[str, Any]] = {}
    for bench, board in boards.items():
        methods = board[board["role"] == "method"]
        for base, g in methods.groupby("base_method", sort=False):
            best = g.sort_values("n", ascending=False, kind="stable").iloc[0]
            entry = per.setdefault(str(base), {"mr": {}, "dm": {}, "variants": []})
            if pd.notna(best.get("mean_rank")):
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


def load_published(path: Path | None = None) -> pd.DataFrame:
    """The LDC-MTL paper's numbers (``mtlbench/data/ldc_mtl_published.csv``): one row per number
    with ``benchmark, method, paper_label, quantity, value, paper_text, unit, source``.
    ``quantity`` is a metric name of this suite (values in this suite's units), ``delta_m``,
    ``time_rel_ls`` or ``train_s``."""
    return pd.read_csv(path or PUBLISHED_CSV)


def published_comparison(board: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """This suite's numbers beside the paper's, per method, with the difference (ours − paper).

    Time × LS is compared with total training time (the paper does not say per-step or total);
    the toy's published seconds become a ratio to the paper's LS seconds.
    """
    bench = board["benchmark"].iloc[0] if len(board) else ""
    pub = published[published["benchmark"] == bench]
    if pub.empty:
        return pd.DataFrame()
    quantities = list(dict.fromkeys(pub["quantity"]))
    if "train_s" in quantities:
        ls_s = pub[(pub["quantity"] == "train_s") & (pub["method"] == "ls")]["value"]
        if len(ls_s):
            extra = pub[pub["quantity"] == "train_s"].assign(
                quantity="time_rel_ls", value=lambda d: d["value"] / float(ls_s.iloc[0])
            )
            pub = pd.concat([pub[pub["quantity"] != "train_s"], extra], ignore_index=True)
            quantities = [q if q != "train_s" else "time_rel_ls" for q in quantities]
    ours_col = {"delta_m": "delta_m", "time_rel_ls": "total_x_ls"}
    board = board[board["role"] != "not run"]
    mine = {}
    for _, r in board.iterrows():
        key = "stl" if r["role"] == "reference" else r["base_method"]
        if key not in mine or r["n"] > mine[key]["n"]:
            mine[key] = r
    methods = list(dict.fromkeys([*pub["method"], *mine]))
    rows = []
    for m in methods:
        row: dict[str, Any] = {"method": m}
        ours = mine.get(m)
        row["ours_label"] = ours["method"] if ours is not None else ""
        labels = pub[pub["method"] == m]["paper_label"]
        row["paper_label"] = labels.iloc[0] if len(labels) else ""
        for q in quantities:
            p = pub[(pub["method"] == m) & (pub["quantity"] == q)]["value"]
            paper = float(p.iloc[0]) if len(p) else math.nan
            col = ours_col.get(q, q)
            mine_v = (
                float(ours[col])
                if ours is not None and col in ours and pd.notna(ours[col])
                else math.nan
            )
            row[f"{q}/ours"] = mine_v
            row[f"{q}/paper"] = paper
            row[f"{q}/diff"] = mine_v - paper
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs = {"quantities": quantities, "sources": list(dict.fromkeys(pub["source"]))}
    return table


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


def fmt_sig(x: Any, sig: int = 4) -> str:
    """``x`` with ``sig`` significant digits in fixed notation; ``—`` when missing."""
    decimals = _decimals(x, sig)
    return MISSING if decimals is None else f"{float(x):.{decimals}f}"


def _decimals(x: Any, sig: int) -> int | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(v):
        return None
    if v == 0:
        return sig - 1
    return max(sig - 1 - math.floor(math.log10(abs(v))), 0)


def fmt_pm(mean: Any, std: Any, *, decimals: int | None = None, sig: int = 4) -> str:
    """``mean ± std`` (the std with the mean's decimals); the mean alone when std is missing."""
    d = decimals if decimals is not None else _decimals(mean, sig)
    try:
        m = float(mean)
    except (TypeError, ValueError):
        return MISSING
    if d is None or not math.isfinite(m):
        return MISSING
    text = f"{m:.{d}f}"
    try:
        s = float(std)
    except (TypeError, ValueError):
        return text
    return f"{text} ± {s:.{d}f}" if math.isfinite(s) else text


def _int(x: Any) -> int:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return 0
    return int(v) if math.isfinite(v) else 0


@dataclass
class Cell:
    text: str
    mark: str = ""  # "best" | "second" | ""


@dataclass
class Table:
    """A rendered table: display cells (with best / second marks) and, for CSV, raw numbers."""

    name: str
    headers: list[str]
    rows: list[list[Cell]]
    data: pd.DataFrame | None = None
    caption: str = ""


def _tie_round(values: Any) -> Any:
    """Values rounded to 10 significant digits, so that means equal up to float noise
    ((0.6 + 0.6 + 0.9) / 3 against 0.7) tie in ranks and marks."""

    def one(x: float) -> float:
        return float(f"{x:.10g}") if math.isfinite(x) else x

    if isinstance(values, pd.DataFrame):
        return values.astype(float).map(one)
    return pd.Series(values, dtype=float).map(one)


def marks(values: Sequence[float], lower_is_better: bool) -> list[str]:
    """``best`` for the best value(s), ``second`` for the next distinct value(s)."""
    v = _tie_round(values)
    ranks = (v if lower_is_better else -v).rank(method="dense")
    return ["best" if r == 1 else "second" if r == 2 else "" for r in ranks]


_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_TEX_UNICODE = {
    "±": r"$\pm$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "Δ": r"$\Delta$",
    "—": "---",
    "×": r"$\times$",
    "−": "-",
    "…": r"\ldots{}",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
}


def tex_escape(text: str) -> str:
    out = "".join(_TEX.get(ch, ch) for ch in text)
    for k, v in _TEX_UNICODE.items():
        out = out.replace(k, v)
    return out


def _cell(cell: Cell, fmt: str) -> str:
    if fmt == "md":
        text = cell.text.replace("|", "\\|")
        return {"best": f"**{text}**", "second": f"<u>{text}</u>"}.get(cell.mark, text)
    if fmt == "tex":
        text = tex_escape(cell.text)
        return {"best": rf"\textbf{{{text}}}", "second": rf"\underline{{{text}}}"}.get(
            cell.mark, text
        )
    text = html.escape(cell.text)
    return {"best": f"<b>{text}</b>", "second": f"<u>{text}</u>"}.get(cell.mark, text)


def render(table: Table, fmt: str) -> str:
    """The table as Markdown (``md``), LaTeX booktabs (``tex``) or HTML (``html``)."""
    from tabulate import tabulate

    body = [[_cell(c, fmt) for c in row] for row in table.rows]
    if fmt == "md":
        headers = [h.replace("|", "\\|") for h in table.headers]
        return tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True)
    if fmt == "tex":
        headers = [tex_escape(h) for h in table.headers]
        raw = tabulate(body, headers=headers, tablefmt="latex_raw", disable_numparse=True)
        lines = raw.splitlines()
        rules = [i for i, line in enumerate(lines) if line.strip() == r"\hline"]
        for i, rule in zip(rules, (r"\toprule", r"\midrule", r"\bottomrule"), strict=False):
            lines[i] = rule
        return "\n".join(lines)
    headers = [html.escape(h) for h in table.headers]
    return tabulate(body, headers=headers, tablefmt="unsafehtml", disable_numparse=True)


def leaderboard_tables(board: pd.DataFrame, *, task_avg: bool = False) -> list[Table]:
    """The display tables of a leaderboard: one, or for more than :data:`MAX_METRIC_COLUMNS`
    metrics a summary plus a per-metric table."""
    bench = board["benchmark"].iloc[0] if len(board) else "?"
    cols: list[Col] = board.attrs.get("metrics", [])
    is_method = (board["role"] == "method").tolist()
    metric_marks = {}
    for c in cols:
        if c.higher_is_better is None or c.name not in board:
            continue
        vals = [v if m else math.nan for v, m in zip(board[c.name], is_method, strict=True)]
        metric_marks[c.name] = marks(vals, not c.higher_is_better)
    summary_marks = {}
    for col in ("delta_m", "delta_m_task", "mean_rank"):
        if col in board:
            vals = [v if m else math.nan for v, m in zip(board[col], is_method, strict=True)]
            summary_marks[col] = marks(vals, True)

    def n_text(r: pd.Series) -> str:
        if r["role"] == "not run":
            return "0"
        n, runs = _int(r.get("n")), _int(r.get("runs"))
        if r["role"] == "reference":
            return str(n) if runs else MISSING
        return f"{n}/{runs}" if runs != n else str(n)

    def metric_cells(r: pd.Series, i: int) -> list[Cell]:
        return [
            Cell(
                fmt_pm(r.get(c.name), r.get(f"{c.name}_std")),
                metric_marks.get(c.name, [""] * len(board))[i],
            )
            for c in cols
        ]

    def summary_cells(r: pd.Series, i: int) -> list[Cell]:
        out = []
        for col in ("delta_m", "delta_m_task") if task_avg else ("delta_m",):
            if r["role"] == "reference":
                out.append(Cell("0 (ref)" if col in board else MISSING))
                continue
            out.append(
                Cell(
                    fmt_pm(r.get(col), r.get(f"{col}_std"), decimals=2),
                    summary_marks.get(col, [""] * len(board))[i],
                )
            )
        out.append(
            Cell(
                fmt_pm(r.get("mean_rank"), None, decimals=2),
                summary_marks.get("mean_rank", [""] * len(board))[i],
            )
        )
        out.append(Cell(fmt_pm(r.get("step_x_ls"), r.get("step_x_ls_std"), decimals=2)))
        out.append(Cell(fmt_pm(r.get("total_x_ls"), r.get("total_x_ls_std"), decimals=2)))
        return out

    dm_headers = ["Δm% ↓ (metric-avg)"] + (["Δm% ↓ (task-avg)"] if task_avg else [])
    tail = [*dm_headers, "MR ↓", "time/step × LS", "total time × LS"]
    metric_headers = [f"{c.name}{c.arrow}" for c in cols]
    data = board
    if len(cols) <= MAX_METRIC_COLUMNS:
        rows = [
            [Cell(str(r["method"])), Cell(n_text(r)), *metric_cells(r, i), *summary_cells(r, i)]
            for i, (_, r) in enumerate(board.iterrows())
        ]
        return [Table(f"leaderboard_{bench}", ["method", "n", *metric_headers, *tail], rows, data)]
    summary = [
        [Cell(str(r["method"])), Cell(n_text(r)), *summary_cells(r, i)]
        for i, (_, r) in enumerate(board.iterrows())
    ]
    detail = [
        [Cell(str(r["method"])), Cell(n_text(r)), *metric_cells(r, i)]
        for i, (_, r) in enumerate(board.iterrows())
    ]
    return [
        Table(f"leaderboard_{bench}", ["method", "n", *tail], summary, data),
        Table(f"leaderboard_{bench}_metrics", ["method", "n", *metric_headers], detail, None),
    ]


# ---------------------------------------------------------------------------------------------
# Document
# ---------------------------------------------------------------------------------------------


class Doc:
    """A list of blocks rendered to Markdown and HTML: headings, paragraphs, lists, tables and
    images. Paragraph text may use ``**bold**``, backticks and ``[text](link)``."""

    def __init__(self) -> None:
        self.blocks: list[tuple[Any, ...]] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, table: Table) -> None:
        self.blocks.append(("table", table))

    def img(self, path: str, alt: str) -> int:
        self.blocks.append(("img", path, alt))
        return len(self.blocks) - 1

    def markdown(self) -> str:
        parts = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                parts.append(f"{'#' * block[1]} {block[2]}")
            elif kind == "p":
                parts.append(block[1])
            elif kind == "ul":
                parts.append("\n".join(f"- {item}" for item in block[1]))
            elif kind == "table":
                parts.append(render(block[1], "md"))
            elif kind == "img":
                parts.append(f"![{block[2]}]({block[1]})")
        return "\n\n".join(parts) + "\n"

    def html(self, title: str) -> str:
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            "<style>body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;"
            "padding:0 1em;line-height:1.4}table{border-collapse:collapse;margin:1em 0;"
            "font-size:0.9em}th,td{border-bottom:1px solid #ccc;padding:3px 8px;text-align:left}"
            "th{border-bottom:2px solid #333}img{max-width:100%}code{background:#f3f3f3}"
            "</style></head><body>",
        ]
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                level = min(block[1], 6)
                anchor = _anchor(block[2])
                parts.append(f'<h{level} id="{anchor}">{_inline_html(block[2])}</h{level}>')
            elif kind == "p":
                parts.append(f"<p>{_inline_html(block[1])}</p>")
            elif kind == "ul":
                items = "".join(f"<li>{_inline_html(i)}</li>" for i in block[1])
                parts.append(f"<ul>{items}</ul>")
            elif kind == "table":
                parts.append(render(block[1], "html"))
            elif kind == "img":
                parts.append(
                    f'<p><img src="{html.escape(block[1])}" alt="{html.escape(block[2])}"></p>'
                )
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _inline_html(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"`(.+?)`", r"<code>\1</code>", out)
    out = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', out)
    return out.replace("&lt;u&gt;", "<u>").replace("&lt;/u&gt;", "</u>")


# ---------------------------------------------------------------------------------------------
# Figures' data
# ---------------------------------------------------------------------------------------------


def mean_curves(
    rows: pd.DataFrame, curves: Mapping[int, Mapping[str, Any]], key: str
) -> dict[str, dict[str, np.ndarray]]:
    """``{variant: {task: mean over seeds per epoch}}`` of ``curves[key]`` (``train_loss`` or
    ``weights``); runs of different lengths are padded with NaN."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for variant, g in rows.groupby("variant", sort=False):
        per_task: dict[str, list[list[float]]] = {}
        for rid in g["rid"]:
            for task, values in (curves.get(int(rid), {}).get(key) or {}).items():
                if isinstance(values, list) and values:
                    per_task.setdefault(task, []).append(values)
        if not per_task:
            continue
        out[str(variant)] = {}
        for task, lists in per_task.items():
            length = max(len(v) for v in lists)
            arr = np.full((len(lists), length), math.nan)
            for i, v in enumerate(lists):
                arr[i, : len(v)] = np.asarray(v, dtype=float)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN epochs stay NaN
                out[str(variant)][task] = np.nanmean(arr, axis=0)
    return out


def toy_data(
    rows: pd.DataFrame, curves: Mapping[int, Mapping[str, Any]]
) -> tuple[pd.DataFrame, np.ndarray | None, list[str]]:
    """The toy's trajectories (:func:`mtlbench.plots.toy_trajectories`), its Pareto front and
    notes. At most :data:`MAX_TOY_RUNS` runs per (method, initial point) are drawn."""
    notes: list[str] = []
    done = rows[(rows["status"] == "done") & (rows["mode"] != "stl")]
    done = done.sort_values(["variant", "start", "seed"], kind="stable", na_position="last")
    done = done.groupby(["variant", "start"], dropna=False, sort=False).head(MAX_TOY_RUNS)
    try:
        import torch

        from mtlbench.datasets.toy import pareto_front, toy_losses
    except Exception as error:  # the toy module is missing or broken
        pareto_front = toy_losses = None  # type: ignore[assignment]
        notes.append(
            f"Pareto front and initial points not drawn: mtlbench.datasets.toy "
            f"unavailable ({type(error).__name__}: {first_line(error)})"
        )
    scales = set()
    traj = []
    shortened = 0
    for _, r in done.iterrows():
        c = curves.get(int(r["rid"]), {})
        if "traj" not in c:
            continue
        l1, l2 = c["traj"]
        extra = c.get("extra") or {}
        scales.add(extra.get("scale", 0.1))
        shortened += bool(extra.get("shortened"))
        final = extra.get("final_losses") or {}
        f1 = final.get("L1", l1[-1] if l1 else math.nan)
        f2 = final.get("L2", l2[-1] if l2 else math.nan)
        s1 = s2 = math.nan
        start_point = extra.get("start_point")
        if toy_losses is not None and start_point is not None:
            s1, s2 = toy_losses(
                torch.tensor(start_point, dtype=torch.float64), extra.get("scale", 0.1)
            ).tolist()
        traj.append(
            {
                "method": r["variant"],
                "start": r["start"],
                "L1": l1,
                "L2": l2,
                "start_L1": s1,
                "start_L2": s2,
                "final_L1": f1,
                "final_L2": f2,
            }
        )
    front = None
    if pareto_front is not None and traj:
        if len(scales) == 1:
            front = pareto_front(scales.pop(), 200).numpy()
        else:
            notes.append(f"Pareto front not drawn: runs use several scales {sorted(scales)}")
    if shortened:
        notes.append(
            f"{shortened} drawn toy runs are shorter than the standard 50,000 steps "
            "(extra.shortened): their end points need not be converged"
        )
    return pd.DataFrame(traj), front, notes


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def _workers() -> int:
    """Processes for drawing figures: the cores this process may use, at most
    :data:`MAX_WORKERS`; ``MTLBENCH_REPORT_WORKERS`` overrides (1 = everything in-process)."""
    env = os.environ.get("MTLBENCH_REPORT_WORKERS")
    if env and env.strip().isdigit():
        return max(1, int(env))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


@contextmanager
def _pool() -> Iterator[Executor | None]:
    """A process pool (fork: the workers inherit the loaded modules, so they start at once), or
    None with one core or where fork is unavailable. The workers only draw (no torch)."""
    n = _workers()
    if n <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        yield None
        return
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork")) as executor:
        yield executor


def _draw(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Path:
    from mtlbench import plots

    return getattr(plots, name)(*args, **kwargs)


class _Figures:
    """Figures drawn in the pool while the tables are built (or at once without a pool). A
    figure that fails becomes a note in its place; the report is still written."""

    def __init__(self, executor: Executor | None, doc: Doc, out_dir: Path) -> None:
        self.executor, self.doc, self.out_dir = executor, doc, out_dir
        self.pending: list[tuple[int, str, Future[Path] | Path | BaseException]] = []
        self.written: list[Path] = []

    def draw(self, name: str, path: Path, alt: str, *args: Any, **kwargs: Any) -> None:
        block = self.doc.img(_rel(path, self.out_dir), alt)
        job: Future[Path] | Path | BaseException
        if self.executor is not None:
            job = self.executor.submit(_draw, name, (*args, path), kwargs)
        else:
            try:
                job = _draw(name, (*args, path), kwargs)
            except Exception as error:  # a figure must not cost the whole report
                job = error
        self.pending.append((block, alt, job))

    def finish(self) -> None:
        for block, alt, job in self.pending:
            try:
                result = job.result() if isinstance(job, Future) else job
                if isinstance(result, BaseException):
                    raise result
                self.written.append(Path(result))
            except Exception as error:
                self.doc.blocks[block] = (
                    "p",
                    f"Figure '{alt}' could not be drawn ({type(error).__name__}: "
                    f"{first_line(error)}).",
                )


def _check_out(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".mtlbench-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(
            f"report folder {out_dir} is not writable ({error.strerror or error})"
        ) from error


def _csv_table(table: pd.DataFrame, path: Path) -> None:
    table.to_csv(path, index=False, float_format="%.10g")


def _rel(path: Path, out_dir: Path) -> str:
    return path.relative_to(out_dir).as_posix()


def build_report(
    results_dir: Path,
    out_dir: Path,
    formats: Sequence[str] = ("md",),
    *,
    task_avg: bool = False,
    published: bool = False,
) -> Path:
    """Write the report of ``results_dir`` into ``out_dir``; return the index page
    (``index.md``; ``index.html`` beside it when ``html`` is among ``formats``).

    ``formats``: any of md, tex, csv, html (``tex``: every table as a booktabs fragment under
    ``tables/``; ``csv``: every table's numbers under ``tables/``). ``task_avg``: add the
    task-averaged Δm% beside the metric-averaged one. ``published``: compare with the LDC-MTL
    paper's numbers. Raises :class:`ConfigError` for a missing or empty results folder, an
    unwritable report folder or an unknown format.
    """
    formats = [f.strip().lower() for f in formats if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ConfigError(f"unknown report format {bad[0]!r}. Valid: {', '.join(FORMATS)}")
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if not results_dir.is_dir():
        raise ConfigError(f"results folder {results_dir} does not exist (or is not a folder)")
    with _pool() as executor:
        return _build(results_dir, out_dir, formats, task_avg, published, executor)


def _build(
    results_dir: Path,
    out_dir: Path,
    formats: Sequence[str],
    task_avg: bool,
    published: bool,
    executor: Executor | None,
) -> Path:
    from mtlbench import plots

    results = read_results(results_dir)
    _check_out(out_dir)
    fig_dir, tab_dir = out_dir / "figures", out_dir / "tables"
    fig_dir.mkdir(exist_ok=True)
    if "tex" in formats or "csv" in formats:
        tab_dir.mkdir(exist_ok=True)

    df = _prepare(results.frame)
    benches = list(dict.fromkeys(sorted(df["benchmark"].astype(str).unique())))
    all_methods = sorted(df.loc[df["mode"] != "stl", "method"].astype(str).unique())
    infos = {b: bench_info(b, df) for b in benches}
    boards = {
        b: leaderboard(df, b, task_avg=task_avg, info=infos[b], methods=all_methods)
        for b in benches
    }
    pub = load_published() if published else None
    written: list[Path] = []

    def emit(doc: Doc, table: Table) -> None:
        doc.table(table)
        if "tex" in formats:
            path = tab_dir / f"{table.name}.tex"
            path.write_text(
                f"% {table.caption or table.name}: generated by `mtlbench report` from "
                f"{results_dir}\n% needs \\usepackage{{booktabs}}\n" + render(table, "tex") + "\n"
            )
            written.append(path)
        if "csv" in formats and table.data is not None:
            path = tab_dir / f"{table.name}.csv"
            _csv_table(table.data, path)
            written.append(path)

    frame = results.frame
    status_counts = frame["status"].value_counts()
    doc = Doc()
    figures = _Figures(executor, doc, out_dir)
    # one colour per method across all figures
    labels = sorted(df.loc[df["mode"] != "stl", "variant"].astype(str).unique())
    palette = dict(zip(labels, plots.colors(len(labels)), strict=True))
    doc.h(1, f"mtlbench report: {results_dir.name or results_dir}")
    doc.p(
        f"Generated by `mtlbench report` from {len(frame)} run records in `{results_dir}` ("
        + ", ".join(f"{v} {k}" for k, v in status_counts.items())
        + f"), on {len(benches)} benchmark(s): {', '.join(benches)}. Every number below comes "
        "from the records (and, where marked, from a published reference)."
    )
    intro = [
        "Metrics: mean ± sample standard deviation over seeds (n = runs done; `2/3` means 2 "
        "of 3 runs done). ↑ higher is better, ↓ lower is better. **Bold** is the best, "
        "<u>underlined</u> the second best among the methods.",
        "Δm% (metric-averaged, protocols.md §3.1): 100/M Σ_j (−1)^{s_j} (x_j − b_j) / b_j "
        "against the reference b (s_j = 1 when higher is better); positive is worse. "
        "Recomputed per seed from the test metrics, then averaged."
        + (
            " The task-averaged variant (LibMTL's Δp with the sign flipped) averages within each "
            "task first."
            if task_avg
            else ""
        ),
        "MR: mean over metrics of the rank among the methods (1 = best, ties share the lowest "
        "rank).",
        "Time × LS: mean over seeds of the per-step median (`time/step`) or of the total "
        "training time, divided by LS's on the same benchmark.",
        f"`{MISSING}` marks a missing value (not run, failed, diverged, or no reference), "
        "never a zero.",
    ]
    doc.ul(intro)
    if results.duplicates:
        doc.p(
            f"{results.duplicates} record(s) repeat a trial id found elsewhere in the folder; "
            "each trial is counted once (its done, latest record)."
        )
    if results.skipped:
        doc.p(
            f"{len(results.skipped)} JSON file(s) skipped: "
            + "; ".join(results.skipped[:10])
            + (" …" if len(results.skipped) > 10 else "")
        )

    # --- across benchmarks ---
    cross = cross_benchmark(boards)
    ranked_benches = [b for b in benches if boards[b]["role"].eq("method").any()]
    if len(ranked_benches) > 1 and not cross.empty:
        doc.h(2, "Across benchmarks")
        doc.p(
            "Mean over benchmarks of each method's MR and Δm%; the columns after them say "
            "which benchmarks each mean covers (a method is compared only where it ran). "
            "MRs of different benchmarks rank different sets of methods."
        )
        mr_marks = marks(cross["avg_mean_rank"].tolist(), True)
        dm_marks = marks(cross["avg_delta_m"].tolist(), True)
        rows = []
        for i, r in cross.iterrows():
            rows.append(
                [
                    Cell(r["method"]),
                    Cell(fmt_pm(r["avg_mean_rank"], None, decimals=2), mr_marks[i]),
                    Cell(
                        f"{r['n_mean_rank']}: {r['mean_rank_benchmarks']}"
                        if r["n_mean_rank"]
                        else MISSING
                    ),
                    Cell(fmt_pm(r["avg_delta_m"], None, decimals=2), dm_marks[i]),
                    Cell(
                        f"{r['n_delta_m']}: {r['delta_m_benchmarks']}"
                        if r["n_delta_m"]
                        else MISSING
                    ),
                    *[Cell(fmt_pm(r[f"delta_m/{b}"], None, decimals=2)) for b in benches],
                ]
            )
        emit(
            doc,
            Table(
                "across_benchmarks",
                [
                    "method",
                    "avg MR ↓",
                    "MR covers",
                    "avg Δm% ↓",
                    "Δm% covers",
                    *[f"Δm% {b}" for b in benches],
                ],
                rows,
                cross,
            ),
        )
        variants_used = [
            f"{r['method']}: {r['variants_used']}"
            for _, r in cross.iterrows()
            if r["variants_used"]
        ]
        if variants_used:
            doc.p("Methods with several variants enter with the one with most runs:")
            doc.ul(variants_used)

    # --- per benchmark ---
    missing_frames = []
    scatter_rows = []
    runtime_rows = []
    for bench in benches:
        board = boards[bench]
        rows_b = df[df["benchmark"] == bench]
        doc.h(2, f"Benchmark: {bench}")
        ref: RefInfo | None = board.attrs.get("reference")
        if ref is not None:
            text = f"Reference ({ref.kind}): {ref.source}."
            if ref.kind == "stl":
                prov = "; ".join(f"{t}: {', '.join(ids)}" for t, ids in ref.trials.items())
                text += f" Trials: {prov}."
            doc.p(text)
        protocols = rows_b.loc[rows_b["mode"] != "stl", "selection_rule"].dropna().unique()
        if len(protocols):
            doc.p(
                "Model selection: "
                + ", ".join(f"`{p}`" for p in protocols)
                + (
                    " (reads the test set: the published rule)"
                    if "last10_test_mean" in protocols
                    else ""
                )
                + "."
            )
        for table in leaderboard_tables(board, task_avg=task_avg):
            emit(doc, table)
        doc.ul(board.attrs.get("notes", []))
        missing_frames.append(board.attrs.get("missing"))

        methods_rows = board[board["role"] == "method"]
        for _, r in methods_rows.iterrows():
            if pd.notna(r.get("step_x_ls")) or pd.notna(r.get("total_x_ls")):
                runtime_rows.append(
                    {
                        "benchmark": bench,
                        "method": r["method"],
                        "step_median_s": r.get("step_median_s"),
                        "train_s": r.get("train_s"),
                        "step_x_ls": r.get("step_x_ls"),
                        "step_x_ls_std": r.get("step_x_ls_std"),
                        "total_x_ls": r.get("total_x_ls"),
                        "total_x_ls_std": r.get("total_x_ls_std"),
                    }
                )
            if pd.notna(r.get("delta_m")) and pd.notna(r.get("step_x_ls")):
                scatter_rows.append(
                    {
                        "benchmark": bench,
                        "method": r["method"],
                        "delta_m": r["delta_m"],
                        "delta_m_std": r.get("delta_m_std"),
                        "time_x_ls": r["step_x_ls"],
                        "time_x_ls_std": r.get("step_x_ls_std"),
                    }
                )

        if pub is not None:
            comp = published_comparison(board, pub)
            if not comp.empty:
                doc.h(3, f"{bench}: this suite beside the LDC-MTL paper")
                quantities = comp.attrs["quantities"]
                headers = ["method", "paper label"]
                for q in quantities:
                    name = {"delta_m": "Δm%", "time_rel_ls": "total time × LS"}.get(q, q)
                    headers += [f"{name} ours", f"{name} paper", f"{name} diff"]
                rows = []
                for _, r in comp.iterrows():
                    cells = [
                        Cell(r["ours_label"] or r["method"]),
                        Cell(r["paper_label"] or MISSING),
                    ]
                    for q in quantities:
                        # metrics: the decimals of the paper's value (or ours), for all three
                        d = (
                            2
                            if q in ("delta_m", "time_rel_ls")
                            else _decimals(r[f"{q}/paper"], 4) or _decimals(r[f"{q}/ours"], 4)
                        )
                        cells += [
                            Cell(fmt_pm(r[f"{q}/ours"], None, decimals=d)),
                            Cell(fmt_pm(r[f"{q}/paper"], None, decimals=d)),
                            Cell(fmt_pm(r[f"{q}/diff"], None, decimals=d)),
                        ]
                    rows.append(cells)
                emit(doc, Table(f"published_{bench}", headers, rows, comp))
                doc.p(
                    "Paper numbers: "
                    + "; ".join(comp.attrs["sources"])
                    + ". diff = ours − paper (this suite's units: fractions for mIoU and "
                    "pixel accuracy). Our time × LS is total training time."
                )

        mtl_rows = rows_b[(rows_b["mode"] != "stl") & (rows_b["status"] == "done")]
        loss = mean_curves(mtl_rows, results.curves, "train_loss")
        weights = mean_curves(mtl_rows, results.curves, "weights")
        if loss or weights:
            doc.h(3, f"{bench}: training dynamics")
            names = list(dict.fromkeys([*loss, *weights]))
            if len(names) > MAX_LINES:
                doc.p(f"{len(names)} methods: only the first {MAX_LINES} are drawn.")
                keep = set(names[:MAX_LINES])
                loss = {k: v for k, v in loss.items() if k in keep}
                weights = {k: v for k, v in weights.items() if k in keep}
            figures.draw(
                "training_dynamics",
                fig_dir / f"dynamics_{bench}.png",
                f"{bench} training dynamics",
                loss,
                weights,
                title=f"{bench}: per-task training loss and task weights (mean over seeds)",
                palette=palette,
            )

        if bench == "toy":
            doc.h(3, "toy: trajectories in loss space")
            traj, front, toy_notes = toy_data(rows_b, results.curves)
            toy_done = mtl_rows.groupby("variant", sort=False)["train_s"].agg(["mean", "std"])
            runtime = pd.DataFrame(
                {
                    "method": toy_done.index,
                    "seconds": toy_done["mean"],
                    "seconds_std": toy_done["std"],
                }
            ).dropna(subset=["seconds"])
            steps = mtl_rows["steps"].dropna().unique()
            label = "training time (s)" + (f", {int(steps[0])} steps" if len(steps) == 1 else "")
            if not traj.empty:
                doc.p(
                    "Each panel: one method's runs from the initial points (black dots) over "
                    "the Pareto front (grey); stars mark where each run ended; the last panel "
                    "is the mean training time per method."
                )
                figures.draw(
                    "toy_trajectories",
                    fig_dir / "toy_trajectories.png",
                    "toy trajectories",
                    traj,
                    front=front,
                    runtime=runtime,
                    runtime_label=label,
                )
            elif len(runtime):
                figures.draw(
                    "bars",
                    fig_dir / "toy_runtime.png",
                    "toy running time",
                    runtime["seconds"].tolist(),
                    runtime["method"].tolist(),
                    ylabel=label,
                )
                toy_notes.append("no trajectory in the toy records (curves.val L1/L2)")
            doc.ul(toy_notes)

    # --- accuracy against cost ---
    if scatter_rows:
        doc.h(2, "Accuracy against cost")
        doc.p(
            "Δm% against per-step time × LS, one point per method; error bars: standard "
            "deviation over seeds."
        )
        figures.draw(
            "accuracy_vs_cost",
            fig_dir / "accuracy_cost.png",
            "accuracy against cost",
            pd.DataFrame(scatter_rows),
            palette=palette,
        )

    # --- runtime ---
    doc.h(2, "Runtime")
    if runtime_rows:
        rt = pd.DataFrame(runtime_rows)
        rt_benches = list(dict.fromkeys(rt["benchmark"]))
        lookup = {(r["method"], r["benchmark"]): r for _, r in rt.iterrows()}
        rows = []
        for method in dict.fromkeys(rt["method"]):
            cells = [Cell(str(method))]
            for b in rt_benches:
                r = lookup.get((method, b), {})
                cells.append(Cell(fmt_pm(r.get("step_x_ls"), None, decimals=2)))
                cells.append(Cell(fmt_pm(r.get("total_x_ls"), None, decimals=2)))
            rows.append(cells)
        headers = ["method"] + [
            h for b in rt_benches for h in (f"{b} step × LS", f"{b} total × LS")
        ]
        emit(doc, Table("runtime", headers, rows, rt))
        doc.p(
            "step × LS: from per-step medians (`timing.step_median_s`); total × LS: from total "
            "training time (`timing.train_s`); means over seeds. The total includes data "
            "loading and per-epoch work, so it can differ from the per-step ratio."
        )
        figures.draw(
            "runtime_bars",
            fig_dir / "runtime.png",
            "training time relative to LS",
            rt,
            title="training time relative to LS",
        )
    else:
        doc.p("No runtime table: no benchmark has both timed runs and a done LS run.")

    doc.h(3, "Per-step time against the number of tasks")
    scaling = results.bench_table
    if scaling is not None and not scaling.empty:
        sources = ", ".join(f"`{s}`" for s in dict.fromkeys(scaling["source"]))
        doc.p(
            f"From {sources} (`mtlbench bench`): median per-step time against K; dashed lines "
            "are the sequential (K backward passes) Jacobian."
        )
        figures.draw(
            "scaling", fig_dir / "scaling.png", "per-step time against K", scaling, palette=palette
        )
    else:
        doc.p(
            "Not drawn: no `bench*.csv` in the results folder (`mtlbench bench` writes one, "
            "by default to `results/bench/`)."
        )
    doc.ul(results.bench_notes)

    # --- missing ---
    missing = (
        pd.concat([m for m in missing_frames if m is not None and len(m)], ignore_index=True)
        if any(m is not None and len(m) for m in missing_frames)
        else pd.DataFrame()
    )
    doc.h(2, "Missing and failed runs")
    not_run = {
        b: [
            m
            for m in all_methods
            if m not in set(df.loc[(df["benchmark"] == b) & (df["mode"] != "stl"), "method"])
        ]
        for b in benches
    }
    not_run_lines = [f"{b}: {', '.join(ms)} not run" for b, ms in not_run.items() if ms]
    if missing.empty and not not_run_lines:
        doc.p("None: every run in the folder finished.")
    else:
        if not missing.empty:
            counts = missing["status"].value_counts()
            doc.p(
                f"{len(missing)} run(s) without a result ("
                + ", ".join(f"{v} {k}" for k, v in counts.items())
                + "); their cells are missing (n counts only done runs)."
            )
            shown = missing.head(MAX_LISTED)
            rows = [
                [Cell(str(r[c])) for c in ("benchmark", "method", "replicate", "reason")]
                for _, r in shown.iterrows()
            ]
            table = Table("missing", ["benchmark", "method", "run", "reason"], rows, missing)
            emit(doc, table)
            if len(missing) > MAX_LISTED:
                if "csv" not in formats:
                    tab_dir.mkdir(exist_ok=True)
                    path = tab_dir / "missing.csv"
                    _csv_table(missing, path)
                    written.append(path)
                doc.p(
                    f"… and {len(missing) - MAX_LISTED} more: all are in "
                    f"[tables/missing.csv](tables/missing.csv)."
                )
        doc.ul(not_run_lines)

    # --- files ---
    listed = [p for p in written if p.parent.name == "tables"]
    if listed:
        doc.h(2, "Files")
        doc.ul([f"[{_rel(p, out_dir)}]({_rel(p, out_dir)})" for p in listed])

    figures.finish()
    index = out_dir / "index.md"
    index.write_text(doc.markdown(), encoding="utf-8")
    if "html" in formats:
        (out_dir / "index.html").write_text(
            doc.html(f"mtlbench report: {results_dir.name}"), encoding="utf-8"
        )
    return index


__all__ = [
    "ConfigError",
    "FORMATS",
    "Results",
    "build_report",
    "cross_benchmark",
    "label_variants",
    "leaderboard",
    "leaderboard_tables",
    "load_published",
    "published_comparison",
    "read_results",
    "render",
]
