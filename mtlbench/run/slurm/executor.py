"""The Slurm executor: a sweep's trials as job arrays through submitit.

* **One job array per (stage, resource group)**: trials with equal resources share one
  ``map_array`` submission; the single-task stage goes first and the multi-task trials of those
  benchmarks go into arrays that depend on it (``--dependency=afterany``), since they read their
  reference from the STL records; other benchmarks' arrays do not wait.
* **A fresh submitit folder per submission** (``<results>/.slurm/<stamp>-<random>-<group>``):
  job ids restart at 1 when a cluster's state is wiped, and a reused ``runs/%j`` folder can hand
  back an old result.
* **The ledger** (:mod:`.ledger`): before submitting, under a lock, the ledger's job ids are
  looked up in ``squeue`` (:func:`mtlbench.run.state.active_submissions`): a trial whose job is
  still pending or running is skipped with a message, never submitted twice.
* **Claims**: every array task runs its trial through :func:`mtlbench.run.base.run_one`, which
  takes the trial's lease first; a task whose trial another process holds (a local sweep on the
  same folder, a duplicate job) returns at once.
* **Preemption and time limits**: :class:`TrialRunner` is a ``submitit.helpers.Checkpointable``
  whose ``checkpoint()`` requeues the same trial; the trainer resumes from its per-epoch
  checkpoint and ends with the record an uninterrupted run writes.
* **Waiting**: :mod:`.waiting`.

``cluster: local`` runs the same path on this machine through submitit's local executor (one
process per trial, all at once): for tests and debugging, not for sweeps.
"""

from __future__ import annotations

import json
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable, DelayedSubmission

from mtlbench.registry import ConfigError
from mtlbench.run.base import Batch, Executor, TrialTask
from mtlbench.run.options import ExecutorOptions, SlurmOptions, executor_options
from mtlbench.run.slurm.batches import Array, Gate, split, submit_batches
from mtlbench.run.slurm.ledger import ledger_lock, read_ledger, write_ledger
from mtlbench.run.slurm.resources import (
    merge_resources,
    parse_resources,
    sbatch_script,
    slurm_parameters,
)
from mtlbench.run.slurm.waiting import Submitted, wait_for
from mtlbench.run.state import active_submissions
from mtlbench.trial import ResolvedTrial


class TrialRunner(Checkpointable):
    """The callable of every array task: runs one trial into ``results`` and returns its status
    (:func:`mtlbench.run.base.run_one`: the trial is claimed first).

    On preemption or at the time limit submitit calls :meth:`checkpoint`, which resubmits the
    same trial; the trainer then resumes from the checkpoint it wrote after the last finished
    epoch (model, optimizer, scheduler, method state, RNG, curves), so the final record is the
    one an uninterrupted run writes.
    """

    def __init__(
        self, results: str, sweep: str, device: str, threads: dict[str, int], run: str = ""
    ) -> None:
        self.results = results
        self.sweep = sweep
        self.device = device
        self.threads = threads  # per benchmark
        self.run = run or None  # tags the progress files for the submitter's view

    def __call__(self, task: TrialTask) -> str:
        """Run ``task`` (its plug-ins were imported when the job unpickled it)."""
        threads = self.threads.get(task.trial.benchmark, 1)
        return task.run(self.results, self.sweep, self.device, threads, self.run)

    def checkpoint(self, task: TrialTask) -> Any:
        """Requeue the same trial; the state is in the trainer's checkpoint on disk."""
        return DelayedSubmission(self, task)


@dataclass
class Group:
    """Trials of one stage that share resources: one job array."""

    stage: str
    benchmarks: list[str]
    trials: list[ResolvedTrial]
    params: dict[str, Any]
    threads: int


class SlurmExecutor(Executor):
    """Runs a sweep as Slurm job arrays through submitit (see the module's docstring)."""

    def __init__(
        self, device: str = "auto", options: ExecutorOptions | None = None, **raw: Any
    ) -> None:
        """``options``: the checked ``executor:`` section; ``raw`` keywords instead are checked
        here (:func:`~mtlbench.run.options.executor_options`)."""
        if options is not None and raw:
            raise TypeError("SlurmExecutor: give checked options or raw keywords, not both")
        if options is None:
            options = executor_options({"kind": "slurm", **raw})
        self.options: SlurmOptions = options.slurm
        self.cluster = self.options.cluster
        self.poll_s, self.lost_after_s = self.options.poll_s, self.options.lost_after_s
        self.wait = self.options.wait
        self.folder = Path(self.options.folder) if self.options.folder else None
        self.defaults = options.resources.as_dict()
        self.device = device

    @classmethod
    def from_options(cls, options: ExecutorOptions, device: str) -> SlurmExecutor:
        return cls(device, options)

    # -- planning ---------------------------------------------------------------------------
    def _merged(self, batch: Batch) -> dict[str, dict[str, Any]]:
        """Each benchmark's resources (checked when the spec loaded) over the defaults."""
        merged: dict[str, dict[str, Any]] = {}
        for bench in dict.fromkeys(t.benchmark for t in batch.trials):
            own = batch.resources.get(bench)
            merged[bench] = merge_resources(self.defaults, own.as_dict() if own else {})
        return merged

    def groups(self, batch: Batch) -> list[Group]:
        """The batch's stages (STL first) split into groups of equal resources."""
        merged = self._merged(batch)
        with_stl = {t.benchmark for t in batch.trials if t.mode == "stl"}
        groups: list[Group] = []
        for stage in batch.stages:
            by_key: dict[tuple[str, bool], list[ResolvedTrial]] = {}
            for t in stage:  # MTL trials waiting for STL ones: their own array
                key = (json.dumps(merged[t.benchmark], sort_keys=True), t.benchmark in with_stl)
                by_key.setdefault(key, []).append(t)
            for (key, _), members in by_key.items():
                resources = parse_resources(json.loads(key), "")[0]
                groups.append(
                    Group(
                        stage=members[0].mode,
                        benchmarks=list(dict.fromkeys(t.benchmark for t in members)),
                        trials=members,
                        params=slurm_parameters(resources, f"mtlbench-{batch.name}"),
                        threads=resources.torch_threads,
                    )
                )
        return groups

    def plan(self, batch: Batch) -> str:
        """What ``run`` would submit: the arrays, their trials and their sbatch headers."""
        groups = self.groups(batch)
        trials = batch.trials
        root = self._root(batch)
        stl_benches = {b for g in groups if g.stage == "stl" for b in g.benchmarks}
        lines = [
            f"SLURM plan ({self.cluster}): {len(trials)} trial(s) in {len(groups)} job "
            f"array(s); submitit folders: {root}/<submission>/, records: {batch.results}/"
        ]
        earlier = [t.trial_id for t in trials if read_ledger(batch.results, t.trial_id)]
        if earlier:
            lines.append(
                f"  {len(earlier)} of them were submitted before: those still pending or "
                "running in squeue will be skipped"
            )
        for i, g in enumerate(groups, 1):
            par = g.params.get("slurm_array_parallelism")
            waits = [b for b in g.benchmarks if b in stl_benches] if g.stage == "mtl" else []
            lines.append(
                f"array {i} ({g.stage}, {', '.join(g.benchmarks)}): {len(g.trials)} task(s)"
                + (f", at most {par} at once" if par else "")
                + f", {g.threads} torch thread(s) each"
                + (
                    f"; starts after the single-task array(s) of {', '.join(waits)} "
                    "(--dependency=afterany)"
                    if waits
                    else ""
                )
            )
            lines.append(f"  update_parameters: {json.dumps(g.params, sort_keys=True)}")
            script = sbatch_script(g.params, root / "<submission>", len(g.trials))
            lines += [f"  {s}" for s in script.splitlines() if s.startswith("#SBATCH")]
            lines += [f"  - {t.trial_id}" for t in g.trials]
        return "\n".join(lines)

    def _root(self, batch: Batch) -> Path:
        return (self.folder or Path(batch.results) / ".slurm").absolute()

    # -- submission -------------------------------------------------------------------------
    def _executor(self, folder: Path, params: dict[str, Any]) -> Any:
        import submitit  # optional heavy dependency: submitit (loaded by a Slurm sweep only)

        kwargs: dict[str, Any] = {"slurm_max_num_timeout": self.options.max_num_timeout}
        if self.options.python:
            kwargs["slurm_python"] = self.options.python
        ex = submitit.AutoExecutor(folder=folder, cluster=self.cluster, **kwargs)
        ex.update_parameters(**params)
        return ex

    def submit(
        self, batch: Batch, echo: Any = print, run: str = ""
    ) -> tuple[list[Submitted], list[dict[str, Any]]]:
        """Submit what is not already queued; returns (submitted, skipped ledger entries)."""
        groups = self.groups(batch)
        trials = batch.trials
        results = Path(batch.results).absolute()
        submitted: list[Submitted] = []
        with ledger_lock(results):
            active = active_submissions(results, [t.trial_id for t in trials])
            for entry in active.values():
                echo(
                    f"skipped {entry['trial_id']}: already {entry['state'].lower()} as job "
                    f"{entry['job_id']} (submitted {entry.get('submitted_at', '?')})"
                )
            stl_jobs: dict[str, list[str]] = {}  # benchmark -> STL job ids in flight
            for entry in active.values():
                if entry.get("mode") == "stl":
                    stl_jobs.setdefault(entry.get("benchmark", ""), []).append(entry["job_id"])
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]

            def one(array: Array) -> None:  # an array that fits the cluster (.batches)
                folder = self._root(batch) / f"{stamp}-{array.index}-{array.group.stage}"
                submitted.extend(
                    self._submit_group(
                        batch, array.group, array.trials, folder, stl_jobs, submitted, run
                    )
                )
                echo(
                    f"submitted {len(array.trials)} trial(s) of {array.describe()} as job "
                    f"{submitted[-1].entry['job_id'].split('_')[0]}; logs in {folder}"
                )

            todo = [(g, [t for t in g.trials if t.trial_id not in active]) for g in groups]
            batches = split(todo, Gate(self.cluster))
            submit_batches(results, batches, one, echo=echo, poll_s=self.poll_s)
        return submitted, list(active.values())

    def _submit_group(
        self,
        batch: Batch,
        group: Group,
        todo: list[ResolvedTrial],
        folder: Path,
        stl_jobs: dict[str, list[str]],
        earlier: list[Submitted],
        run: str,
    ) -> list[Submitted]:
        """One ``map_array`` call; its ledger entries written; STL job ids noted for later
        arrays' dependencies."""
        results = Path(batch.results).absolute()
        params = dict(group.params)
        after = sorted({j for b in group.benchmarks for j in stl_jobs.get(b, [])})
        if group.stage == "mtl" and after and self.cluster == "slurm":
            params["slurm_dependency"] = "afterany:" + ":".join(after)
        elif group.stage == "mtl" and after:  # no dependencies off Slurm: wait here
            first = [s for s in earlier if s.entry["mode"] == "stl"]
            wait_for(self, first, batch, lambda *_: None, progress=False)
        threads = {b: group.threads for b in group.benchmarks}
        runner = TrialRunner(str(results), batch.name, self.device, threads, run)
        try:
            tasks = [batch.task(t) for t in todo]  # the plug-ins travel with each trial
            jobs = self._executor(folder, params).map_array(runner, tasks)
        except Exception as error:  # noqa: BLE001 - sbatch's refusal, said plainly
            text = str(error).strip() or type(error).__name__
            raise ConfigError(
                f"sbatch refused the array of {', '.join(group.benchmarks)} ({len(todo)} "
                f"trial(s)); nothing of it was submitted: {text}"
            ) from None
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        out = []
        for trial, job in zip(todo, jobs, strict=True):
            entry = {
                "trial_id": trial.trial_id,
                "sweep": batch.name,
                "benchmark": trial.benchmark,
                "mode": trial.mode,
                "cluster": self.cluster,
                "job_id": str(job.job_id),
                "job_name": params.get("name"),
                "folder": str(folder),
                "stdout": str(job.paths.stdout),
                "stderr": str(job.paths.stderr),
                "submitted_at": now,
                "host": socket.gethostname(),
            }
            write_ledger(results, entry)
            out.append(Submitted(trial, job, entry))
            if trial.mode == "stl":
                stl_jobs.setdefault(trial.benchmark, []).append(str(job.job_id).split("_")[0])
        return out

    def run(self, batch: Batch, progress: bool = True) -> dict[str, str]:
        run = uuid.uuid4().hex

        def echo(text: str) -> None:
            print(text, flush=True)

        submitted, skipped = self.submit(batch, echo=echo, run=run)
        if skipped:
            echo(
                f"{len(skipped)} trial(s) already queued or running were not submitted again; "
                f"`mtlbench status {batch.results}` follows them"
            )
        if not submitted or not self.wait:
            if submitted:
                echo(f"not waiting (wait: false): `mtlbench status {batch.results} --watch 60`")
            return {}
        return wait_for(self, submitted, batch, echo, progress=progress, run=run)
