"""Waiting for submitted trials: progress, failures with their logs, and no hang.

The loop polls the jobs' result files every second and ``sacct`` every ``poll_s`` seconds
(submitit's ``get_info(mode="force")``); per-trial progress comes from the progress files the
jobs write (:mod:`mtlbench.run.progress`). A cancelled or killed job is seen through ``sacct``;
a job that neither ``sacct`` nor ``squeue`` knows any more counts as lost after
``lost_after_s``. Ctrl-C stops waiting, not the jobs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtlbench.records import read_record, record_path
from mtlbench.run.lease import ELSEWHERE
from mtlbench.run.progress import ProgressView
from mtlbench.run.slurm.ledger import tail
from mtlbench.run.state import FINISHED, JobStates
from mtlbench.trial import ResolvedTrial

# submitit's own list of states it keeps waiting on
_INCOMPLETE = {"READY", "PENDING", "RUNNING", "UNKNOWN", "REQUEUED", "COMPLETING", "PREEMPTED"}


@dataclass
class Submitted:
    """One submitted trial: its submitit job and its ledger entry."""

    trial: ResolvedTrial
    job: Any
    entry: dict[str, Any]


def job_state(job: Any) -> str:
    try:
        return str(job.state or "UNKNOWN").split()[0].upper()
    except Exception:  # noqa: BLE001 - a state query that fails is just unknown
        return "UNKNOWN"


def _refresh(job: Any) -> None:
    """One forced sacct call for every job still watched."""
    with contextlib.suppress(Exception):
        job.get_info(mode="force")


def _check_lost(
    remaining: dict[str, Submitted], absent_since: dict[str, float], now: float
) -> None:
    """Jobs neither sacct nor squeue knows (no accounting, purged records) start their grace
    period; jobs seen again leave it."""
    unknown = [
        tid
        for tid, s in remaining.items()
        if job_state(s.job) == "UNKNOWN" and not s.job.paths.result_pickle.exists()
    ]
    if not unknown:
        absent_since.clear()
        return
    jobs = JobStates()
    if jobs.queue() is None:
        return  # Slurm does not answer: no grace period starts
    for tid in list(absent_since):
        if tid not in unknown:
            del absent_since[tid]
    for tid in unknown:
        if jobs.state(remaining[tid].entry):
            absent_since.pop(tid, None)
        else:
            absent_since.setdefault(tid, now)


def outcome(results: Path, sub: Submitted, state: str) -> tuple[str, str]:
    """The trial's status (from its record when there is one) and, for a failure, why."""
    record: dict[str, Any] | None = None
    path = record_path(results, sub.trial.trial_id)
    with contextlib.suppress(ValueError, OSError):
        record = read_record(path) if path.exists() else None  # type: ignore[assignment]
    status = (record or {}).get("status")
    answer = None
    if sub.job.paths.result_pickle.exists():
        with contextlib.suppress(Exception):
            answer = sub.job.result()
        error = None
        with contextlib.suppress(Exception):
            error = sub.job.exception()
        if error is not None:
            said = str(error).strip()
            return "failed", f"the job raised: {said.splitlines()[-1] if said else 'error'}"
    if answer == ELSEWHERE:
        return ELSEWHERE, ""
    if status in FINISHED:
        return status, ""
    if status == "failed":
        err = (record or {}).get("error") or {}
        return "failed", f"{err.get('type', 'error')}: {err.get('message', '')}"
    if state in _INCOMPLETE or state == "LOST":
        return "lost", "the job ended without a result and the scheduler no longer knows it"
    return state.lower(), f"the job ended as {state} without finishing the trial"


def _slots(submitted: list[Submitted], executor: Any) -> int:
    """How many tasks may run at once (for the time-left estimate)."""
    by_folder: dict[str, int] = {}
    for s in submitted:
        by_folder[s.entry["folder"]] = by_folder.get(s.entry["folder"], 0) + 1
    cap = executor.defaults.get("array_parallelism")
    return sum(min(n, cap) if isinstance(cap, int) else n for n in by_folder.values())


def wait_for(
    executor: Any,
    submitted: list[Submitted],
    sweep: Any,
    echo: Callable[[str], None],
    progress: bool = True,
    run: str | None = None,
) -> dict[str, str]:
    """Wait until every submitted trial has ended; ``{trial_id: status}``."""
    statuses: dict[str, str] = {}
    remaining = {s.trial.trial_id: s for s in submitted}
    failures: list[tuple[Submitted, str]] = []
    view = ProgressView(
        sweep.name,
        sweep.results,
        [s.trial for s in submitted],
        slots=_slots(submitted, executor),
        run=run,
        enabled=progress,
    )
    last_poll = time.monotonic()
    absent_since: dict[str, float] = {}
    try:
        with view:
            while remaining:
                now = time.monotonic()
                if now - last_poll >= executor.poll_s:
                    last_poll = now
                    _refresh(next(iter(remaining.values())).job)
                    if executor.cluster == "slurm":
                        _check_lost(remaining, absent_since, now)
                for tid, sub in list(remaining.items()):
                    lost = tid in absent_since and now - absent_since[tid] >= executor.lost_after_s
                    if not (sub.job.done() or lost):
                        continue
                    state = "LOST" if lost else job_state(sub.job)
                    status, reason = outcome(sweep.results, sub, state)
                    statuses[tid] = status
                    del remaining[tid]
                    view.finish(tid, status)
                    if status not in (*FINISHED, ELSEWHERE):
                        failures.append((sub, reason))
                        view.note(f"{status}: {tid} (job {sub.entry['job_id']}): {reason}")
                if remaining:  # result files: every second, less often for big sweeps
                    time.sleep(1.0 if len(remaining) <= 200 else 5.0)
    except KeyboardInterrupt:
        ids = sorted({s.entry["job_id"].split("_")[0] for s in remaining.values()})
        echo(
            f"stopped waiting; {len(remaining)} trial(s) stay on the cluster "
            f"(scancel {' '.join(ids)} to stop them); `mtlbench status {sweep.results}`"
        )
        raise
    for sub, reason in failures:
        echo(failure_report(sweep.results, sub.entry, reason))
    return statuses


def failure_report(results: Path, entry: dict[str, Any], reason: str, lines: int = 5) -> str:
    """A failure with its logs: the record's traceback tail and the job's stderr tail."""
    out = [f"{entry['trial_id']} (job {entry.get('job_id')}): {reason}"]
    record = None
    with contextlib.suppress(ValueError, OSError):
        record = read_record(record_path(results, entry["trial_id"]))
    trace = ((record or {}).get("error") or {}).get("traceback")
    if trace:
        out.append("  traceback (last lines):")
        out += [f"    {line}" for line in trace.strip().splitlines()[-lines:]]
    for key in ("stderr", "stdout"):
        if entry.get(key):
            out.append(f"  {key}: {entry[key]}")
    err = tail(entry.get("stderr"), lines)
    if err:
        out.append("  stderr (last lines):")
        out += [f"    {line}" for line in err]
    return "\n".join(out)
