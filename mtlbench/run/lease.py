"""Claims: a trial is leased by the one process that runs it.

Before a trial runs, its runner takes ``<results>/.leases/<trial_id>.lease``: a JSON file with
the owner's host, pid (and the pid's start time, so that a reused pid is not mistaken for the
owner), Slurm job, a random token and when it was taken. It is taken atomically: the content is
written to a private temporary file which is then hard-linked to the lease's name; ``link(2)``
fails when the name exists, so of two processes exactly one gets it, and a reader never sees a
half-written lease (the same protocol works on NFS, where ``O_EXCL`` was historically unsafe).

While it runs, the owner's heartbeat thread touches the file every :data:`HEARTBEAT_S` seconds
(its modification time is the heartbeat). A lease is **expired** when its owner is gone:

* on the same host, at once when the pid is dead (or now belongs to another process);
* in a Slurm job that the queue no longer knows (:mod:`mtlbench.run.state` asks ``squeue``);
* elsewhere, when the heartbeat is older than :data:`STALE_AFTER_S` (ten heartbeats).

An expired lease is taken over under a lock (``flock`` on ``.leases/.lock``): the claimant reads
it again, and only if it is still the same expired lease removes it and links its own. A requeued
Slurm job (same job id) takes over its own earlier incarnation's lease at once. The owner checks
its token at every heartbeat; a lease taken over from under it (a process stalled for longer
than :data:`STALE_AFTER_S`) makes it stop before the next epoch (:class:`LeaseLost`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtlbench.run.sync import Periodic, file_lock

ELSEWHERE = "elsewhere"  # what a runner says of a trial another process holds or has finished
HEARTBEAT_S = 30.0
STALE_AFTER_S = 10 * HEARTBEAT_S


class LeaseLost(BaseException):  # noqa: N818 - not an Exception: the trainer must not catch it
    """The lease was taken over by another process: stop without writing the record."""


def lease_dir(results: Path) -> Path:
    return Path(results) / ".leases"


def lease_path(results: Path, trial_id: str) -> Path:
    return lease_dir(results) / f"{trial_id}.lease"


def pid_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, from ``/proc``); None when it
    cannot be read (no such process, or no ``/proc``)."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return None
    return stat.rpartition(")")[2].split()[19]


def pid_alive(pid: Any, start: str | None = None) -> bool:
    """Whether process ``pid`` lives on this host (and, when ``start`` is given and ``/proc``
    says otherwise, is not a later process that reuses the number)."""
    try:
        os.kill(int(pid), 0)
    except PermissionError:
        pass  # it exists, owned by another user
    except (OSError, ValueError, TypeError):
        return False
    if start is None:
        return True
    now = pid_start(int(pid))
    return now is None or now == start


def slurm_job() -> str | None:
    """This process's Slurm job as ``squeue`` names it (``123_4`` for an array task)."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


@dataclass(frozen=True)
class LeaseInfo:
    """What a lease file says, and its heartbeat (the file's modification time)."""

    trial_id: str
    host: str
    pid: int
    token: str
    taken_at: float
    heartbeat: float
    pid_start: str | None = None
    slurm_job: str | None = None

    @property
    def here(self) -> bool:
        return self.host == socket.gethostname()

    def age(self, now: float | None = None) -> float:
        """Seconds since the last heartbeat."""
        return (time.time() if now is None else now) - self.heartbeat


def read_lease(path: Path) -> LeaseInfo | None:
    """The lease at ``path``; None when there is none (or it cannot be read, e.g. just removed)."""
    try:
        data = json.loads(path.read_text())
        beat = path.stat().st_mtime
        return LeaseInfo(
            trial_id=str(data["trial_id"]),
            host=str(data["host"]),
            pid=int(data["pid"]),
            token=str(data["token"]),
            taken_at=float(data["taken_at"]),
            heartbeat=beat,
            pid_start=data.get("pid_start"),
            slurm_job=data.get("slurm_job"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def owner_alive(info: LeaseInfo, job_active: Callable[[str], bool | None] | None = None) -> bool:
    """Whether the lease's owner may still be running (see the module docstring).

    ``job_active(job)`` says whether a Slurm job is still in the queue (None: unknown)."""
    if info.here:
        return pid_alive(info.pid, info.pid_start)
    if info.slurm_job and job_active is not None and job_active(info.slurm_job) is False:
        return False
    return info.age() < STALE_AFTER_S


def _token(info: LeaseInfo | None) -> str | None:
    return None if info is None else info.token


class Lease:
    """A lease this process holds. :meth:`claim` takes one; use it as a context manager to
    keep its heartbeat while the trial runs and release it at the end."""

    def __init__(self, path: Path, info: LeaseInfo) -> None:
        self.path = path
        self.info = info
        self.lost = threading.Event()
        self._heartbeat = Periodic(HEARTBEAT_S, self.beat)  # stops once beat() says lost

    # -- taking ---------------------------------------------------------------------------
    @classmethod
    def claim(
        cls,
        results: Path,
        trial_id: str,
        job_active: Callable[[str], bool | None] | None = None,
    ) -> Lease | LeaseInfo:
        """Take the trial's lease: a :class:`Lease` when this process now holds it, else the
        :class:`LeaseInfo` of the live owner that does."""
        path = lease_path(results, trial_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        mine = cls._new_info(trial_id)
        while True:
            if cls._link(path, mine):
                return cls(path, mine)
            held = read_lease(path)
            if held is None and not path.exists():
                continue  # removed between our link and our read: try again
            if held is not None and not cls._expired(held, mine, job_active):
                return held
            # expired, or unreadable (a write cut short): take it over
            with file_lock(lease_dir(results) / ".lock"):
                if _token(read_lease(path)) == _token(held):  # still the one we judged
                    path.unlink(missing_ok=True)
                if cls._link(path, mine):
                    return cls(path, mine)

    @staticmethod
    def _expired(
        held: LeaseInfo, mine: LeaseInfo, job_active: Callable[[str], bool | None] | None
    ) -> bool:
        if held.slurm_job and held.slurm_job == mine.slurm_job and held.pid != mine.pid:
            return True  # our own job's earlier incarnation (requeued or preempted)
        return not owner_alive(held, job_active)

    @staticmethod
    def _new_info(trial_id: str) -> LeaseInfo:
        now = time.time()
        pid = os.getpid()
        return LeaseInfo(
            trial_id=trial_id,
            host=socket.gethostname(),
            pid=pid,
            token=uuid.uuid4().hex,
            taken_at=now,
            heartbeat=now,
            pid_start=pid_start(pid),
            slurm_job=slurm_job(),
        )

    @staticmethod
    def _link(path: Path, info: LeaseInfo) -> bool:
        """Write ``info`` to a private file and link it to ``path``; False when ``path`` exists."""
        tmp = path.with_name(f".{path.name}.{info.token}.tmp")
        data = {k: v for k, v in info.__dict__.items() if k != "heartbeat"}
        tmp.write_text(json.dumps(data))
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    # -- holding --------------------------------------------------------------------------
    def beat(self) -> bool:
        """Touch the lease if it is still ours; False (and :attr:`lost` set) when it is not."""
        held = read_lease(self.path)
        if held is None or held.token != self.info.token:
            self.lost.set()
            return False
        with contextlib.suppress(OSError):
            os.utime(self.path)
        return True

    def check(self) -> None:
        """Raise :class:`LeaseLost` when the heartbeat found the lease taken over."""
        if self.lost.is_set():
            raise LeaseLost(f"lease of {self.info.trial_id} taken over by another process")

    def release(self) -> None:
        """Remove the lease if it is still ours."""
        held = read_lease(self.path)
        if held is not None and held.token == self.info.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Lease:
        self._heartbeat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._heartbeat.stop()
        self.release()
