"""What every executor shares: the interface, the :class:`Batch` it runs, :func:`run_one`
(one trial, claimed, with its progress reported) and the checkpoint paths.

An executor gets a :class:`Batch`: the trials that the sweep driver
(:mod:`mtlbench.run.driver`) left to run, in typed stages (single-task trials first), and
returns ``{trial_id: status}`` for the trials it ran: ``done``, ``diverged`` or ``failed``,
:data:`ELSEWHERE` for those another process claimed first or had finished meanwhile.
"""

from __future__ import annotations

import importlib
import pickle
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mtlbench.plugins import Plugin, load
from mtlbench.run.lease import ELSEWHERE, Lease, LeaseLost
from mtlbench.run.options import ExecutorOptions, executor_options
from mtlbench.run.progress import EpochReporter
from mtlbench.run.slurm.resources import Resources
from mtlbench.run.state import FINISHED, JobStates, trial_status
from mtlbench.stage import Stage
from mtlbench.trainer import run_trial
from mtlbench.trial import ResolvedTrial, split_stages

if TYPE_CHECKING:
    from mtlbench.sweep import Sweep

__all__ = [
    "ELSEWHERE",
    "Batch",
    "Executor",
    "TrialTask",
    "make_executor",
    "run_one",
    "tidy_checkpoints",
]

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
    plugins: tuple[Plugin, ...] = (),
) -> str:
    """Claim ``resolved``, run it to its record and release it; returns the record's status, or
    :data:`ELSEWHERE` when another process holds the trial or has finished it. ``plugins``: the
    sweep's given plug-ins (imported first, named in the record).

    While it runs, its progress file says which epoch it reached (``run`` tags it as this
    sweep's); a lease lost to another process stops it before the next epoch, without a record.
    A trial that ends ``done`` loses its checkpoint; the trainer removes it for the others.
    """
    load(plugins)
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
                plugins=plugins,
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


def _unpack_task(plugins: tuple[Plugin, ...], trial: bytes) -> TrialTask:
    load(plugins)  # first: the trial may hold a plug-in's objects (its benchmark's protocol)
    return TrialTask(pickle.loads(trial), plugins)  # noqa: S301 - our own pickle


@dataclass(frozen=True)
class TrialTask:
    """One trial as it travels to the process that runs it (a spawned pool worker, a Slurm
    array task), with the sweep's given plug-ins: unpickling imports them before the trial,
    whose protocol may be a class of a file plug-in that only they can import."""

    trial: ResolvedTrial
    plugins: tuple[Plugin, ...] = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_unpack_task, (self.plugins, pickle.dumps(self.trial)))

    def run(
        self, results: str | Path, sweep: str | None, device: str, threads: int, run: str | None
    ) -> str:
        """:func:`run_one` of the trial, its plug-ins imported."""
        return run_one(self.trial, results, sweep, device, threads, run, self.plugins)


@dataclass(frozen=True)
class Batch:
    """What an executor runs: the sweep's name and results folder, the trials to run in
    :class:`~mtlbench.trial.Stage` s (in run order; each stage finishes before the next
    starts), each benchmark's checked Slurm resources, and the plug-ins given to the sweep
    (``plugins:``, ``--plugin``), which every process that runs a trial imports."""

    name: str
    results: Path
    stages: tuple[Stage, ...]
    resources: Mapping[str, Resources] = field(default_factory=dict)
    plugins: tuple[Plugin, ...] = ()

    def task(self, trial: ResolvedTrial) -> TrialTask:
        """``trial`` with the batch's plug-ins, ready to send to another process."""
        return TrialTask(trial, self.plugins)

    @property
    def trials(self) -> list[ResolvedTrial]:
        """Every trial, in run order."""
        return [t for stage in self.stages for t in stage]

    @classmethod
    def of(cls, sweep: Sweep, trials: Iterable[ResolvedTrial] | None = None) -> Batch:
        """``trials`` of ``sweep`` (default: all of them) in their stages."""
        chosen = sweep.trials if trials is None else trials
        stages = tuple(split_stages(chosen))
        return cls(sweep.name, Path(sweep.results), stages, dict(sweep.resources), sweep.plugins)


class Executor(ABC):
    """Runs trials; ``run`` returns ``{trial_id: status}`` (see the module docstring). An
    executor that does more than run the trials in order says what in a ``plan(batch)``
    method, which the dry run prints (the Slurm executor: its job arrays)."""

    @classmethod
    @abstractmethod
    def from_options(cls, options: ExecutorOptions, device: str) -> Executor:
        """The executor that ``options`` (of its kind) describe."""

    @abstractmethod
    def run(self, batch: Batch, progress: bool = True) -> dict[str, str]:
        """Run the trials of ``batch``, stage after stage, into ``batch.results``."""

    def plan(self, batch: Batch) -> str:
        """What :meth:`run` would do beyond running the trials in order ('' for nothing)."""
        return ""


def make_executor(
    options: ExecutorOptions | Mapping[str, Any] | None = None, device: str = "auto"
) -> Executor:
    """The executor that checked ``options`` (a spec's ``executor:`` section, parsed when it
    loaded) ask for; a plain mapping is checked first (:func:`executor_options`)."""
    if not isinstance(options, ExecutorOptions):
        options = executor_options(dict(options or {}))
    module, _, name = EXECUTORS[options.kind].partition(":")
    cls = getattr(importlib.import_module(module), name)
    return cls.from_options(options, device)
