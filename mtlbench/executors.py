"""Executors run a sweep's trials; they share one interface and the same bookkeeping.

* ``local``: in-process (``workers: 1``) or a process pool sized to the machine, each worker
  with ``cores / workers`` torch threads.

Every executor asks :func:`pending` what is left: a trial whose record is ``done`` or
``diverged`` is never run again; ``failed`` ones only with ``retry_failed``; a ``running``
record whose process is gone (a killed sweep) is run again, from its checkpoint when one exists.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from mtlbench.records import read_record, record_path
from mtlbench.registry import ConfigError, unknown
from mtlbench.sweep import Sweep
from mtlbench.trial import ResolvedTrial

FINISHED = ("done", "diverged")


def checkpoint_path(results: Path, trial_id: str) -> Path:
    return Path(results) / "checkpoints" / f"{trial_id}.pt"


def _alive_here(record: dict[str, Any]) -> bool:
    """Whether a ``running`` record belongs to a live process on this host."""
    runner = record.get("runner") or {}
    if runner.get("host") != socket.gethostname() or not runner.get("pid"):
        return False
    try:
        os.kill(int(runner["pid"]), 0)
    except (OSError, ValueError):
        return False
    return int(runner["pid"]) != os.getpid()


def trial_status(results: Path, trial_id: str) -> str | None:
    path = record_path(results, trial_id)
    if not path.exists():
        return None
    try:
        return read_record(path).get("status")
    except ValueError:
        return "corrupt"


def pending(sweep: Sweep, retry_failed: bool = False) -> list[ResolvedTrial]:
    """The trials of ``sweep`` that still need to run."""
    todo = []
    for trial in sweep.trials:
        path = record_path(sweep.results, trial.trial_id)
        if not path.exists():
            todo.append(trial)
            continue
        try:
            record = read_record(path)
        except ValueError:
            todo.append(trial)  # corrupt: run again, the atomic write replaces it
            continue
        status = record.get("status")
        if status in FINISHED or (status == "failed" and not retry_failed):
            continue
        if status == "running" and _alive_here(record):
            continue
        todo.append(trial)
    return todo


def _threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def _run_one(resolved: ResolvedTrial, results: str, sweep: str, device: str, threads: int) -> str:
    import torch

    from mtlbench.trainer import run_trial

    torch.set_num_threads(threads)
    record = run_trial(
        resolved,
        Path(results),
        sweep=sweep,
        device=device,
        checkpoint=checkpoint_path(Path(results), resolved.trial_id),
    )
    if record["status"] == "done":
        checkpoint_path(Path(results), resolved.trial_id).unlink(missing_ok=True)
    return record["status"]


class Executor:
    """Runs trials and returns ``{trial_id: status}``."""

    def run(
        self, sweep: Sweep, trials: list[ResolvedTrial], progress: bool = True
    ) -> dict[str, str]:
        raise NotImplementedError


class LocalExecutor(Executor):
    def __init__(self, workers: int | str = "auto", device: str = "auto") -> None:
        if workers == "auto":
            workers = os.cpu_count() or 1
        if not isinstance(workers, int) or workers < 1:
            raise ConfigError(
                f"executor workers must be a positive integer or 'auto', got {workers!r}"
            )
        self.workers = workers
        self.device = device

    def run(
        self, sweep: Sweep, trials: list[ResolvedTrial], progress: bool = True
    ) -> dict[str, str]:
        from tqdm import tqdm

        statuses: dict[str, str] = {}
        bar = tqdm(
            total=len(trials), desc=f"sweep {sweep.name}", disable=not progress, unit="trial"
        )
        by_id = {t.trial_id: t for t in trials}
        for stage in sweep.stages():
            stage = [t for t in stage if t.trial_id in by_id]
            workers = min(self.workers, len(stage)) or 1
            threads = _threads_per_worker(workers)
            args = (str(sweep.results), sweep.name, self.device, threads)
            if workers == 1:
                for trial in stage:
                    statuses[trial.trial_id] = _run_one(trial, *args)
                    bar.update()
                    bar.set_postfix_str(summary(statuses.values()))
                continue
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(_run_one, t, *args): t for t in stage}
                for future in as_completed(futures):
                    trial = futures[future]
                    try:
                        statuses[trial.trial_id] = future.result()
                    except Exception as error:  # noqa: BLE001 - a worker died; the sweep goes on
                        statuses[trial.trial_id] = "failed"
                        bar.write(f"{trial.trial_id}: worker failed: {error}")
                    bar.update()
                    bar.set_postfix_str(summary(statuses.values()))
        bar.close()
        return statuses


def summary(statuses: Iterable[str]) -> str:
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    return " ".join(f"{k}={v}" for k, v in sorted(counts.items()))


EXECUTORS = {"local": LocalExecutor}


def make_executor(options: dict[str, Any], device: str = "auto") -> Executor:
    options = dict(options)
    kind = options.pop("kind", "local")
    if kind == "slurm":
        import mtlbench.slurm  # noqa: F401  (registers the SLURM executor)
    if kind not in EXECUTORS:
        raise unknown("executor", kind, EXECUTORS)
    try:
        return EXECUTORS[kind](**options, device=device)
    except TypeError as error:
        raise ConfigError(f"executor {kind!r}: {error}") from None


def describe_plan(sweep: Sweep, trials: list[ResolvedTrial]) -> str:
    lines = [
        f"sweep {sweep.name}: {len(trials)} of {len(sweep.trials)} trials to run -> {sweep.results}"
    ]
    for t in trials:
        lines.append(f"  {t.trial_id}  {json.dumps(t.hparams, sort_keys=True)}")
    return "\n".join(lines)
