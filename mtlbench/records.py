"""Run records: one JSON file per trial, written atomically, versioned, read in one place.

The schema is :class:`Record` (``mtlbench.record/2``); every key is always present, ``None``
where it does not apply. Everything that reads records (the report, ``mtlbench status``, the STL
references, the pandas loader, the runner's "is this trial done?") reads them through
:func:`read_record` / :func:`scan`, and flat rows come from :func:`to_row` alone.

Version 2 adds ``metric_info`` (each evaluated metric's task and direction, so that a reader needs
no registered benchmark to compute Δm% or ranks) and ``resumes``. Version 1 records still load:
:func:`read_record` upgrades them in memory, taking ``metric_info`` from the benchmark when this
installation has it registered. ``plugins`` (added within version 2) names the plug-ins loaded
(:class:`~mtlbench.plugins.PluginInfo`: module, distribution, version, sha256 of the files),
beside ``environment.git_commit`` of the built-ins; ``None`` in records written before it.

A record may be stored gzipped, ``<trial_id>.json.gz``, as the committed leaderboards are (results/
README.md); everything reads both forms, and a trial written again replaces its ``.gz``.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from mtlbench.plugins import PluginInfo

if TYPE_CHECKING:  # pandas is imported where a frame is built (rows_frame)
    import pandas as pd

SCHEMA = "mtlbench.record/2"
SCHEMA_V1 = "mtlbench.record/1"
Status = Literal["running", "done", "failed", "diverged"]
STATUSES: tuple[Status, ...] = ("running", "done", "failed", "diverged")
# Protocol keys that index replicates rather than settings (the toy's five initial points).
REPLICATE_KEYS = ("start",)
# Folders under a results folder that hold other JSON files than records.
NOT_RECORDS = ("checkpoints", "references")


class MetricInfo(TypedDict):
    """One evaluated metric: its name, task, direction and unit."""

    name: str
    task: str
    higher_is_better: bool
    unit: str


class Config(TypedDict):
    """The resolved trial (:meth:`mtlbench.trial.ResolvedTrial.to_dict`) plus where it ran."""

    benchmark: str
    method: str
    hparams: dict[str, Any]
    seed: int
    mode: Literal["mtl", "stl"]
    task: str | None
    protocol: dict[str, Any]
    policies: dict[str, Any]
    data_root: str | None
    device: str


class Selection(TypedDict):
    """The reported evaluation and how it was chosen. ``best_val_epoch`` and
    ``selected_at_end`` (records written from 2026-12-03 on; :func:`convergence` derives them
    for older ones) say whether training had converged: the epoch of the best validation score,
    whatever the rule, and whether it falls in the last :data:`AT_END_FRACTION` of training."""

    rule: str
    description: str
    epoch: int
    score: float
    reference_source: str | None
    best_val_epoch: int
    selected_at_end: bool
    epochs_run: int  # below the protocol's epochs when early stopping (patience) ended it


class StoredReference(TypedDict):
    values: dict[str, float]
    source: str
    details: dict[str, Any]


class DeltaM(TypedDict):
    """Δm% at the selected epoch against the reference the trainer had (positive is worse)."""

    metric_avg: float
    task_avg: float
    reference: StoredReference


class Timing(TypedDict):
    train_s: float
    eval_s: float
    steps: int
    step_median_s: float | None
    step_p10_s: float | None
    step_p90_s: float | None
    synchronized: bool


class Memory(TypedDict):
    peak_bytes: int | None
    kind: Literal["cuda_allocated", "process_peak_rss"]


class Record(TypedDict):
    """``mtlbench.record/2``.

    ``curves``: ``{epoch, lr, train_loss: {task: [...]}, weights: {task: [...]}, val: {metric:
    [...]}, test: {metric: [...]}, val_score}``, one value per evaluated epoch. ``metrics``:
    ``{val: {...}, test: {...}}`` at the selected epoch. ``error``: ``{type, message,
    traceback}``; ``diverged``: ``{epoch, step, losses}``. ``runner``: ``{host, pid}`` of the
    process that wrote it (a live run from a killed one). ``resumes``: one ``{at, epoch, host,
    pid}`` per resume from a checkpoint; ``started_at`` is the first start.
    """

    schema: str
    trial_id: str
    sweep: str | None
    status: Status
    config: Config
    metric_info: list[MetricInfo] | None
    error: dict[str, Any] | None
    diverged: dict[str, Any] | None
    curves: dict[str, Any]
    selection: Selection | None
    metrics: dict[str, dict[str, float]] | None
    delta_m: DeltaM | None
    timing: Timing | None
    memory: Memory | None
    diagnostics: dict[str, Any] | None
    extra: dict[str, Any] | None
    environment: dict[str, Any]
    plugins: list[PluginInfo] | None
    runner: dict[str, Any]
    resumes: list[dict[str, Any]]
    started_at: str
    finished_at: str | None


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    """Non-finite floats become None (JSON has no NaN); everything else unchanged."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (temp file in the same folder, fsync,
    rename), so a reader never sees a half-written file and a crash leaves the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_json_safe(data), f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; records are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_path(results_dir: Path, trial_id: str) -> Path:
    """The trial's record file: ``<trial_id>.json``, or ``<trial_id>.json.gz`` where only that
    one exists (a gzipped, committed record)."""
    plain = Path(results_dir) / f"{trial_id}.json"
    if not plain.exists():
        packed = plain.with_name(plain.name + ".gz")
        if packed.exists():
            return packed
    return plain


def write_record(results_dir: Path, record: Record | dict[str, Any]) -> Path:
    path = Path(results_dir) / f"{record['trial_id']}.json"
    atomic_write_json(path, record)
    path.with_name(path.name + ".gz").unlink(missing_ok=True)  # one record per trial
    return path


def new_record(
    trial_id: str,
    config: Config | dict[str, Any],
    *,
    sweep: str | None,
    environment: dict[str, Any],
    runner: dict[str, Any],
    started_at: str,
    metric_info: list[MetricInfo] | None = None,
    plugins: list[PluginInfo] | None = None,
) -> Record:
    """A ``running`` record with every key present: what the trainer writes before training."""
    return Record(
        schema=SCHEMA,
        trial_id=trial_id,
        sweep=sweep,
        status="running",
        config=config,  # type: ignore[typeddict-item]
        metric_info=metric_info,
        error=None,
        diverged=None,
        curves={},
        selection=None,
        metrics=None,
        delta_m=None,
        timing=None,
        memory=None,
        diagnostics=None,
        extra=None,
        environment=environment,
        plugins=plugins if plugins is not None else [],
        runner=runner,
        resumes=[],
        started_at=started_at,
        finished_at=None,
    )


def metric_info(metrics: Any) -> list[MetricInfo]:
    """``metric_info`` entries of :class:`mtlbench.benchmark.Metric` objects."""
    return [
        MetricInfo(name=m.name, task=m.task, higher_is_better=bool(m.higher_is_better), unit=m.unit)
        for m in metrics
    ]


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 record in the version-2 shape (in memory; the file is left as it is)."""
    data = dict(data)
    data["schema"] = SCHEMA
    data.setdefault("resumes", [])
    if data.get("metric_info") is None:
        data["metric_info"] = _registered_metric_info(data.get("config") or {})
    return data


def _registered_metric_info(config: dict[str, Any]) -> list[MetricInfo] | None:
    from mtlbench import benchmark as benchmarks

    try:
        bench = benchmarks.get(str(config.get("benchmark")))
    except Exception:  # noqa: BLE001 - unknown here, or its module fails to import
        return None
    task = config.get("task")
    return metric_info([m for m in bench.metrics if task is None or m.task == task])


def read_record(path: Path) -> Record:
    """One record (a version-1 record upgraded in memory); raises ``ValueError`` with a one-line
    reason when the file is not a valid record."""
    try:
        with open(path, "rb") as f:  # not Path(path).read_bytes(): a Path per file costs
            raw = f.read()  # a third of `mtlbench status` on 20,000 records
        data = json.loads(gzip.decompress(raw) if str(path).endswith(".gz") else raw)
    except (OSError, ValueError, EOFError) as error:  # gzip: BadGzipFile is an OSError
        raise ValueError(f"{path}: not readable JSON ({type(error).__name__})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not an {SCHEMA} record")
    if data.get("schema") == SCHEMA_V1:
        data = _upgrade_v1(data)
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not an {SCHEMA} record (schema {data.get('schema')!r})")
    data.setdefault("plugins", None)  # written before plug-ins were recorded
    return data  # type: ignore[return-value]


@dataclass
class Scan:
    """The records of a results folder and the JSON files that are not valid records."""

    root: Path
    records: list[tuple[Path, Record]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def by_trial(self) -> dict[str, Record]:
        """Records by trial id; a trial found twice (two sweep folders) keeps its ``done``
        record, the most recently finished."""
        best: dict[str, tuple[tuple[bool, str], Record]] = {}
        for _, record in self.records:
            key = (record.get("status") == "done", str(record.get("finished_at") or ""))
            tid = record["trial_id"]
            if tid not in best or key >= best[tid][0]:
                best[tid] = (key, record)
        return {tid: rec for tid, (_, rec) in best.items()}


def record_files(root: Path) -> Iterator[Path]:
    """The ``*.json`` and ``*.json.gz`` files under ``root`` that may be records (hidden files,
    the ``checkpoints`` and ``references`` folders skipped), in sorted order."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in NOT_RECORDS)
        base = Path(folder)
        for name in sorted(files):
            if name.endswith((".json", ".json.gz")) and not name.startswith("."):
                yield base / name


def scan(results_dir: str | Path) -> Scan:
    """Every record under ``results_dir`` (recursively), and every JSON file skipped with its
    reason. Raises ``FileNotFoundError`` when the folder does not exist."""
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {root} does not exist (or is not a folder)")
    out = Scan(root)
    for path in record_files(root):
        try:
            out.records.append((path, read_record(path)))
        except ValueError as error:
            out.skipped.append((path, str(error).removeprefix(f"{path}: ")))
    return out


def iter_records(results_dir: str | Path, *, strict: bool = False) -> Iterator[Record]:
    """The records of :func:`scan`; ``strict=True`` raises ``ValueError`` on the first file
    that is not a record (otherwise such files are skipped: see :attr:`Scan.skipped`)."""
    for _, record in _scan_checked(Path(results_dir), strict).records:
        yield record


# ---------------------------------------------------------------------------------------------
# Flat rows
# ---------------------------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value if value is not None else {}, sort_keys=True, default=str)


def first_line(text: Any, limit: int = 120) -> str:
    lines = str(text or "").strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


# A run whose best validation score falls in the last fifth of its epochs was still improving
# when it stopped: the leaderboard's convergence check (docs/reports.md) counts such runs.
AT_END_FRACTION = 0.2


def convergence(
    curves: dict[str, Any] | None, epochs: int | None
) -> tuple[int | None, bool | None]:
    """``(best_val_epoch, selected_at_end)`` from a record's curves and its protocol's epoch
    count: the (0-based) epoch of the lowest ``val_score``, and whether it lies in the last
    :data:`AT_END_FRACTION` of training, ``epoch + 1 > (1 - AT_END_FRACTION) * epochs``.
    ``(None, None)`` without evaluations, a finite score or an epoch count."""
    curves = curves or {}
    scores, evaluated = curves.get("val_score") or [], curves.get("epoch") or []
    finite = [
        (score, epoch)
        for score, epoch in zip(scores, evaluated, strict=False)
        if isinstance(score, (int, float)) and math.isfinite(score)
    ]
    if not finite or not epochs:
        return None, None
    best = min(finite, key=lambda pair: pair[0])[1]
    return int(best), bool(best + 1 > (1 - AT_END_FRACTION) * epochs)


def to_row(record: Record | dict[str, Any], path: str | None = None) -> dict[str, Any]:
    """One flat row of a record: its config (``hparams``, ``protocol``, ``policies`` as sorted
    JSON, so that equal settings group together; the replicate keys of the protocol, the toy's
    ``start``, in their own columns), status, Δm% as stored, timing, and ``test/<metric>`` /
    ``val/<metric>`` at the selected epoch."""
    cfg = record.get("config") or {}
    protocol = dict(cfg.get("protocol") or {})
    replicate = {k: protocol.pop(k, None) for k in REPLICATE_KEYS}
    selection = record.get("selection") or {}
    dm = record.get("delta_m") or {}
    reference = dm.get("reference") or {}
    timing = record.get("timing") or {}
    error = record.get("error") or {}
    diverged = record.get("diverged") or {}
    train_loss = (record.get("curves") or {}).get("train_loss")
    if "selected_at_end" in selection:
        at_end = selection["selected_at_end"], selection.get("best_val_epoch")
    elif selection:
        best, end = convergence(record.get("curves"), protocol.get("epochs"))
        at_end = end, best
    else:
        at_end = None, None
    row: dict[str, Any] = {
        "trial_id": record.get("trial_id") or path,
        "path": path,
        "sweep": record.get("sweep"),
        "benchmark": cfg.get("benchmark") or "?",
        "method": cfg.get("method") or "?",
        "mode": cfg.get("mode") or ("stl" if cfg.get("task") else "mtl"),
        "stage": cfg.get("stage"),  # tuned sweeps: "tune" or "final" (mtlbench.tune)
        "task": cfg.get("task"),
        "seed": cfg.get("seed"),
        "status": record.get("status") or "unknown",
        "hparams": _dumps(cfg.get("hparams")),
        "protocol": _dumps(protocol),
        "policies": _dumps(cfg.get("policies")),
        **replicate,
        "selected_epoch": selection.get("epoch"),
        "selection_rule": selection.get("rule"),
        "selected_at_end": at_end[0],
        "best_val_epoch": at_end[1],
        "delta_m": dm.get("metric_avg"),
        "delta_m_task_avg": dm.get("task_avg"),
        "stored_reference": _dumps(reference["values"]) if reference.get("values") else None,
        "stored_reference_source": reference.get("source"),
        "train_s": timing.get("train_s"),
        "eval_s": timing.get("eval_s"),
        "steps": timing.get("steps"),
        "step_median_s": timing.get("step_median_s"),
        "peak_bytes": (record.get("memory") or {}).get("peak_bytes"),
        "error": f"{error.get('type') or 'error'}: {first_line(error.get('message'))}"
        if error
        else None,
        "diverged_epoch": diverged.get("epoch"),
        "diverged_step": diverged.get("step"),
        "solver_fallbacks": (record.get("diagnostics") or {}).get("solver_fallbacks"),
        "resumes": len(record.get("resumes") or []),
        "started_at": record.get("started_at"),
        "finished_at": record.get("finished_at"),
        "train_tasks": ",".join(train_loss) if isinstance(train_loss, dict) else "",
        "metric_info": _dumps(record.get("metric_info")) if record.get("metric_info") else None,
    }
    for split in ("test", "val"):
        for name, value in ((record.get("metrics") or {}).get(split) or {}).items():
            row[f"{split}/{name}"] = value
    return row


NUMERIC_COLUMNS = (
    "delta_m",
    "delta_m_task_avg",
    "train_s",
    "eval_s",
    "steps",
    "step_median_s",
    "peak_bytes",
    "diverged_epoch",
    "diverged_step",
)


def rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows of :func:`to_row` as a DataFrame with float metric and timing columns."""
    import pandas as pd  # optional heavy dependency: pandas (status reads records without it)

    frame = pd.DataFrame(rows, columns=None if rows else list(to_row({}).keys()))
    numeric = [c for c in frame.columns if c.startswith(("test/", "val/"))]
    for col in [*NUMERIC_COLUMNS, *numeric]:
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    return frame


def load_results(path: str | Path, *, strict: bool = False) -> pd.DataFrame:
    """All run records under ``path`` as a DataFrame, one row per record (:func:`to_row`'s
    columns). Files that are not records are skipped (``strict=True`` raises instead)."""
    root = Path(path)
    rows = [
        to_row(record, p.relative_to(root).as_posix())
        for p, record in _scan_checked(root, strict).records
    ]
    return rows_frame(rows)


def _scan_checked(root: Path, strict: bool) -> Scan:
    """:func:`scan`, raising on the first file that is not a record (``strict``) or warning
    about each (``UserWarning``, so that a caller that does not look still hears of them)."""
    result = scan(root)
    if strict and result.skipped:
        path, why = result.skipped[0]
        raise ValueError(f"{path}: {why}")
    for path, why in result.skipped:
        warnings.warn(f"skipped {path}: {why}", stacklevel=3)
    return result
