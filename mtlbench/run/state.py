"""The one answer to "what state is this trial in?", for the runner, the Slurm submitter and
``mtlbench status``.

Four sources, read in this order of authority:

1. the **record** (``<results>/<trial_id>.json``): ``done``, ``diverged`` and ``failed`` are
   final; ``running`` says a process started it;
2. the **lease** (:mod:`mtlbench.run.lease`): a live owner means the trial runs now;
3. the Slurm **ledger** and the queue (``squeue``, and ``sacct`` for how a job ended): a job
   still in the queue will run it; a job that left it without a final record was interrupted;
4. the record's ``runner`` pid, for records written before leases existed.

Statuses: ``done``, ``diverged``, ``failed``, ``running``, ``pending`` (not started, or queued),
``interrupted`` (started, and its process or job is gone: run the sweep again to resume it from
its checkpoint). A record file that cannot be read counts as ``pending`` (running the trial
rewrites it).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtlbench.labels import trial_labels
from mtlbench.records import Record, read_record, record_path, scan
from mtlbench.registry import ConfigError
from mtlbench.run.lease import LeaseInfo, lease_path, owner_alive, pid_alive, read_lease
from mtlbench.run.progress import read_progress
from mtlbench.run.slurm.ledger import (
    ACTIVE_STATES,
    iter_ledger,
    ledger_dir,
    read_ledger,
    sacct_states,
    squeue_states,
)
from mtlbench.stage import Stage

if TYPE_CHECKING:  # the trial model imports the registries (torch); status needs no more
    from mtlbench.sweep import Sweep
    from mtlbench.trial import ResolvedTrial

FINISHED = ("done", "diverged")
ORDER = ("failed", "interrupted", "diverged", "running", "pending", "done")


class JobStates:
    """What Slurm says about jobs, asked once (``squeue`` is called on the first question)."""

    def __init__(self, queue: dict[str, tuple[str, str]] | None = None) -> None:
        self._queue = queue
        self.error: str | None = None

    def queue(self) -> dict[str, tuple[str, str]] | None:
        if self._queue is None and self.error is None:
            try:
                self._queue = squeue_states()
            except RuntimeError as error:
                self.error = str(error)
        return self._queue

    @property
    def answered(self) -> bool:
        """Whether ``squeue`` was asked and answered."""
        return self._queue is not None

    def active(self, job_id: str) -> bool | None:
        """Whether ``job_id`` is still in the queue (None when Slurm does not answer)."""
        queue = self.queue()
        return None if queue is None else queue.get(job_id, ("", ""))[0] in ACTIVE_STATES

    def state(self, entry: dict[str, Any] | None) -> str | None:
        """A ledger entry's job state: an active queue state, '' when the job left the queue,
        None when unknown. A job id now used by another job name is not ours."""
        if entry is None:
            return None
        if entry.get("cluster", "slurm") != "slurm":  # submitit's local executor: a pid
            if entry.get("host") not in (None, socket.gethostname()):
                return None
            return "RUNNING" if pid_alive(entry.get("job_id")) else ""
        queue = self.queue()
        if queue is None:
            return None
        state, name = queue.get(str(entry.get("job_id")), ("", ""))
        if entry.get("job_name") and name and name != entry["job_name"]:
            return ""
        return state if state in ACTIVE_STATES else ""


@dataclass
class TrialState:
    """Where one trial stands, and the evidence."""

    trial_id: str
    status: str = "pending"
    detail: str = ""
    benchmark: str = ""
    method: str = ""
    seed: Any = ""
    mode: str = "mtl"
    label: str = ""  # what tells it apart: ``toy ls seed=0 start=3`` (mtlbench.labels.trial_labels)
    config: dict[str, Any] = field(default_factory=dict)
    record: Record | None = None
    ledger: dict[str, Any] | None = None
    lease: LeaseInfo | None = None

    @property
    def job(self) -> str:
        return str((self.ledger or {}).get("job_id", ""))

    def runnable(self, retry_failed: bool = False) -> bool:
        """Whether a sweep should run it now."""
        return self.status in ("pending", "interrupted") or (
            retry_failed and self.status == "failed"
        )


def _describe(state: TrialState, planned: ResolvedTrial | None) -> None:
    cfg = (state.record or {}).get("config") or {}
    state.config = dict(cfg) or (planned.to_dict() if planned is not None else {})
    if cfg:
        task = f" ({cfg['task']})" if cfg.get("task") else ""
        state.benchmark, state.method = cfg.get("benchmark", ""), cfg.get("method", "") + task
        state.seed, state.mode = cfg.get("seed", ""), cfg.get("mode", "mtl")
    elif planned is not None:
        task = f" ({planned.task})" if planned.task else ""
        state.benchmark, state.method = planned.benchmark, planned.method + task
        state.seed, state.mode = planned.seed, planned.mode
    elif state.ledger is not None:
        state.benchmark = state.ledger.get("benchmark", "")
        state.mode = state.ledger.get("mode", "mtl")


def _final(state: TrialState, record: Record) -> bool:
    status = record.get("status")
    if status == "done":
        dm = (record.get("delta_m") or {}).get("metric_avg")
        epoch = (record.get("selection") or {}).get("epoch")
        state.status = "done"
        state.detail = (f"Δm% {dm:+.2f}, " if dm is not None else "") + f"epoch {epoch} selected"
    elif status == "diverged":
        state.status = "diverged"
        state.detail = f"at step {(record.get('diverged') or {}).get('step')}"
    elif status == "failed":
        err = record.get("error") or {}
        state.status = "failed"
        state.detail = f"{err.get('type', 'error')}: {err.get('message', '')}"[:100]
    elif status != "running":
        state.status, state.detail = "failed", f"unknown record status {status!r}"
    else:
        return False
    return True


def _running_detail(state: TrialState, results: Path) -> str:
    lease = state.lease
    assert lease is not None
    where = f"pid {lease.pid} on this host" if lease.here else f"on {lease.host} (pid {lease.pid})"
    if lease.slurm_job:
        where = f"job {lease.slurm_job}, {where}"
    progress = read_progress(results, state.trial_id)
    if progress:
        where += f", epoch {progress.get('epoch')}/{progress.get('epochs')}"
    return where


def classify(state: TrialState, results: Path, jobs: JobStates) -> TrialState:
    """Set ``state.status`` and ``state.detail`` from the evidence it holds."""
    record = state.record
    if record is not None and _final(state, record):
        return state
    if state.lease is not None and owner_alive(state.lease, jobs.active):
        state.status, state.detail = "running", _running_detail(state, results)
        return state
    job = jobs.state(state.ledger)
    if record is not None:  # running, and no live lease
        runner = record.get("runner") or {}
        if job:
            state.status, state.detail = "running", f"job {job.lower()}"
        elif runner.get("host") == socket.gethostname() and pid_alive(runner.get("pid")):
            state.status, state.detail = "running", f"pid {runner.get('pid')} on this host"
        else:
            state.status = "interrupted"
            state.detail = "its process or job is gone; run the sweep again to resume it"
        return state
    if state.ledger is not None:
        if job == "":
            state.status = "interrupted"
            state.detail = "the job left the queue without a record (cancelled before it ran?)"
        else:
            state.status, state.detail = "pending", f"job {(job or 'submitted').lower()}"
        return state
    state.status, state.detail = "pending", "not started"
    return state


def trial_states(
    results: Path, trials: Iterable[ResolvedTrial], jobs: JobStates | None = None
) -> list[TrialState]:
    """The state of each of ``trials`` (in their order) in ``results``."""
    results = Path(results)
    jobs = jobs or JobStates()
    out = []
    for trial in trials:
        state = TrialState(trial.trial_id)
        path = record_path(results, trial.trial_id)
        if path.exists():
            try:
                state.record = read_record(path)
            except ValueError:
                state.detail = "its record file is unreadable: it runs again"
        state.ledger = read_ledger(results, trial.trial_id)
        state.lease = read_lease(lease_path(results, trial.trial_id))
        _describe(state, trial)
        if state.record is None and state.detail:
            out.append(state)  # unreadable: pending
            continue
        out.append(classify(state, results, jobs))
    return out


def trial_status(results: Path, trial_id: str) -> str | None:
    """The status written in a trial's record (None without one, ``corrupt`` when unreadable)."""
    path = record_path(results, trial_id)
    if not path.exists():
        return None
    try:
        return read_record(path).get("status")
    except ValueError:
        return "corrupt"


def pending_stages(
    results: Path, stages: Iterable[Stage], retry_failed: bool = False
) -> list[Stage]:
    """The trials of ``stages`` that still need to run, in their stages (an emptied stage is
    left out). Finished ones never run again, failed ones only with ``retry_failed``; running
    ones (a live lease, or a started record whose job is still queued) are left alone. A trial
    whose Slurm job waits in the queue is pending: the Slurm submitter skips it
    (:func:`active_submissions`), and if a local sweep runs it first, the job finds it claimed
    or done."""
    stages = list(stages)
    ordered = [t for stage in stages for t in stage]
    states = trial_states(results, ordered)
    runnable = {
        t.trial_id for t, s in zip(ordered, states, strict=True) if s.runnable(retry_failed)
    }
    left = [Stage(s.kind, tuple(t for t in s if t.trial_id in runnable)) for s in stages]
    return [stage for stage in left if stage.trials]


def pending(sweep: Sweep, retry_failed: bool = False) -> list[ResolvedTrial]:
    """The trials of ``sweep`` that still need to run, in run order (:func:`pending_stages`
    of :meth:`mtlbench.sweep.Sweep.stages`)."""
    return [t for s in pending_stages(sweep.results, sweep.stages(), retry_failed) for t in s]


def active_submissions(
    results: Path, trial_ids: list[str], jobs: JobStates | None = None
) -> dict[str, dict[str, Any]]:
    """The ledger entries (with ``state``) of ``trial_ids`` whose job is still queued or
    running. Raises :class:`ConfigError` when Slurm does not answer and some may be."""
    jobs = jobs or JobStates()
    entries = [e for t in trial_ids if (e := read_ledger(results, t)) is not None]
    if any(e.get("cluster", "slurm") == "slurm" for e in entries) and jobs.queue() is None:
        raise ConfigError(
            f"cannot ask Slurm which trials are already queued ({jobs.error}); not submitting "
            f"trials that may be queued: {len(entries)} have a submission in {ledger_dir(results)}"
        )
    active = {}
    for entry in entries:
        state = jobs.state(entry)
        if state:
            active[entry["trial_id"]] = {**entry, "state": state}
    return active


@dataclass
class FolderStatus:
    """Every trial of a results folder (and of a spec), for ``mtlbench status``."""

    results: Path
    rows: list[TrialState] = field(default_factory=list)
    corrupt: list[tuple[Path, str]] = field(default_factory=list)
    queue_note: str | None = None

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(ORDER, 0)
        for row in self.rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        return counts

    @property
    def active(self) -> bool:
        return any(r.status in ("running", "pending") for r in self.rows)


def collect(results: str | Path, planned: list[ResolvedTrial] | None = None) -> FolderStatus:
    """The status of every trial with a record, a submission or a lease in ``results``, and of
    every ``planned`` trial; interrupted jobs say how they ended (``sacct``)."""
    results = Path(results)
    if not results.is_dir():
        raise ConfigError(f"results folder {results} does not exist")
    found = scan(results)
    status = FolderStatus(results, corrupt=found.skipped)
    records = found.by_trial()
    ledger = {e["trial_id"]: e for e in iter_ledger(results)}
    plan = {t.trial_id: t for t in planned or []}
    leases = {p.stem for p in (results / ".leases").glob("*.lease")}
    jobs = JobStates()
    for tid in sorted(set(records) | set(ledger) | set(plan) | leases):
        state = TrialState(tid, record=records.get(tid), ledger=ledger.get(tid))
        if tid in leases:  # 20,000 trials: open only the few lease files that exist
            state.lease = read_lease(lease_path(results, tid))
        _describe(state, plan.get(tid))
        status.rows.append(classify(state, results, jobs))
    if jobs.error and any(e.get("cluster", "slurm") == "slurm" for e in ledger.values()):
        status.queue_note = f"Slurm did not answer ({jobs.error}): job states unknown"
    gone = [r for r in status.rows if r.status == "interrupted" and r.job and jobs.answered]
    ended = sacct_states([r.job for r in gone]) if gone else {}
    for r in gone:
        if r.job in ended:
            r.detail = f"job {ended[r.job]}; run the sweep again to resume it"
    labels = trial_labels({r.trial_id: r.config for r in status.rows if r.config})
    for r in status.rows:
        r.label = labels.get(r.trial_id, r.benchmark)
    # problems first; within a status, single-task trials first (the order they run in)
    status.rows.sort(key=lambda r: (ORDER.index(r.status), r.mode != "stl", r.trial_id))
    return status
