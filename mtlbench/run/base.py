"""What every executor shares: the interface, :func:`run_one` (one trial, claimed, with its
progress reported), the checkpoint paths, and the plan as the dry run prints it.

An executor gets the trials that :func:`mtlbench.run.state.pending` left to run, in run order
(single-task trials first), and returns ``{trial_id: status}`` for the trials it was given:
``done``, ``diverged`` or ``failed`` for those it ran, :data:`ELSEWHERE` for those another
process claimed first or had finished meanwhile.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mtlbench.registry import ConfigError, unknown
from mtlbench.run.lease import ELSEWHERE, Lease, LeaseLost
from mtlbench.run.progress import EpochReporter
from mtlbench.run.state import FINISHED, JobStates, trial_status
from mtlbench.trial import ResolvedTrial

# kind -> "module:class"; imported on demand, so that `kind: local` never loads submitit
EXECUTORS = {
    "local": "mtlbench.run.local:LocalExecutor",
    "slurm": "mtlbench.run.slurm.executor:SlurmExecutor",
}


def checkpoint_path(results: Path, trial_id: str) -> Path:
    return Path(results) / "checkpoints" / f"{trial_id}.pt"


def run_one(
    resolved: ResolvedTrial,
    results: str | Path,
    sweep: str | None,
    device: str,
    threads: int,
    run: str | None = None,
) -> str:
    """Claim ``resolved``, run it to its record and release it; returns the record's status, or
    :data:`ELSEWHERE` when another process holds the trial or has finished it.

    While it runs, its progress file says which epoch it reached (``run`` tags it as this
    sweep's); a lease lost to another process stops it before the next epoch, without a record.
    A trial that ends ``done`` loses its checkpoint; the trainer removes it for the others.
    """
    import torch

    from mtlbench.trainer import run_trial

    results = Path(results)
    tid = resolved.trial_id
    claim = Lease.claim(results, tid, JobStates().active)
    if not isinstance(claim, Lease):
        return ELSEWHERE
    with claim as lease:
        if trial_status(results, tid) in FINISHED:
            return ELSEWHERE  # finished by another process before we claimed it
        torch.set_num_threads(threads)
        reporter = EpochReporter(results, tid, resolved.protocol.epochs, run)

        def on_epoch(epoch: int) -> None:
            reporter(epoch)
            lease.check()

        try:
            record = run_trial(
                resolved,
                results,
                sweep=sweep,
                device=device,
                checkpoint=checkpoint_path(results, tid),
                on_epoch=on_epoch,
            )
        except LeaseLost:
            return ELSEWHERE
        finally:
            reporter.remove()
        if record["status"] == "done":
            checkpoint_path(results, tid).unlink(missing_ok=True)
        return record["status"]


def tidy_checkpoints(results: Path, trials: Iterable[ResolvedTrial]) -> int:
    """Remove the checkpoints of finished trials (a process killed between a trial's final
    record and its checkpoint's removal leaves one behind); returns how many."""
    removed = 0
    for trial in trials:
        path = checkpoint_path(results, trial.trial_id)
        if path.exists() and trial_status(results, trial.trial_id) in FINISHED:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


class Executor(ABC):
    """Runs trials; ``run`` returns ``{trial_id: status}`` (see the module docstring). An
    executor that does more than run the trials in order says what in a ``plan(sweep, trials)``
    method, which the dry run prints (the Slurm executor: its job arrays)."""

    @abstractmethod
    def run(self, sweep: Any, trials: list[ResolvedTrial], progress: bool = True) -> dict[str, str]:
        """Run ``trials`` of ``sweep`` (already in run order) into ``sweep.results``."""


def make_executor(options: dict[str, Any], device: str = "auto") -> Executor:
    """The executor a spec's ``executor:`` section asks for (``kind`` defaults to local)."""
    options = dict(options)
    kind = options.pop("kind", "local")
    if kind not in EXECUTORS:
        raise unknown("executor", kind, EXECUTORS)
    module, _, name = EXECUTORS[kind].partition(":")
    cls = getattr(importlib.import_module(module), name)
    try:
        return cls(**options, device=device)
    except TypeError as error:
        raise ConfigError(f"executor {kind!r}: {error}") from None
