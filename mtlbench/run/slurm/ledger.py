"""The submissions ledger and what Slurm says about its jobs (``squeue``, ``sacct``).

``<results>/.submissions/<trial_id>.submission`` (JSON, written atomically, under a lock) keeps
each trial's job id, job name, submitit folder and log paths; a resubmission keeps the earlier
entries under ``history``. Nothing here imports submitit.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mtlbench.records import atomic_write_json
from mtlbench.run.sync import file_lock

# squeue states of a job that is still in the system (it may run, or run again)
ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "RUNNING",
        "CONFIGURING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SUSPENDED",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
        "PREEMPTED",
    }
)


def ledger_dir(results: Path) -> Path:
    return Path(results) / ".submissions"


def ledger_path(results: Path, trial_id: str) -> Path:
    return ledger_dir(results) / f"{trial_id}.submission"


def read_ledger(results: Path, trial_id: str) -> dict[str, Any] | None:
    try:
        return json.loads(ledger_path(results, trial_id).read_text())
    except (OSError, ValueError):
        return None


def iter_ledger(results: Path) -> Iterator[dict[str, Any]]:
    """Every readable ledger entry of ``results``, in trial-id order."""
    folder = ledger_dir(results)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.submission")):
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(entry, dict) and entry.get("trial_id"):
            yield entry


def write_ledger(results: Path, entry: dict[str, Any]) -> None:
    """Record a submission; the trial's previous entry moves into ``history``."""
    previous = read_ledger(results, entry["trial_id"])
    if previous is not None:
        history = previous.pop("history", [])
        entry = {**entry, "history": [*history, previous]}
    atomic_write_json(ledger_path(results, entry["trial_id"]), entry)


@contextlib.contextmanager
def ledger_lock(results: Path) -> Iterator[None]:
    """One submitter at a time per results folder (check the queue, submit, write the ledger)."""
    with file_lock(ledger_dir(results) / ".lock"):
        yield


def squeue_states() -> dict[str, tuple[str, str]]:
    """``{job_id: (state, job name)}`` of this user's jobs, one line per array task
    (``123_4``). Raises ``RuntimeError`` when ``squeue`` does not answer."""
    exe = shutil.which("squeue")
    if exe is None:
        raise RuntimeError("squeue is not on PATH")
    try:
        out = subprocess.run(
            [exe, "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%j"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise RuntimeError(f"squeue failed: {error}") from error
    if out.returncode != 0:
        raise RuntimeError(f"squeue failed: {(out.stderr or out.stdout).strip()}")
    states = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|", 2)
        if len(parts) == 3 and parts[0]:
            states[parts[0]] = (parts[1].upper(), parts[2])
    return states


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    """How jobs ended, from ``sacct`` ({} when accounting does not answer)."""
    exe = shutil.which("sacct")
    if exe is None or not job_ids:
        return {}
    try:
        out = subprocess.run(
            [exe, "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    states = {}
    for line in out.stdout.splitlines() if out.returncode == 0 else []:
        job, _, state = line.strip().partition("|")
        if job and state:
            states[job] = state
    return states


def tail(path: str | Path | None, lines: int = 5) -> list[str]:
    """The last ``lines`` non-empty lines of a text file ([] when it cannot be read)."""
    if not path:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]
