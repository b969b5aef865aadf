"""Run records: one JSON file per trial, written atomically, versioned, loaded tolerantly.

Schema ``mtlbench.record/1`` (every key always present; ``None`` where not applicable)::

    schema        "mtlbench.record/1"
    trial_id      stable hash of the resolved config (see mtlbench.sweep.trial_id)
    sweep         sweep name or None
    status        "running" | "done" | "failed" | "diverged"
    config        {benchmark, method, hparams, seed, mode ("mtl"|"stl"), task (STL task or None),
                   protocol {...}, policies {...}, data_root, device}
    error         None | {type, message, traceback}
    diverged      None | {epoch, step, losses}
    curves        {epoch: [...], lr: [...], train_loss: {task: [...]}, weights: {task: [...]},
                   val: {key: [...]}, test: {key: [...]}}   (one value per evaluated epoch)
    selection     {rule, epoch, score, reference_source}
    metrics       {val: {metric: value}, test: {metric: value}} at the selected epoch
    delta_m       None | {metric_avg, task_avg, reference: {values, source, details}}
    timing        {train_s, eval_s, steps, step_median_s, step_p10_s, step_p90_s, synchronized}
    memory        {peak_bytes, device}
    diagnostics   {solver_fallbacks}
    extra         benchmark-specific (the toy's final point and trajectory)
    environment   {python, torch, mtlbench, platform, host, device_name, git_commit,
                   slurm: {job_id, array_job_id, array_task_id, node, restart_count}}
    runner        {host, pid} of the process that wrote it (to tell a live run from a killed one)
    started_at / finished_at   ISO timestamps (UTC)
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

SCHEMA = "mtlbench.record/1"
STATUSES = ("running", "done", "failed", "diverged")


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
    return Path(results_dir) / f"{trial_id}.json"


def write_record(results_dir: Path, record: dict[str, Any]) -> Path:
    path = record_path(results_dir, record["trial_id"])
    atomic_write_json(path, record)
    return path


def read_record(path: Path) -> dict[str, Any]:
    """One record; raises ``ValueError`` when the file is not a valid record."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not readable JSON ({error})") from error
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not an {SCHEMA} record")
    return data


def iter_records(results_dir: Path, *, strict: bool = False) -> Iterator[dict[str, Any]]:
    """All records under ``results_dir`` (recursively). Corrupt or foreign JSON files are
    reported with a warning and skipped (``strict=True`` raises instead)."""
    root = Path(results_dir)
    if not root.exists():
        raise FileNotFoundError(f"results folder {root} does not exist")
    for path in sorted(root.rglob("*.json")):
        parts = path.relative_to(root).parts
        if any(p.startswith(".") for p in parts) or {"checkpoints", "references"} & set(parts[:-1]):
            continue
        try:
            yield read_record(path)
        except ValueError as error:
            if strict:
                raise
            warnings.warn(f"skipped {error}", stacklevel=2)


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """One flat row of a record: config, status, Delta m, timing and per-metric test values."""
    cfg = record.get("config", {})
    row: dict[str, Any] = {
        "trial_id": record.get("trial_id"),
        "sweep": record.get("sweep"),
        "benchmark": cfg.get("benchmark"),
        "method": cfg.get("method"),
        "mode": cfg.get("mode"),
        "task": cfg.get("task"),
        "seed": cfg.get("seed"),
        "status": record.get("status"),
        "hparams": json.dumps(cfg.get("hparams", {}), sort_keys=True),
        "protocol": json.dumps(cfg.get("protocol", {}), sort_keys=True),
        "policies": json.dumps(cfg.get("policies", {}), sort_keys=True),
        "selected_epoch": (record.get("selection") or {}).get("epoch"),
        "selection_rule": (record.get("selection") or {}).get("rule"),
    }
    dm = record.get("delta_m") or {}
    row["delta_m"] = dm.get("metric_avg")
    row["delta_m_task_avg"] = dm.get("task_avg")
    timing = record.get("timing") or {}
    for key in ("train_s", "eval_s", "steps", "step_median_s"):
        row[key] = timing.get(key)
    row["peak_bytes"] = (record.get("memory") or {}).get("peak_bytes")
    for split in ("test", "val"):
        for name, value in ((record.get("metrics") or {}).get(split) or {}).items():
            row[f"{split}/{name}"] = value
    diverged = record.get("diverged") or {}
    row["diverged_step"] = diverged.get("step")
    row["solver_fallbacks"] = (record.get("diagnostics") or {}).get("solver_fallbacks")
    return row


def load_results(path: str | Path, *, strict: bool = False) -> pd.DataFrame:
    """All run records under ``path`` as a DataFrame, one row per trial.

    Columns: ``trial_id, sweep, benchmark, method, mode, task, seed, status, hparams,
    protocol, policies`` (JSON strings, so rows with equal settings group together),
    ``selected_epoch, selection_rule, delta_m, delta_m_task_avg, train_s, eval_s, steps,
    step_median_s, peak_bytes, diverged_step, solver_fallbacks`` and ``test/<metric>``,
    ``val/<metric>``.
    """
    rows = [flatten(r) for r in iter_records(Path(path), strict=strict)]
    columns = list(flatten({}).keys())
    return pd.DataFrame(rows, columns=None if rows else columns)
