"""Arrays a Slurm submitter holds back, written down for ``mtlbench status``.

When the next job array would take the user over the cluster's submit limit
(:mod:`mtlbench.run.slurm.batches`), the submitter keeps it and submits it once earlier jobs have
left the queue. Meanwhile ``<results>/.submissions/held.json`` says which arrays wait, why, and
which process will submit them; it is removed when the last one is submitted. A file whose
submitter is gone (a dead pid on this host) is ignored: its trials are pending, and running the
sweep again submits them. Nothing here imports submitit.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtlbench.records import atomic_write_json
from mtlbench.run.lease import pid_alive, pid_start
from mtlbench.run.slurm.ledger import ledger_dir


def held_path(results: Path) -> Path:
    return ledger_dir(results) / "held.json"


@dataclass
class Held:
    """The arrays one submitter holds: each a list of trial ids with its benchmarks and stage."""

    reason: str  # e.g. "MaxSubmitJobs=8 (association root/default): 8 of your jobs queued"
    arrays: list[dict[str, Any]] = field(default_factory=list)
    host: str = field(default_factory=socket.gethostname)
    pid: int = 0
    pid_start: str | None = None
    since: float = field(default_factory=time.time)

    @property
    def trial_ids(self) -> list[str]:
        return [t for a in self.arrays for t in a["trials"]]

    def describe(self) -> str:
        """One line: how many trials in how many arrays, why, and who submits them."""
        waited = time.time() - self.since
        return (
            f"{len(self.trial_ids)} trial(s) in {len(self.arrays)} array(s) wait for the submit "
            f"limit ({self.reason}); pid {self.pid} on {self.host} submits them as the queue "
            f"drains (held for {waited / 60:.0f} min)"
        )


def write_held(results: Path, held: Held) -> None:
    """Write (or replace) the held arrays of ``results``; an empty list removes the file."""
    if not held.arrays:
        clear_held(results)
        return
    atomic_write_json(held_path(results), held.__dict__)


def clear_held(results: Path) -> None:
    held_path(results).unlink(missing_ok=True)


def read_held(results: Path) -> Held | None:
    """The arrays held for ``results``; None when none are (or their submitter is gone)."""
    try:
        data = json.loads(held_path(results).read_text())
        held = Held(**data)
    except (OSError, ValueError, TypeError):
        return None
    if held.host == socket.gethostname() and not pid_alive(held.pid, held.pid_start):
        return None
    return held


def this_process(reason: str, arrays: list[dict[str, Any]]) -> Held:
    """A :class:`Held` owned by this process."""
    pid = os.getpid()
    return Held(reason=reason, arrays=arrays, pid=pid, pid_start=pid_start(pid))
