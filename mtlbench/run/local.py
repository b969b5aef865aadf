"""The local executor: trials in this process (``workers: 1``) or in a process pool sized to
the machine, each worker with ``cores / workers`` torch threads.

The batch's stages run in order (single-task trials first, since the multi-task trials of a
benchmark read their reference from them). Every trial goes through
:func:`mtlbench.run.base.run_one`, which claims it first: two sweeps on one results folder
split the trials between them.
"""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

from mtlbench.registry import ConfigError
from mtlbench.run.base import Batch, Executor, TrialTask, run_one
from mtlbench.run.options import ExecutorOptions
from mtlbench.run.progress import ProgressView


def threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


class LocalExecutor(Executor):
    """Runs trials on this machine (see the module docstring)."""

    def __init__(self, workers: int | str = "auto", device: str = "auto") -> None:
        if workers == "auto":
            workers = os.cpu_count() or 1
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ConfigError(
                f"executor workers must be a positive integer or 'auto', got {workers!r}"
            )
        self.workers = workers
        self.device = device

    @classmethod
    def from_options(cls, options: ExecutorOptions, device: str) -> LocalExecutor:
        return cls(options.workers, device)

    def run(self, batch: Batch, progress: bool = True) -> dict[str, str]:
        statuses: dict[str, str] = {}
        run = uuid.uuid4().hex
        slots = min(self.workers, max((len(s) for s in batch.stages), default=1))
        view = ProgressView(batch.name, batch.results, batch.trials, slots=slots, run=run)
        view.enabled = progress
        with view:
            for stage in batch.stages:
                workers = min(self.workers, len(stage))
                args = (str(batch.results), batch.name, self.device, threads_per_worker(workers))
                if workers == 1:
                    for trial in stage:
                        statuses[trial.trial_id] = run_one(trial, *args, run, batch.plugins)
                        view.finish(trial.trial_id, statuses[trial.trial_id])
                else:
                    tasks = [batch.task(t) for t in stage]
                    statuses.update(self._pool(tasks, workers, args, run, view))
        return statuses

    @staticmethod
    def _pool(
        tasks: list[TrialTask], workers: int, args: tuple, run: str, view: ProgressView
    ) -> dict[str, str]:
        """Each task in a spawned worker (which imports the task's plug-ins: a fresh process
        has only the built-ins and the installed plug-ins)."""
        statuses: dict[str, str] = {}
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(TrialTask.run, t, *args, run): t.trial for t in tasks}
            for future in as_completed(futures):
                trial = futures[future]
                try:
                    statuses[trial.trial_id] = future.result()
                except Exception as error:  # noqa: BLE001 - a worker died; the sweep goes on
                    statuses[trial.trial_id] = "failed"
                    view.note(f"{trial.trial_id}: worker failed: {error}")
                view.finish(trial.trial_id, statuses[trial.trial_id])
        return statuses
