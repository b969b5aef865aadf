"""Job arrays that fit the cluster: split by ``MaxArraySize``, held back by the submit limit.

The executor groups a stage's trials by resources into one array each. Here:

* **Split.** A group with more trials than its cap (:attr:`Limits.array_cap`: ``MaxArraySize``,
  whose bound is on the array's index, and the submit limit) becomes several arrays of at most
  the cap, in order; they run the same callable, so a sweep of 5,000 trials runs as five arrays
  on a cluster that keeps Slurm's default ``MaxArraySize=1001``.
* **Hold.** Before each array is submitted, the user's jobs in the queue (``squeue``, one per
  array task, as ``MaxSubmitJobs`` counts them) plus the array's tasks are compared with the
  submit limit. An array that would go over it is held: the submitter writes the held arrays
  down (:mod:`mtlbench.run.slurm.held`, which ``mtlbench status`` shows), waits ``poll_s``
  seconds and asks again, and submits it once earlier jobs have left the queue. An sbatch
  refusal that names the submit limit (a group limit, or one ``sacctmgr`` did not show) is
  treated the same way while jobs of the user are queued; otherwise it is an error.

Arrays keep their order, so the single-task arrays are all submitted before the multi-task
arrays that depend on them. Ctrl-C while holding stops the submitter; the held trials are then
pending, and running the sweep again submits them. Nothing here imports submitit.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtlbench.registry import ConfigError
from mtlbench.run.slurm.held import clear_held, this_process, write_held
from mtlbench.run.slurm.limits import Limits, queued_jobs, read_limits

# how sbatch says a submission would pass a submit limit (Slurm's job_submit error texts)
LIMIT_REFUSAL = re.compile(r"submit limit|MaxSubmitJob|SubmitJobLimit", re.IGNORECASE)


@dataclass
class Array:
    """One job array: part ``part`` of ``parts`` of a resource group's trials."""

    group: Any  # the executor's group (``benchmarks``, ``stage``, ``params``)
    trials: list[Any]
    limits: Limits
    index: int  # 1-based, over the whole submission
    part: int = 1
    parts: int = 1

    def describe(self) -> str:
        part = f", part {self.part} of {self.parts}" if self.parts > 1 else ""
        return f"{', '.join(self.group.benchmarks)} ({self.group.stage}{part})"

    def held_entry(self) -> dict[str, Any]:
        return {
            "benchmarks": list(self.group.benchmarks),
            "stage": self.group.stage,
            "trials": [t.trial_id for t in self.trials],
        }


class Gate:
    """The cluster's limits, read once per (account, partition, QOS) of a group."""

    def __init__(self, cluster: str, reader: Callable[..., Limits] = read_limits) -> None:
        self.cluster = cluster
        self.reader = reader
        self._cache: dict[tuple[Any, ...], Limits] = {}

    def limits(self, params: dict[str, Any]) -> Limits:
        """The limits for an array with these ``update_parameters`` (none off Slurm)."""
        if self.cluster != "slurm":
            return Limits()
        key = tuple(params.get(f"slurm_{k}") for k in ("account", "partition", "qos"))
        if key not in self._cache:
            self._cache[key] = self.reader(*key)
        return self._cache[key]


def split(todo: Sequence[tuple[Any, list[Any]]], gate: Gate) -> list[Array]:
    """Each (group, trials to submit) as arrays of at most the group's cap, in order."""
    batches: list[Array] = []
    for group, trials in todo:
        if not trials:
            continue
        limits = gate.limits(group.params)
        cap = limits.array_cap or len(trials)
        chunks = [trials[i : i + cap] for i in range(0, len(trials), cap)]
        for part, chunk in enumerate(chunks, 1):
            batches.append(Array(group, chunk, limits, len(batches) + 1, part, len(chunks)))
    return batches


def _over(batch: Array, queued: int | None) -> bool:
    limit = batch.limits.max_submit
    return limit is not None and queued is not None and queued + len(batch.trials) > limit


def submit_batches(
    results: Path,
    batches: list[Array],
    submit: Callable[[Array], None],
    *,
    echo: Callable[[str], None],
    poll_s: float,
    queued: Callable[[], int | None] = queued_jobs,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Submit every batch in order, holding those over the submit limit (module docstring).
    ``submit`` raises :class:`ConfigError` when sbatch refuses an array."""
    held = False
    try:
        for i, batch in enumerate(batches):
            said = False
            while True:
                now = queued() if batch.limits.max_submit is not None else None
                refused = None
                if not _over(batch, now):
                    try:
                        submit(batch)
                        break
                    except ConfigError as error:
                        if not LIMIT_REFUSAL.search(str(error)) or not (queued() or 0):
                            raise
                        refused = str(error)
                reason = (
                    f"{batch.limits.submit_source}: {now} of your jobs queued"
                    if refused is None
                    else "sbatch refused it for a submit limit"
                )
                write_held(results, this_process(reason, [b.held_entry() for b in batches[i:]]))
                held = True
                if not said:
                    echo(
                        f"holding the array of {batch.describe()}, {len(batch.trials)} "
                        f"trial(s): {reason}; it is submitted when earlier jobs have left the "
                        f"queue (`mtlbench status {results}` shows what is held)"
                    )
                    said = True
                sleep(poll_s)
            if said:  # the later arrays are written down again if they must wait
                clear_held(results)
    finally:
        if held:
            clear_held(results)
