"""The SLURM executor: a sweep's trials as job arrays through submitit.

* **Resources.** A sweep spec's ``executor: {kind: slurm, ...}`` gives defaults, each benchmark's
  ``resources:`` overrides them (``sbatch`` options merge key by key). Keys, checked before
  anything is submitted (:data:`RESOURCE_KEYS`), map to submitit's ``AutoExecutor``:
  ``partition``, ``account``, ``qos``, ``constraint`` -> ``slurm_*``; ``gpus`` ->
  ``gpus_per_node``; ``cpus`` -> ``cpus_per_task``; ``mem`` ("16G", or a number of GB);
  ``time`` (minutes, or Slurm's ``[D-]HH:MM:SS``) -> ``timeout_min``; ``array_parallelism``;
  ``signal_delay_s``; ``setup`` (shell lines before the job, e.g. ``module load``); ``sbatch``
  (any other ``#SBATCH`` option); ``threads`` (torch threads per trial, default ``cpus``).
* **One job array per (stage, resource group)**: trials with equal resources share one
  ``map_array`` submission; the single-task stage goes first and the multi-task trials of those
  benchmarks go into arrays that depend on it (``--dependency=afterany``), since they read their
  reference from the STL records; other benchmarks' arrays do not wait.
* **A fresh submitit folder per submission** (``<results>/.slurm/<stamp>-<random>-<group>``):
  job ids restart at 1 when a cluster's state is wiped, and a reused ``runs/%j`` folder can hand
  back an old result.
* **A ledger** ``<results>/.submissions/<trial_id>.submission`` (JSON, written atomically,
  under a lock) keeps each trial's job id and log paths. Before submitting, the job ids of the
  ledger are looked up in ``squeue``: a trial whose job is still pending or running is skipped
  with a message, never submitted twice. A trial whose record is ``done`` is never run again
  (the job itself checks once more before training).
* **Preemption and time limits.** The submitted callable is a ``submitit.helpers.Checkpointable``
  whose ``checkpoint()`` requeues the same trial; the trainer resumes from its per-epoch
  checkpoint and ends with the record an uninterrupted run writes.
* **Waiting** polls the jobs (result files every second, ``sacct`` every ``poll_s``), shows
  progress, reports failures with their log paths, and never hangs on a job that ended without
  a result: cancelled or killed jobs are seen through ``sacct``, and a job that neither
  ``sacct`` nor ``squeue`` knows any more counts as lost after a grace period.

``cluster: local`` in the executor section runs the same path on this machine through submitit's
local executor (one process per trial, all at once): for tests and debugging, not for sweeps.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable, DelayedSubmission

from mtlbench.executors import (
    EXECUTORS,
    FINISHED,
    Executor,
    _run_one,
    summary,
    trial_status,
)
from mtlbench.records import atomic_write_json, read_record, record_path
from mtlbench.registry import ConfigError, closest
from mtlbench.sweep import Sweep
from mtlbench.trial import ResolvedTrial

# resource key -> what it becomes (documentation; the mapping itself is in slurm_parameters)
RESOURCE_KEYS: dict[str, str] = {
    "partition": "slurm_partition (--partition)",
    "account": "slurm_account (--account)",
    "qos": "slurm_qos (--qos)",
    "constraint": "slurm_constraint (--constraint)",
    "gpus": "gpus_per_node (--gpus-per-node)",
    "cpus": "cpus_per_task (--cpus-per-task)",
    "mem": "slurm_mem (--mem), e.g. 16G; a number is GB (mem_gb)",
    "time": "timeout_min (--time): minutes, or [D-]HH:MM[:SS]",
    "array_parallelism": "slurm_array_parallelism (--array=0-N%P)",
    "signal_delay_s": "slurm_signal_delay_s (--signal=USR2@S: warning before the time limit)",
    "setup": "slurm_setup: shell lines run before the job (module load ...)",
    "sbatch": "slurm_additional_parameters: any other #SBATCH option, {name: value}",
    "job_name": "name (--job-name)",
    "threads": "torch threads per trial (default: cpus, else 1)",
}
EXECUTOR_OPTIONS: dict[str, str] = {
    "kind": "slurm",
    "folder": "root of the submitit folders (default <results>/.slurm)",
    "poll_s": "seconds between two sacct calls while waiting (default 30)",
    "wait": "wait for the jobs and report (default true); false: submit and return",
    "max_num_timeout": "how many time-outs / preemptions a trial may be requeued for (default 3)",
    "python": "command that runs python in a job (default: this interpreter)",
    "cluster": "slurm (default), or local to run the same path on this machine (tests)",
    "lost_after_s": "a job unknown to both sacct and squeue for this long is lost (default 180)",
    "workers": "the local executor's option; ignored here (array_parallelism limits tasks)",
}
DEFAULT_TIME_MIN = 60
# sbatch options the executor sets itself
MANAGED_SBATCH = {"array", "output", "error", "open-mode", "signal", "job-name", "dependency"}
# squeue states of a job that is still in the system (it may run, or run again)
ACTIVE_STATES = {
    "PENDING",
    "RUNNING",
    "CONFIGURING",
    "COMPLETING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "RESIZING",
    "SUSPENDED",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
    "PREEMPTED",
}
# submitit's own list of states it keeps waiting on
_INCOMPLETE = {"READY", "PENDING", "RUNNING", "UNKNOWN", "REQUEUED", "COMPLETING", "PREEMPTED"}


# -- resources --------------------------------------------------------------------------------
def _minutes(value: Any) -> int | None:
    """Slurm time limit -> whole minutes (rounded up); None when not understood."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return math.ceil(value) if value > 0 else None
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"\s*(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?\s*", value)
    if m is None:
        return None
    days, a, b, c = (int(x) if x is not None else None for x in m.groups())
    if days is not None:  # days-hours[:minutes[:seconds]]
        seconds = ((days * 24 + a) * 60 + (b or 0)) * 60 + (c or 0)
    elif c is not None:  # hours:minutes:seconds
        seconds = (a * 60 + b) * 60 + c
    elif b is not None:  # minutes:seconds
        seconds = a * 60 + b
    else:  # minutes
        seconds = a * 60
    return math.ceil(seconds / 60) if seconds > 0 else None


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def validate_resources(resources: Any, where: str) -> list[str]:
    """Every problem of one ``resources`` mapping (empty when it is fine)."""
    if resources is None:
        return []
    if not isinstance(resources, dict):
        return [f"{where}: resources must be a mapping (valid keys: {', '.join(RESOURCE_KEYS)})"]
    problems = []
    for key, value in resources.items():
        if key not in RESOURCE_KEYS:
            problems.append(
                f"{where}: unknown resource {key!r}.{closest(key, RESOURCE_KEYS)} "
                f"Valid: {', '.join(sorted(RESOURCE_KEYS))}"
            )
            continue
        bad = None
        if key in ("partition", "account", "qos", "constraint", "job_name"):
            if not isinstance(value, str) or not value.strip():
                bad = "a non-empty string"
        elif key in ("cpus", "array_parallelism", "threads"):
            if not _is_int(value, 1):
                bad = "a positive integer"
        elif key in ("gpus", "signal_delay_s"):
            if not _is_int(value, 0):
                bad = "an integer >= 0"
        elif key == "mem":
            ok_number = (
                isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            )
            ok_text = isinstance(value, str) and re.fullmatch(r"\d+[KMGT]?", value.strip(), re.I)
            if not (ok_number or ok_text):
                bad = "a Slurm memory size like 16G or 4000M, or a number of GB"
        elif key == "time":
            if _minutes(value) is None:
                bad = "minutes (a positive number) or a Slurm time like 2:00:00 or 1-12:00:00"
        elif key == "setup":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                bad = "a list of shell lines"
        elif key == "sbatch":
            if not isinstance(value, dict):
                bad = "a mapping of sbatch option -> value"
            else:
                for name, opt in value.items():
                    flag = str(name).lstrip("-")
                    if flag in MANAGED_SBATCH or flag.replace("_", "-") in MANAGED_SBATCH:
                        problems.append(
                            f"{where}: sbatch option {name!r} is set by the executor "
                            "(use array_parallelism, job_name or time instead)"
                        )
                    elif not isinstance(opt, (str, int, float, bool)):
                        problems.append(
                            f"{where}: sbatch option {name!r} must be a string or a number"
                        )
        if bad:
            problems.append(f"{where}: resource {key!r} must be {bad}, got {value!r}")
    return problems


def merge_resources(defaults: dict[str, Any], own: dict[str, Any] | None) -> dict[str, Any]:
    """A benchmark's resources over the executor's defaults; ``sbatch`` options merge."""
    merged = dict(defaults)
    for key, value in (own or {}).items():
        if key == "sbatch" and isinstance(value, dict):
            merged["sbatch"] = {**merged.get("sbatch", {}), **value}
        else:
            merged[key] = value
    return merged


def slurm_parameters(resources: dict[str, Any], job_name: str) -> dict[str, Any]:
    """Validated resources -> keyword arguments of ``AutoExecutor.update_parameters``."""
    r = resources
    params: dict[str, Any] = {
        "name": r.get("job_name", job_name),
        "timeout_min": _minutes(r["time"]) if "time" in r else DEFAULT_TIME_MIN,
        "cpus_per_task": r.get("cpus", 1),
    }
    if "gpus" in r:
        params["gpus_per_node"] = r["gpus"]
    if "mem" in r:
        if isinstance(r["mem"], str):
            params["slurm_mem"] = r["mem"].strip().upper()
        else:
            params["mem_gb"] = float(r["mem"])
    for key in ("partition", "account", "qos", "constraint", "array_parallelism"):
        if key in r:
            params[f"slurm_{key}"] = r[key]
    if "signal_delay_s" in r:
        params["slurm_signal_delay_s"] = r["signal_delay_s"]
    if r.get("setup"):
        params["slurm_setup"] = list(r["setup"])
    if r.get("sbatch"):
        params["slurm_additional_parameters"] = {
            str(k).lstrip("-"): v for k, v in r["sbatch"].items()
        }
    return params


def _raw_slurm(params: dict[str, Any]) -> dict[str, Any]:
    """``AutoExecutor`` parameters -> submitit ``SlurmExecutor`` ones (for the dry-run script)."""
    generic = {"timeout_min": "time", "name": "job_name", "cpus_per_task": "cpus_per_task"}
    raw: dict[str, Any] = {}
    for key, value in params.items():
        if key in generic:
            raw[generic[key]] = value
        elif key == "mem_gb":
            raw["mem"] = f"{int(value * 1024)}MB"
        elif key == "gpus_per_node":
            raw["gpus_per_node"] = value
        elif key.startswith("slurm_"):
            raw[key[len("slurm_") :]] = value
    return raw


def sbatch_script(params: dict[str, Any], folder: Path, n_tasks: int) -> str:
    """The ``#SBATCH`` header submitit writes for an array of ``n_tasks`` with ``params``."""
    from submitit.slurm.slurm import _make_sbatch_string

    raw = _raw_slurm(params)
    command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {folder}"
    kwargs = {"map_count": n_tasks} if n_tasks > 1 else {}
    return _make_sbatch_string(command=command, folder=folder, **raw, **kwargs)


# -- the ledger -------------------------------------------------------------------------------
def ledger_dir(results: Path) -> Path:
    return Path(results) / ".submissions"


def ledger_path(results: Path, trial_id: str) -> Path:
    return ledger_dir(results) / f"{trial_id}.submission"


def read_ledger(results: Path, trial_id: str) -> dict[str, Any] | None:
    try:
        return json.loads(ledger_path(results, trial_id).read_text())
    except (OSError, ValueError):
        return None


def iter_ledger(results: Path) -> Iterator[dict[str, Any]]:
    folder = ledger_dir(results)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.submission")):
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(entry, dict) and entry.get("trial_id"):
            yield entry


def write_ledger(results: Path, entry: dict[str, Any]) -> None:
    previous = read_ledger(results, entry["trial_id"])
    if previous is not None:
        history = previous.pop("history", [])
        entry = {**entry, "history": [*history, previous]}
    atomic_write_json(ledger_path(results, entry["trial_id"]), entry)


@contextlib.contextmanager
def ledger_lock(results: Path) -> Iterator[None]:
    """One submitter at a time per results folder (check the queue, submit, write the ledger)."""
    folder = ledger_dir(results)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def squeue_states() -> dict[str, tuple[str, str]]:
    """``{job_id: (state, job name)}`` of this user's jobs, one line per array task
    (``123_4``). Raises ``RuntimeError`` when ``squeue`` does not answer."""
    exe = shutil.which("squeue")
    if exe is None:
        raise RuntimeError("squeue is not on PATH")
    try:
        out = subprocess.run(
            [exe, "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%j"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise RuntimeError(f"squeue failed: {error}") from error
    if out.returncode != 0:
        raise RuntimeError(f"squeue failed: {(out.stderr or out.stdout).strip()}")
    states = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|", 2)
        if len(parts) == 3 and parts[0]:
            states[parts[0]] = (parts[1].upper(), parts[2])
    return states


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


def active_submissions(
    results: Path, trial_ids: list[str], queue: dict[str, tuple[str, str]] | None = None
) -> dict[str, dict[str, Any]]:
    """The ledger entries (with ``state``) of ``trial_ids`` whose job is still queued or
    running. ``queue`` is :func:`squeue_states`'s answer, asked for only when needed."""
    entries = [e for t in trial_ids if (e := read_ledger(results, t)) is not None]
    active: dict[str, dict[str, Any]] = {}
    slurm = [e for e in entries if e.get("cluster", "slurm") == "slurm"]
    if slurm and queue is None:
        try:
            queue = squeue_states()
        except RuntimeError as error:
            raise ConfigError(
                f"cannot ask Slurm which trials are already queued ({error}); not submitting "
                f"trials that may be queued: {len(slurm)} have a submission in "
                f"{ledger_dir(results)}"
            ) from None
    for entry in entries:
        if entry.get("cluster", "slurm") == "slurm":
            state, name = (queue or {}).get(str(entry.get("job_id")), (None, None))
            if state in ACTIVE_STATES and (not entry.get("job_name") or name == entry["job_name"]):
                active[entry["trial_id"]] = {**entry, "state": state}
        elif entry.get("host") == socket.gethostname() and _pid_alive(entry.get("job_id")):
            active[entry["trial_id"]] = {**entry, "state": "RUNNING"}
    return active


# -- what a job runs --------------------------------------------------------------------------
class TrialRunner(Checkpointable):
    """The callable of every array task: runs one trial into ``results`` and returns its status.

    On preemption or at the time limit submitit calls :meth:`checkpoint`, which resubmits the same
    trial; the trainer then resumes from the checkpoint it wrote after the last finished epoch
    (model, optimizer, scheduler, method state, RNG, curves), so the final record is the one an
    uninterrupted run writes.
    """

    def __init__(self, results: str, sweep: str, device: str, threads: dict[str, int]) -> None:
        self.results = results
        self.sweep = sweep
        self.device = device
        self.threads = threads  # per benchmark

    def __call__(self, trial: ResolvedTrial) -> str:
        done = trial_status(Path(self.results), trial.trial_id)
        if done in FINISHED:  # finished by an earlier job (a duplicate or a late requeue)
            return done
        threads = self.threads.get(trial.benchmark, 1)
        return _run_one(trial, self.results, self.sweep, self.device, threads)

    def checkpoint(self, trial: ResolvedTrial) -> Any:
        """Requeue the same trial; the state is in the trainer's checkpoint on disk."""
        return DelayedSubmission(self, trial)


# -- the executor -----------------------------------------------------------------------------
@dataclass
class Group:
    """Trials of one stage that share resources: one job array."""

    stage: str
    benchmarks: list[str]
    trials: list[ResolvedTrial]
    params: dict[str, Any]
    threads: int
    depends_on: list[str] = field(default_factory=list)


@dataclass
class _Submitted:
    trial: ResolvedTrial
    job: Any
    entry: dict[str, Any]


class SlurmExecutor(Executor):
    """Runs a sweep as SLURM job arrays through submitit (see the module's docstring)."""

    def __init__(self, device: str = "auto", **options: Any) -> None:
        valid = set(EXECUTOR_OPTIONS) | set(RESOURCE_KEYS)
        problems = [
            f"executor: unknown option {k!r}.{closest(k, valid)} Valid: {', '.join(sorted(valid))}"
            for k in options
            if k not in valid
        ]
        defaults = {k: v for k, v in options.items() if k in RESOURCE_KEYS}
        problems += validate_resources(defaults, "executor")
        self.cluster = options.get("cluster", "slurm")
        if self.cluster not in ("slurm", "local"):
            problems.append(f"executor: cluster must be slurm or local, got {self.cluster!r}")
        self.poll_s = options.get("poll_s", 30)
        self.lost_after_s = options.get("lost_after_s", 180)
        for key in ("poll_s", "lost_after_s"):
            value = options.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0
            ):
                problems.append(f"executor: {key} must be a positive number of seconds")
        self.wait = options.get("wait", True)
        if not isinstance(self.wait, bool):
            problems.append("executor: wait must be true or false")
        self.max_num_timeout = options.get("max_num_timeout", 3)
        if not _is_int(self.max_num_timeout, 0):
            problems.append("executor: max_num_timeout must be an integer >= 0")
        self.python = options.get("python")
        self.folder = Path(options["folder"]) if options.get("folder") else None
        if problems:
            raise ConfigError("SLURM executor: " + "; ".join(problems))
        self.defaults = defaults
        self.device = device

    # -- planning ---------------------------------------------------------------------------
    def groups(self, sweep: Sweep, trials: list[ResolvedTrial]) -> list[Group]:
        """Stages (STL first) split into groups of equal resources; raises ConfigError when a
        benchmark's resources are invalid."""
        problems = []
        merged: dict[str, dict[str, Any]] = {}
        for bench in dict.fromkeys(t.benchmark for t in trials):
            own = sweep.resources.get(bench)
            problems += validate_resources(own, f"benchmark {bench!r}")
            merged[bench] = merge_resources(self.defaults, own if isinstance(own, dict) else {})
        if problems:
            raise ConfigError(
                f"{len(problems)} problem(s) in the SLURM resources:\n  " + "\n  ".join(problems)
            )
        wanted = {t.trial_id for t in trials}
        with_stl = {t.benchmark for t in trials if t.mode == "stl"}
        groups: list[Group] = []
        for stage in sweep.stages():
            stage = [t for t in stage if t.trial_id in wanted]
            by_key: dict[tuple[str, bool], list[ResolvedTrial]] = {}
            for t in stage:
                # MTL trials that wait for STL references do not hold back those that do not
                key = (json.dumps(merged[t.benchmark], sort_keys=True), t.benchmark in with_stl)
                by_key.setdefault(key, []).append(t)
            for (key, _), members in by_key.items():
                resources = json.loads(key)
                benches = list(dict.fromkeys(t.benchmark for t in members))
                params = slurm_parameters(resources, f"mtlbench-{sweep.name}")
                groups.append(
                    Group(
                        stage=members[0].mode,
                        benchmarks=benches,
                        trials=members,
                        params=params,
                        threads=resources.get("threads", resources.get("cpus", 1)),
                    )
                )
        return groups

    def plan(self, sweep: Sweep, trials: list[ResolvedTrial]) -> str:
        """What ``run`` would submit: the arrays, their trials and their sbatch headers."""
        groups = self.groups(sweep, trials)
        root = self._root(sweep)
        stl_benches = {b for g in groups if g.stage == "stl" for b in g.benchmarks}
        lines = [
            f"SLURM plan ({self.cluster}): {len(trials)} trial(s) in {len(groups)} job "
            f"array(s); submitit folders: {root}/<submission>/, records: {sweep.results}/"
        ]
        earlier = [t.trial_id for t in trials if read_ledger(sweep.results, t.trial_id)]
        if earlier:
            lines.append(
                f"  {len(earlier)} of them were submitted before: those still pending or "
                "running in squeue will be skipped"
            )
        for i, g in enumerate(groups, 1):
            par = g.params.get("slurm_array_parallelism")
            lines.append(
                f"array {i} ({g.stage}, {', '.join(g.benchmarks)}): {len(g.trials)} task(s)"
                + (f", at most {par} at once" if par else "")
                + f", {g.threads} torch thread(s) each"
                + (
                    "; starts after the single-task array(s) of "
                    + ", ".join(b for b in g.benchmarks if b in stl_benches)
                    + " (--dependency=afterany)"
                    if g.stage == "mtl" and set(g.benchmarks) & stl_benches
                    else ""
                )
            )
            lines.append(f"  update_parameters: {json.dumps(g.params, sort_keys=True)}")
            script = sbatch_script(g.params, root / "<submission>", len(g.trials))
            lines += [f"  {s}" for s in script.splitlines() if s.startswith("#SBATCH")]
            for t in g.trials:
                lines.append(f"  - {t.trial_id}")
        return "\n".join(lines)

    def _root(self, sweep: Sweep) -> Path:
        return (self.folder or Path(sweep.results) / ".slurm").absolute()

    # -- submission -------------------------------------------------------------------------
    def _executor(self, folder: Path, params: dict[str, Any]) -> Any:
        import submitit

        kwargs: dict[str, Any] = {"slurm_max_num_timeout": self.max_num_timeout}
        if self.python:
            kwargs["slurm_python"] = self.python
        ex = submitit.AutoExecutor(folder=folder, cluster=self.cluster, **kwargs)
        ex.update_parameters(**params)
        return ex

    def submit(
        self, sweep: Sweep, trials: list[ResolvedTrial], echo: Any = print
    ) -> tuple[list[_Submitted], list[dict[str, Any]]]:
        """Submit what is not already queued; returns (submitted, skipped ledger entries)."""
        groups = self.groups(sweep, trials)  # validates before anything is submitted
        results = Path(sweep.results).absolute()
        submitted: list[_Submitted] = []
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
            for index, group in enumerate(groups, 1):
                todo = [t for t in group.trials if t.trial_id not in active]
                if not todo:
                    continue
                params = dict(group.params)
                after = sorted({j for b in group.benchmarks for j in stl_jobs.get(b, [])})
                if group.stage == "mtl" and after and self.cluster == "slurm":
                    params["slurm_dependency"] = "afterany:" + ":".join(after)
                elif group.stage == "mtl" and after:  # no dependencies off Slurm: wait here
                    first = [s for s in submitted if s.entry["mode"] == "stl"]
                    self._wait(first, sweep, lambda *_: None, progress=False)
                folder = self._root(sweep) / f"{stamp}-{index}-{group.stage}"
                ex = self._executor(folder, params)
                runner = TrialRunner(
                    str(results),
                    sweep.name,
                    self.device,
                    {b: group.threads for b in group.benchmarks},
                )
                try:
                    jobs = ex.map_array(runner, todo)
                except Exception as error:  # noqa: BLE001 - sbatch's refusal, said plainly
                    text = str(error).strip() or type(error).__name__
                    raise ConfigError(
                        f"sbatch refused array {index} ({', '.join(group.benchmarks)}, "
                        f"{len(todo)} trial(s)); nothing of it was submitted: {text}"
                    ) from None
                now = datetime.now(timezone.utc).isoformat(timespec="seconds")
                array_id = str(jobs[0].job_id).split("_")[0]
                for trial, job in zip(todo, jobs, strict=True):
                    entry = {
                        "trial_id": trial.trial_id,
                        "sweep": sweep.name,
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
                    submitted.append(_Submitted(trial, job, entry))
                    if trial.mode == "stl":
                        stl_jobs.setdefault(trial.benchmark, []).append(array_id)
                echo(
                    f"submitted {len(todo)} trial(s) of {', '.join(group.benchmarks)} "
                    f"({group.stage}) as job {array_id}; logs in {folder}"
                )
        return submitted, list(active.values())

    def run(
        self, sweep: Sweep, trials: list[ResolvedTrial], progress: bool = True
    ) -> dict[str, str]:
        from tqdm import tqdm

        submitted, skipped = self.submit(sweep, trials, echo=tqdm.write)
        if skipped:
            tqdm.write(
                f"{len(skipped)} trial(s) already queued or running were not submitted again; "
                f"`mtlbench status {sweep.results}` follows them"
            )
        if not submitted or not self.wait:
            if submitted:
                tqdm.write(
                    f"not waiting (wait: false): `mtlbench status {sweep.results} --watch 60`"
                )
            return {}
        return self._wait(submitted, sweep, tqdm.write, progress=progress)

    # -- waiting ----------------------------------------------------------------------------
    def _wait(
        self, submitted: list[_Submitted], sweep: Sweep, echo: Any, progress: bool = True
    ) -> dict[str, str]:
        from tqdm import tqdm

        statuses: dict[str, str] = {}
        remaining = {s.trial.trial_id: s for s in submitted}
        failures: list[tuple[_Submitted, str]] = []
        bar = tqdm(
            total=len(submitted), desc=f"sweep {sweep.name}", disable=not progress, unit="trial"
        )
        last_poll = time.monotonic()
        absent_since: dict[str, float] = {}
        try:
            while remaining:
                now = time.monotonic()
                forced = now - last_poll >= self.poll_s
                if forced:
                    last_poll = now
                    self._refresh(next(iter(remaining.values())).job)
                    self._check_lost(remaining, absent_since, now)
                counts: dict[str, int] = {}
                for tid, sub in list(remaining.items()):
                    state = self._state(sub.job)
                    lost = tid in absent_since and now - absent_since[tid] >= self.lost_after_s
                    if not (sub.job.done() or lost):
                        counts[state.lower()] = counts.get(state.lower(), 0) + 1
                        continue
                    state = "LOST" if lost else self._state(sub.job)
                    status, reason = self._outcome(sweep, sub, state)
                    statuses[tid] = status
                    del remaining[tid]
                    bar.update()
                    if status not in FINISHED:
                        failures.append((sub, reason))
                        echo(f"{status}: {tid} (job {sub.entry['job_id']}): {reason}")
                bar.set_postfix_str(
                    " ".join(filter(None, [summary(statuses.values()), summary_counts(counts)]))
                )
                if remaining:  # result files: every second, less often for big sweeps
                    time.sleep(1.0 if len(remaining) <= 200 else 5.0)
        except KeyboardInterrupt:
            bar.close()
            ids = sorted({s.entry["job_id"].split("_")[0] for s in remaining.values()})
            echo(
                f"stopped waiting; {len(remaining)} trial(s) stay on the cluster "
                f"(scancel {' '.join(ids)} to stop them); `mtlbench status {sweep.results}`"
            )
            raise
        bar.close()
        for sub, reason in failures:
            echo(failure_report(sweep.results, sub.entry, reason))
        return statuses

    @staticmethod
    def _state(job: Any) -> str:
        try:
            return str(job.state or "UNKNOWN").split()[0].upper()
        except Exception:  # noqa: BLE001 - a state query that fails is just unknown
            return "UNKNOWN"

    @staticmethod
    def _refresh(job: Any) -> None:
        """One forced sacct call for every job still watched."""
        with contextlib.suppress(Exception):
            job.get_info(mode="force")

    def _check_lost(
        self, remaining: dict[str, _Submitted], absent_since: dict[str, float], now: float
    ) -> None:
        """Jobs neither sacct nor squeue knows (no accounting, purged records): start their
        grace period; jobs seen again leave it."""
        if self.cluster != "slurm":
            return
        unknown = [
            tid
            for tid, s in remaining.items()
            if self._state(s.job) == "UNKNOWN" and not s.job.paths.result_pickle.exists()
        ]
        if not unknown:
            absent_since.clear()
            return
        try:
            queue = squeue_states()
        except RuntimeError:
            return
        for tid in list(absent_since):
            if tid not in unknown:
                del absent_since[tid]
        for tid in unknown:
            if remaining[tid].entry["job_id"] in queue:
                absent_since.pop(tid, None)
            else:
                absent_since.setdefault(tid, now)

    def _outcome(self, sweep: Sweep, sub: _Submitted, state: str) -> tuple[str, str]:
        """The trial's status (from its record when there is one) and, for a failure, why."""
        tid = sub.trial.trial_id
        path = record_path(sweep.results, tid)
        record: dict[str, Any] | None = None
        with contextlib.suppress(ValueError, OSError):
            record = read_record(path) if path.exists() else None
        status = (record or {}).get("status")
        if status in FINISHED:
            return status, ""
        reason = ""
        if sub.job.paths.result_pickle.exists():
            error = None
            with contextlib.suppress(Exception):
                error = sub.job.exception()
            if error is not None:
                reason = str(error).strip().splitlines()[-1] if str(error).strip() else "error"
                return "failed", f"the job raised: {reason}"
        if status == "failed":
            err = record.get("error") or {} if record else {}
            return "failed", f"{err.get('type', 'error')}: {err.get('message', '')}"
        if state in _INCOMPLETE or state == "LOST":
            return "lost", "the job ended without a result and the scheduler no longer knows it"
        return state.lower(), f"the job ended as {state} without finishing the trial"


def summary_counts(counts: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(counts.items()))


def tail(path: str | Path | None, lines: int = 5) -> list[str]:
    """The last ``lines`` non-empty lines of a text file ([] when it cannot be read)."""
    if not path:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


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


EXECUTORS["slurm"] = SlurmExecutor
