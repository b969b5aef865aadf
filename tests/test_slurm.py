"""The SLURM executor and ``mtlbench status``.

Unit tests (no Slurm needed): resources -> submitit parameters and their validation, the dry-run
plan, the submissions ledger refusing a queued trial (a fake ``squeue``), the checkpoint hook,
and ``status`` on a folder of done / failed / diverged / corrupt records.

End to end (needs a Slurm controller: ``scontrol ping``; skipped without one, FAILS instead when
``MTLBENCH_REQUIRE_SLURM=1``, as in CI): a toy sweep as one job array, one array task cancelled,
one requeued (``scontrol requeue``) and one preempted (USR2, submitit's checkpoint path) mid-run,
the sweep run again: every trial ends with exactly one done record equal to a local run's. With
CI's low ``MaxArraySize`` (4, set by .ci/run) and ``MaxSubmitJobs`` set to 5 for one test
(restored after it), a group of 6 trials runs as two arrays, the second held back until the
queue drains.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import tiny_benchmark  # noqa: F401  (registers the "_tiny" benchmark)
from mtlbench import cli
from mtlbench.records import read_record, record_path, write_record
from mtlbench.registry import ConfigError
from mtlbench.run.base import ELSEWHERE, Batch, TrialTask, checkpoint_path, make_executor
from mtlbench.run.slurm.executor import SlurmExecutor, TrialRunner
from mtlbench.run.slurm.held import read_held
from mtlbench.run.slurm.ledger import iter_ledger, ledger_path, read_ledger, write_ledger
from mtlbench.run.slurm.limits import parse_max_array_size
from mtlbench.run.slurm.resources import merge_resources, parse_resources, slurm_parameters
from mtlbench.run.state import active_submissions, collect, pending
from mtlbench.run.status_cli import mark_held, render
from mtlbench.run.status_summary import render_summary
from mtlbench.sweep import load_spec, parse_spec
from mtlbench.trainer import run_trial
from mtlbench.trial import TrialConfig, resolve

ROOT = Path(__file__).resolve().parent.parent


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """``mtlbench ARGS`` in-process (cli.main registers its extension commands on every call)."""
    monkeypatch.setattr(cli, "EXTENSIONS", [])
    return cli.main(list(args))


# -- resources ----------------------------------------------------------------------------------


def test_resources_map_to_autoexecutor_parameters(tmp_path):
    resources = {
        "partition": "gpu",
        "account": "lab",
        "qos": "high",
        "constraint": "a100",
        "gpus": 1,
        "cpus": 8,
        "mem": "32g",
        "time": "1-00:00:00",
        "array_parallelism": 10,
        "signal_delay_s": 120,
        "setup": ["module load cuda"],
        "sbatch": {"--mail-type": "END", "exclude": "node7"},
        "job_name": "mine",
    }
    parsed, problems = parse_resources(resources, "x")
    assert problems == []
    params = slurm_parameters(parsed, "mtlbench-s")
    assert params == {
        "name": "mine",
        "timeout_min": 24 * 60,
        "cpus_per_task": 8,
        "gpus_per_node": 1,
        "slurm_mem": "32G",
        "slurm_partition": "gpu",
        "slurm_account": "lab",
        "slurm_qos": "high",
        "slurm_constraint": "a100",
        "slurm_array_parallelism": 10,
        "slurm_signal_delay_s": 120,
        "slurm_setup": ["module load cuda"],
        "slurm_additional_parameters": {"mail-type": "END", "exclude": "node7"},
    }
    # submitit itself accepts every one of them (its checks run without a cluster)
    import submitit

    submitit.AutoExecutor(tmp_path, cluster="local").update_parameters(**params)
    assert slurm_parameters(parse_resources({"mem": 4}, "")[0], "n")["mem_gb"] == 4.0
    assert slurm_parameters(parse_resources({}, "")[0], "n") == {
        "name": "n",
        "timeout_min": 60,
        "cpus_per_task": 1,
    }


@pytest.mark.parametrize(
    "value, minutes",
    [(90, 90), (0.5, 1), ("30", 30), ("45:30", 46), ("2:00:00", 120), ("1-12", 2160)],
)
def test_time_limits_in_slurm_formats(value, minutes):
    resources, problems = parse_resources({"time": value}, "")
    assert problems == []
    assert slurm_parameters(resources, "n")["timeout_min"] == minutes


def test_invalid_resources_are_all_reported_with_the_valid_keys():
    _, problems = parse_resources(
        {
            "partiton": "gpu",
            "gpus": "two",
            "mem": "lots",
            "time": "soon",
            "sbatch": {"array": "1"},
            "cpus": 0,
            "setup": "module load x",
        },
        "benchmark 'toy'",
    )
    text = "\n".join(problems)
    assert len(problems) == 7
    assert "unknown resource 'partiton'" in text and "Did you mean 'partition'" in text
    assert "Valid: account, array_parallelism, constraint, cpus, gpus" in text
    assert "'gpus' must be an integer >= 0" in text
    assert "'mem' must be a Slurm memory size" in text and "'time' must be minutes" in text
    assert "sbatch option 'array' is set by the executor" in text
    assert "'cpus' must be a positive integer, got 0" in text
    assert "'setup' must be a list of shell lines" in text


def test_executor_options_are_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown option 'gpu'.*Did you mean 'gpus'"):
        make_executor({"kind": "slurm", "gpu": 1})
    with pytest.raises(ConfigError, match="poll_s must be a positive number"):
        make_executor({"kind": "slurm", "poll_s": 0})
    with pytest.raises(ConfigError, match=r"wait: expected bool.*cluster: expected one of"):
        make_executor({"kind": "slurm", "wait": "yes", "cluster": "cloud"})
    with pytest.raises(ConfigError, match=r"benchmark '_tiny': unknown resource 'cpu'"):
        parse_spec(  # a benchmark's resources are checked when the spec loads
            {
                "name": "s",
                "methods": ["ls"],
                "benchmarks": {"_tiny": {"resources": {"cpu": 2}}},
            }
        )


def test_benchmark_resources_override_executor_defaults():
    merged = merge_resources(
        {"partition": "cpu", "time": 30, "sbatch": {"mail-type": "END", "comment": "a"}},
        {"time": 90, "gpus": 1, "sbatch": {"comment": "b"}},
    )
    assert merged == {
        "partition": "cpu",
        "time": 90,
        "gpus": 1,
        "sbatch": {"mail-type": "END", "comment": "b"},
    }


# -- the plan -----------------------------------------------------------------------------------


def _write_spec(path: Path, results: Path, body: str) -> Path:
    path.write_text(f"name: plan\nresults: {results}\n" + body)
    return path


def test_dry_run_prints_arrays_and_sbatch_options(tmp_path, capsys, monkeypatch):
    spec = _write_spec(
        tmp_path / "spec.yaml",
        tmp_path / "results",
        "seeds: [0, 1]\n"
        "methods: [ls, mgda]\n"
        "executor: {kind: slurm, partition: cpu, time: '2:00:00', array_parallelism: 2}\n"
        "benchmarks:\n"
        "  _tiny:\n"
        "    stl: true\n"
        "    resources: {cpus: 2, mem: 4G, sbatch: {comment: tiny}}\n",
    )
    assert run_cli(monkeypatch, "sweep", str(spec), "--dry-run") == 0
    out = capsys.readouterr().out
    assert "SLURM plan (slurm): 8 trial(s) in 2 job array(s)" in out
    assert "array 1 (stl, _tiny): 4 task(s), at most 2 at once, 2 torch thread(s) each" in out
    assert "array 2 (mtl, _tiny): 4 task(s)" in out and "afterany" in out
    for line in (
        "#SBATCH --array=0-3%2",
        "#SBATCH --partition=cpu",
        "#SBATCH --time=120",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --mem=4G",
        "#SBATCH --comment=tiny",
        "#SBATCH --job-name=mtlbench-plan",
    ):
        assert line in out, line
    assert not (tmp_path / "results").exists()  # nothing submitted, nothing written


def test_one_array_per_stage_and_resource_group():
    sweep = parse_spec(
        {
            "name": "g",
            "methods": ["ls", "mgda"],
            "benchmarks": {
                "_tiny": {"stl": True, "protocol": {"epochs": 1}},
                "toy": {"protocol": {"epochs": 1}},
                "multidigits": {"protocol": {"epochs": 1}, "resources": {"gpus": 1}},
            },
        }
    )
    groups = SlurmExecutor(partition="p").groups(Batch.of(sweep))
    shape = [(g.stage, g.benchmarks, len(g.trials), g.params.get("gpus_per_node")) for g in groups]
    assert shape == [
        ("stl", ["_tiny"], 2, None),
        ("mtl", ["_tiny"], 2, None),  # waits for the STL array: its own array
        ("mtl", ["toy"], 2, None),  # same resources, no reference to wait for
        ("mtl", ["multidigits"], 2, 1),  # other resources
    ]
    assert all(g.params["slurm_partition"] == "p" for g in groups)


def test_cluster_example_spec_is_valid_and_plans():
    sweep = load_spec(ROOT / "sweeps" / "cluster_example.yaml")
    assert sweep.executor.kind == "slurm"
    text = make_executor(sweep.executor).plan(Batch.of(sweep))
    assert "#SBATCH --array=" in text and "#SBATCH --gpus-per-node=" in text


# -- the ledger ---------------------------------------------------------------------------------


@pytest.fixture
def fake_squeue(tmp_path, monkeypatch):
    """A ``squeue`` on PATH that prints the lines given to it, and an ``sacct`` that knows no
    job: the test's job ids (31, 40, ...) must not meet the accounting of a real Slurm on the
    machine, whose own job 40 may have completed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    listing = tmp_path / "squeue.txt"
    listing.write_text("")
    script = bin_dir / "squeue"
    script.write_text(f"#!/bin/sh\ncat {listing}\n")
    script.chmod(0o755)
    sacct = bin_dir / "sacct"
    sacct.write_text("#!/bin/sh\nexit 0\n")
    sacct.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return listing


def _tiny_sweep(results: Path, **bench) -> object:
    return parse_spec(
        {
            "name": "led",
            "results": str(results),
            "seeds": [0, 1, 2],
            "methods": ["ls"],
            "benchmarks": {"_tiny": {"protocol": {"epochs": 1}, **bench}},
        }
    )


def test_ledger_refuses_a_trial_that_is_queued_or_running(tmp_path, fake_squeue, monkeypatch):
    results = tmp_path / "results"
    sweep = _tiny_sweep(results)
    a, b, c = sweep.trials
    base = {"cluster": "slurm", "job_name": "mtlbench-led", "sweep": "led", "mode": "mtl"}
    write_ledger(results, {**base, "trial_id": a.trial_id, "job_id": "12_0"})
    write_ledger(results, {**base, "trial_id": b.trial_id, "job_id": "12_1"})
    # 12_0 waits in the queue; 12_1 is gone (cancelled); c was never submitted
    fake_squeue.write_text("12_0|PENDING|mtlbench-led\n13|RUNNING|someone-else\n")
    active = active_submissions(results, [t.trial_id for t in sweep.trials])
    assert set(active) == {a.trial_id} and active[a.trial_id]["state"] == "PENDING"
    # the same job id under another job's name is not ours (ids restart after a state wipe)
    fake_squeue.write_text("12_0|RUNNING|other\n")
    assert active_submissions(results, [a.trial_id]) == {}
    fake_squeue.write_text("12_0|RUNNING|mtlbench-led\n")

    submitted_batches = []

    class FakeExecutor:
        def map_array(self, fn, trials):
            assert isinstance(fn, TrialRunner)
            submitted_batches.append([t.trial.trial_id for t in trials])  # TrialTasks
            return [
                SimpleNamespace(
                    job_id=f"20_{i}",
                    paths=SimpleNamespace(
                        stdout=tmp_path / f"20_{i}_0_log.out", stderr=tmp_path / f"20_{i}_0_log.err"
                    ),
                )
                for i in range(len(trials))
            ]

    monkeypatch.setattr(SlurmExecutor, "_executor", lambda self, folder, params: FakeExecutor())
    messages: list[str] = []
    ex = SlurmExecutor(time=20)
    submitted, skipped = ex.submit(Batch.of(sweep), echo=messages.append)
    assert submitted_batches == [[b.trial_id, c.trial_id]]
    assert [s["trial_id"] for s in skipped] == [a.trial_id]
    assert any(f"skipped {a.trial_id}: already running as job 12_0" in m for m in messages)
    assert read_ledger(results, a.trial_id)["job_id"] == "12_0"  # untouched
    entry = read_ledger(results, b.trial_id)
    assert entry["job_id"] == "20_0" and entry["history"][0]["job_id"] == "12_1"
    assert read_ledger(results, c.trial_id)["stderr"].endswith("20_1_0_log.err")
    assert ledger_path(results, c.trial_id).suffix == ".submission"  # never read as a record


def test_ledger_check_refuses_to_guess_when_squeue_fails(tmp_path, fake_squeue):
    results = tmp_path / "results"
    sweep = _tiny_sweep(results)
    write_ledger(results, {"trial_id": sweep.trials[0].trial_id, "job_id": "5", "cluster": "slurm"})
    script = fake_squeue.parent / "bin" / "squeue"
    script.write_text("#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact' >&2\nexit 1\n")
    with pytest.raises(ConfigError, match="cannot ask Slurm which trials are already queued"):
        active_submissions(results, [t.trial_id for t in sweep.trials])


def test_a_job_unknown_to_sacct_and_squeue_starts_its_grace_period(tmp_path, fake_squeue):
    from mtlbench.run.slurm.waiting import Submitted, _check_lost

    job = SimpleNamespace(state="UNKNOWN", paths=SimpleNamespace(result_pickle=tmp_path / "no"))
    entry = {"trial_id": "t", "job_id": "9_1", "job_name": "mtlbench-x", "cluster": "slurm"}
    remaining = {"t": Submitted(None, job, entry)}
    absent: dict[str, float] = {}
    fake_squeue.write_text("9_1|PENDING|mtlbench-x\n")
    _check_lost(remaining, absent, now=5.0)
    assert absent == {}  # queued: not lost
    fake_squeue.write_text("")
    _check_lost(remaining, absent, now=6.0)
    _check_lost(remaining, absent, now=7.0)
    assert absent == {"t": 6.0}  # gone from the queue since 6.0
    (fake_squeue.parent / "bin" / "squeue").write_text("#!/bin/sh\nexit 1\n")
    _check_lost(remaining, absent, now=8.0)
    assert absent == {"t": 6.0}  # Slurm silent: nothing changes


# -- checkpoint / requeue -----------------------------------------------------------------------


def test_checkpoint_requeues_the_same_trial_and_resumes_bit_identically(tmp_path):
    resolved = resolve(TrialConfig("_tiny", "famo", 4, {"epochs": 4}))
    full = run_trial(resolved, tmp_path / "full", device="cpu")
    results = tmp_path / "results"
    runner = TrialRunner(str(results), "s", "cpu", {"_tiny": 1})

    class Preempted(BaseException):
        pass

    def preempt_after_epoch_2(epoch: int) -> None:
        if epoch == 2:
            raise Preempted

    with pytest.raises(Preempted):  # what a job does up to the signal
        run_trial(
            resolved,
            results,
            device="cpu",
            checkpoint=checkpoint_path(results, resolved.trial_id),
            on_epoch=preempt_after_epoch_2,
        )
    task = TrialTask(resolved)
    delayed = runner.checkpoint(task)  # what submitit pickles for the requeued job
    assert delayed.function is runner and delayed.args == (task,)
    assert delayed.result() == "done"
    record = read_record(record_path(results, resolved.trial_id))
    assert record["metrics"] == full["metrics"] and record["curves"] == full["curves"]
    assert not checkpoint_path(results, resolved.trial_id).exists()
    # a job that starts for a trial already done does not train it again
    assert runner(task) == ELSEWHERE
    assert (
        read_record(record_path(results, resolved.trial_id))["started_at"] == record["started_at"]
    )


def test_local_cluster_runs_the_same_path_without_slurm(tmp_path):
    """``cluster: local``: submitit's local executor, for machines without Slurm."""
    spec = _write_spec(
        tmp_path / "spec.yaml",
        tmp_path / "results",
        "methods: [ls, mgda]\n"
        "executor: {kind: slurm, cluster: local, time: 20, poll_s: 1}\n"
        "benchmarks:\n"
        "  toy: {protocol: {epochs: 2, steps_per_epoch: 20}}\n",
    )
    sweep = load_spec(spec)
    statuses = make_executor(sweep.executor, device="cpu").run(Batch.of(sweep), progress=False)
    assert statuses == {t.trial_id: "done" for t in sweep.trials}
    for t in sweep.trials:
        assert read_record(record_path(sweep.results, t.trial_id))["status"] == "done"
        assert read_ledger(sweep.results, t.trial_id)["cluster"] == "local"
    assert pending(sweep) == []


# -- status -------------------------------------------------------------------------------------


def test_status_lists_done_failed_diverged_pending_and_corrupt(
    tmp_path, fake_squeue, capsys, monkeypatch
):
    results = tmp_path / "results"
    done = run_trial(resolve(TrialConfig("_tiny", "ls", 0, {"epochs": 1})), results, device="cpu")
    diverged = run_trial(
        resolve(TrialConfig("_tiny", "ls", 1, {"epochs": 2, "nan_at_step": 3})),
        results,
        device="cpu",
    )
    assert diverged["status"] == "diverged"
    failed = dict(done, trial_id="_tiny-ls-s9-failed", status="failed")
    failed["error"] = {
        "type": "RuntimeError",
        "message": "CUDA error: out of memory",
        "traceback": "Traceback (most recent call last):\n  File x\nRuntimeError: CUDA error: "
        "out of memory\n",
    }
    write_record(results, failed)
    stderr = tmp_path / "31_2_0_log.err"
    stderr.write_text("loading data\nslurmstepd: error: *** JOB 31 CANCELLED AT 12:00 ***\n")
    write_ledger(
        results,
        {"trial_id": "_tiny-ls-s9-failed", "job_id": "31_2", "stderr": str(stderr)},
    )
    write_ledger(
        results, {"trial_id": "_tiny-ls-s7-queued", "job_id": "40_0", "benchmark": "_tiny"}
    )
    write_ledger(results, {"trial_id": "_tiny-ls-s8-gone", "job_id": "40_1", "stderr": str(stderr)})
    fake_squeue.write_text("40_0|PENDING|x\n")
    (results / "_tiny-ls-s5-half.json").write_text('{"schema": "mtlbench.record/1", "trial')
    (results / "checkpoints").mkdir(exist_ok=True)
    (results / "checkpoints" / "x.json").write_text("{}")  # not a record, not reported

    status = collect(results)
    counts = status.counts()
    assert (counts["done"], counts["diverged"], counts["failed"]) == (1, 1, 1)
    assert (counts["pending"], counts["interrupted"]) == (1, 1)
    assert [p.name for p, _ in status.corrupt] == ["_tiny-ls-s5-half.json"]
    text = render(status)
    assert "5 trial(s): 1 done, 0 running, 1 pending, 1 failed, 1 diverged, 1 interrupted" in text
    assert "1 unreadable record file(s)" in text
    assert "RuntimeError: CUDA error: out of memory" in text  # the traceback's last lines
    assert "*** JOB 31 CANCELLED AT 12:00 ***" in text and str(stderr) in text  # the log's
    assert "job pending" in text and "left the queue without a record" in text

    # the command line, with a spec: its trials without records are pending
    spec = _write_spec(
        tmp_path / "spec.yaml",
        results,
        "seeds: [0, 3]\nmethods: [ls]\nbenchmarks:\n  _tiny: {protocol: {epochs: 1}}\n",
    )
    assert run_cli(monkeypatch, "status", str(results), "--spec", str(spec)) == 0
    out = capsys.readouterr().out  # the summary: counts, and the failed trials by name
    assert "6 trial(s): 1 done, 0 running, 2 pending" in out and "not started" not in out
    assert "failed (1):\n  _tiny-ls-s9-failed" in out and "interrupted (1):" in out
    assert run_cli(monkeypatch, "status", str(results), "--spec", str(spec), "--all") == 0
    assert "not started" in capsys.readouterr().out  # every trial, pending ones too
    assert run_cli(monkeypatch, "status", str(results), "--state", "pending") == 0
    out = capsys.readouterr().out
    assert "_tiny-ls-s7-queued" in out and "_tiny-ls-s9-failed" not in out
    assert run_cli(monkeypatch, "status", str(results), "--json") == 0
    assert json.loads(capsys.readouterr().out)["counts"]["done"] == 1
    assert run_cli(monkeypatch, "status", str(tmp_path / "nothing")) == 2


def test_status_watch_stops_when_nothing_runs_or_waits(tmp_path, capsys, monkeypatch):
    results = tmp_path / "results"
    run_trial(resolve(TrialConfig("_tiny", "ls", 0, {"epochs": 1})), results, device="cpu")
    assert run_cli(monkeypatch, "status", str(results), "--watch", "0.1") == 0
    out = capsys.readouterr().out
    assert out.startswith("[") and "1 trial(s): 1 done" in out


# -- end to end on a real Slurm -----------------------------------------------------------------


def slurm_problem() -> str | None:
    """Why the end-to-end test cannot run here (None when a controller answers)."""
    for tool in ("scontrol", "sbatch", "squeue", "scancel", "srun"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as error:
        return f"scontrol ping failed: {error}"
    if out.returncode != 0 or "UP" not in out.stdout:
        said = (out.stdout + out.stderr).strip().splitlines()
        return f"no Slurm controller answers `scontrol ping` ({said[0] if said else 'no output'})"
    return None


@pytest.fixture
def slurm():
    problem = slurm_problem()
    if problem is not None:
        if os.environ.get("MTLBENCH_REQUIRE_SLURM") == "1":
            pytest.fail(f"MTLBENCH_REQUIRE_SLURM=1 but {problem}")
        pytest.skip(f"{problem} (start one: bash ../shared/tools/slurm-local.sh start)")


def _mtlbench(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mtlbench.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def _record_status(results: Path, trial_id: str) -> str | None:
    try:
        return read_record(record_path(results, trial_id))["status"]
    except (ValueError, OSError):
        return None


@pytest.fixture
def cleanup():
    """Processes to kill and Slurm jobs to cancel when a test ends (whatever its outcome)."""
    procs: list[subprocess.Popen] = []
    results: list[Path] = []
    yield procs, results
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    jobs = {e["job_id"] for r in results for e in iter_ledger(r)}
    if jobs:
        subprocess.run(["scancel", *sorted(jobs)], capture_output=True)


def _toy_slurm_sweep(tmp_path: Path, cleanup: Any, epochs: int, starts: list[int]) -> tuple:
    """A toy sweep of ls and mgda on the local Slurm (results cancelled at teardown): its
    results folder, spec path, loaded sweep and trial ids."""
    _, to_cancel = cleanup
    results = tmp_path / "results"
    to_cancel.append(results)
    spec = _write_spec(
        tmp_path / "spec.yaml",
        results,
        "methods: [ls, mgda]\n"
        # time > 10 min: submitit would count every USR2 as a time-out below that
        "executor: {kind: slurm, time: 20, cpus: 1, array_parallelism: 2, poll_s: 2}\n"
        "benchmarks:\n"
        "  toy:\n"
        f"    protocol: {{epochs: {epochs}, steps_per_epoch: 150}}\n"
        f"    grid: {{start: {starts}}}\n",
    )
    sweep = load_spec(spec)
    return results, spec, sweep, [t.trial_id for t in sweep.trials]


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_sweep_survives_cancel_requeue_and_preemption(tmp_path, slurm, cleanup):
    procs, _ = cleanup
    results, spec, sweep, ids = _toy_slurm_sweep(tmp_path, cleanup, epochs=10, starts=[0, 1])
    t0 = time.monotonic()
    first = _mtlbench("sweep", str(spec), "--device", "cpu", "--no-report")
    procs.append(first)

    # 1. submitted as one array; a second submission now refuses every queued trial
    # (deadlines only guard against hangs: 10 x what an idle machine needs)
    deadline = time.monotonic() + 600
    while sum(read_ledger(results, t) is not None for t in ids) < len(ids):
        assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()
        time.sleep(0.2)
    jobs = {t: read_ledger(results, t)["job_id"] for t in ids}
    assert len({j.split("_")[0] for j in jobs.values()}) == 1  # one job array
    again, skipped = SlurmExecutor(time=20).submit(Batch.of(sweep), echo=lambda _: None)
    assert again == [] and {s["trial_id"] for s in skipped} == set(ids)

    # 2. mid-run (a checkpoint written, the trial not done): cancel, requeue, preempt
    actions = {}
    deadline = time.monotonic() + 900
    while len(actions) < 3:
        assert time.monotonic() < deadline, f"could not act on 3 running trials: {actions}"
        for t in ids:
            if t in actions or _record_status(results, t) != "running":
                continue
            if not checkpoint_path(results, t).exists():
                continue
            job = jobs[t]
            # scancel and requeue send SIGTERM, which submitit ignores: the trial could still
            # finish in the KillWait seconds before SIGKILL; kill it at once (a short KillWait)
            runner = read_record(record_path(results, t))["runner"]
            if "cancel" not in actions.values():
                subprocess.run(["scancel", job], check=True)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(runner["pid"], signal.SIGKILL)
                actions[t] = "cancel"
            elif "requeue" not in actions.values():
                subprocess.run(["scontrol", "requeue", job], check=True)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(runner["pid"], signal.SIGKILL)
                actions[t] = "requeue"
            else:  # what Slurm does before preempting or at the time limit: USR2 to the job
                subprocess.run(["scancel", "--signal=USR2", job], check=True)
                actions[t] = "preempt"
            break
        time.sleep(0.1)
    out, _ = first.communicate(timeout=1500)
    cancelled = next(t for t, a in actions.items() if a == "cancel")
    assert first.returncode == 1, out
    assert f"cancelled: {cancelled}" in out and "_log.err" in out  # reported with its log path
    assert _record_status(results, cancelled) == "running"
    assert checkpoint_path(results, cancelled).exists()

    # 3. run again: only the cancelled trial is submitted; it resumes from its checkpoint
    second = _mtlbench("sweep", str(spec), "--device", "cpu", "--no-report")
    procs.append(second)
    out2, _ = second.communicate(timeout=1200)
    assert second.returncode == 0, out2
    assert "1 to run" in out2 and "submitted 1 trial(s)" in out2
    assert pending(sweep) == []
    elapsed = time.monotonic() - t0

    # 4. exactly one done record per trial, equal to a local, uninterrupted run
    assert sorted(p.name for p in results.glob("*.json")) == sorted(f"{t}.json" for t in ids)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for trial in sweep.trials:
            record = read_record(record_path(results, trial.trial_id))
            local = run_trial(trial, tmp_path / "local", device="cpu")
            assert record["status"] == "done", record["error"]
            assert record["metrics"] == local["metrics"], actions.get(trial.trial_id)
            assert record["curves"] == local["curves"] and record["extra"] == local["extra"]
            slurm_env = record["environment"]["slurm"]
            assert slurm_env["job_id"] and slurm_env["node"], slurm_env
            if trial.trial_id != cancelled:  # the resubmission is one job, not an array
                assert slurm_env["array_job_id"] == jobs[trial.trial_id].split("_")[0]
                assert slurm_env["array_task_id"] == jobs[trial.trial_id].split("_")[1]
            if actions.get(trial.trial_id) in ("requeue", "preempt"):
                assert int(slurm_env["restart_count"] or 0) >= 1, (actions, slurm_env)
            assert not checkpoint_path(results, trial.trial_id).exists()
    finally:
        torch.set_num_threads(threads)
    assert read_ledger(results, cancelled)["history"][0]["job_id"] == jobs[cancelled]
    assert collect(results).counts()["done"] == len(ids)
    print(f"slurm sweep with cancel/requeue/preempt and resubmission: {elapsed:.0f} s")


@pytest.mark.slurm
@pytest.mark.slow
def test_a_slurm_sweep_and_a_local_sweep_on_one_folder_run_each_trial_once(
    tmp_path, slurm, cleanup
):
    """Array tasks claim their trial too: a local sweep started beside a Slurm sweep on the same
    folder takes what no task holds, and every trial runs exactly once."""
    procs, _ = cleanup
    results, spec, sweep, ids = _toy_slurm_sweep(tmp_path, cleanup, epochs=6, starts=[0, 1, 2])
    on_slurm = _mtlbench("sweep", str(spec), "--device", "cpu", "--no-report")
    procs.append(on_slurm)
    deadline = time.monotonic() + 600  # guards against a hang only
    while sum(read_ledger(results, t) is not None for t in ids) < len(ids):
        assert on_slurm.poll() is None and time.monotonic() < deadline, on_slurm.stdout.read()
        time.sleep(0.2)
    local = _mtlbench("sweep", str(spec), "--device", "cpu", "--no-report", "--executor", "local")
    procs.append(local)
    out_local, _ = local.communicate(timeout=2400)
    out_slurm, _ = on_slurm.communicate(timeout=2400)
    assert local.returncode == 0 and on_slurm.returncode == 0, out_local + out_slurm

    def ran_and_left(out: str) -> tuple[int, int]:
        # the closing line: "done=N ...; M left to another process", or "ran none; M left ..."
        # when every trial it planned was held by the other sweep (a loaded machine)
        summaries = [x for x in out.splitlines() if re.match(r"sweep plan: (ran none|\w+=\d)", x)]
        if not summaries:  # every trial had finished before this sweep planned (a slow start)
            assert re.search(r"already finished, 0 to run", out), out
            return 0, 0
        line = summaries[-1]
        left = re.search(r"; (\d+) left to another process$", line)
        head = line.split(";")[0]
        return sum(int(n) for n in re.findall(r"=(\d+)", head)), int(left[1]) if left else 0

    ran_local, _ = ran_and_left(out_local)
    ran_slurm, left_slurm = ran_and_left(out_slurm)
    print(f"trials run by the local sweep: {ran_local}, by the Slurm jobs: {ran_slurm}")
    assert ran_local + ran_slurm == len(ids), out_local + out_slurm  # once each
    assert ran_slurm + left_slurm == len(ids)  # every task ran its trial or left it
    assert sorted(p.name for p in results.glob("*.json")) == sorted(f"{t}.json" for t in ids)
    for t in ids:
        assert read_record(record_path(results, t))["status"] == "done"
    assert not list((results / ".leases").glob("*.lease"))
    assert collect(results).counts()["done"] == len(ids)


def _submit_limits(user: str) -> dict[str, str]:
    out = subprocess.run(
        ["sacctmgr", "-n", "-P", "show", "assoc", f"user={user}", "format=Account,MaxSubmit"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return dict(line.split("|", 1) for line in out.splitlines() if "|" in line)


def _set_submit_limit(user: str, account: str, value: str) -> None:
    subprocess.run(
        ["sacctmgr", "-i", "modify", "user", "where", f"name={user}", f"account={account}",
         "set", f"MaxSubmitJobs={value or -1}"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


def live_max_array_size() -> int | None:
    out = subprocess.run(
        ["scontrol", "show", "config"], capture_output=True, text=True, timeout=120
    ).stdout
    return parse_max_array_size(out)


def _wait_for_an_empty_queue(user: str, timeout: float = 600) -> None:
    """Wait until ``user`` has no job in the queue (an earlier test's cancelled jobs may still
    be completing); the deadline guards against a hang only."""
    deadline = time.monotonic() + timeout
    while True:
        queued = subprocess.run(
            ["squeue", "-h", "-u", user, "-o", "%i %T"], capture_output=True, text=True, timeout=120
        ).stdout.split("\n")
        queued = [line for line in queued if line.strip()]
        if not queued:
            return
        assert time.monotonic() < deadline, f"{user}'s queue did not empty: {queued}"
        time.sleep(0.5)


@pytest.fixture
def low_limits(slurm):
    """The live ``MaxArraySize`` (low on CI: .ci/run sets 4) and ``MaxSubmitJobs`` set to one
    more than it on this user's associations (``sacctmgr``, at run time), restored at the end.

    ``MaxArraySize`` cannot be lowered here: Slurm 22.05 fixes it when slurmctld checks its first
    array, and a later ``scontrol reconfigure`` shows the new value without applying it (tried
    on the local Slurm), so only a fresh slurmctld takes it."""
    size = live_max_array_size()
    user = getpass.getuser()
    problem = None
    if size is None or size > 8:
        problem = (
            f"MaxArraySize is {size}: the test needs one of 8 or less, set in slurm.conf before "
            "slurmctld takes its first array (.ci/run sets 4)"
        )
    elif shutil.which("sacctmgr") is None:
        problem = "sacctmgr is not on PATH"
    if problem is not None:
        if os.environ.get("MTLBENCH_REQUIRE_SLURM") == "1":
            pytest.fail(f"MTLBENCH_REQUIRE_SLURM=1 but {problem}")
        pytest.skip(problem)
    _wait_for_an_empty_queue(user)  # the limit counts this user's jobs: earlier tests' must go
    before = _submit_limits(user)
    try:
        for account in before:
            _set_submit_limit(user, account, str(size + 1))
        yield size, size + 1
    finally:
        for account, value in before.items():
            _set_submit_limit(user, account, value)


@pytest.mark.slurm
@pytest.mark.slow
def test_a_group_larger_than_max_array_size_runs_as_held_arrays(tmp_path, low_limits, cleanup):
    """MaxArraySize + 2 trials of one resource group (6 on CI), MaxSubmitJobs one above
    MaxArraySize: an array of MaxArraySize tasks (indices below it) and one of 2, held until
    the first has drained to MaxArraySize - 1 queued jobs; ``status`` shows the held trials
    meanwhile; all end done."""
    max_array, max_submit = low_limits
    procs, to_cancel = cleanup
    results = tmp_path / "results"
    to_cancel.append(results)
    spec = _write_spec(
        tmp_path / "spec.yaml",
        results,
        f"methods: [ls]\nseeds: {list(range(max_array + 2))}\n"
        "executor: {kind: slurm, time: 20, cpus: 1, poll_s: 1}\n"
        "benchmarks:\n"
        "  toy: {protocol: {epochs: 1, steps_per_epoch: 5}}\n",
    )
    ids = [t.trial_id for t in load_spec(spec).trials]
    assert len(ids) == max_array + 2
    sweep = _mtlbench("sweep", str(spec), "--device", "cpu", "--no-report")
    procs.append(sweep)
    held_views = []
    deadline = time.monotonic() + 1200  # guards against a hang only
    while sweep.poll() is None:
        assert time.monotonic() < deadline
        held = read_held(results)
        if held is not None and results.is_dir():
            status = collect(results)
            mark_held(status, held)
            held_views.append(render_summary(status, held))
        time.sleep(0.2)
    out = sweep.stdout.read()
    assert sweep.returncode == 0, out
    assert "holding the array of toy (mtl, part 2 of 2), 2 trial(s)" in out
    assert f"MaxSubmitJobs={max_submit}" in out
    assert f"submitted {max_array} trial(s) of toy (mtl, part 1 of 2)" in out
    assert "submitted 2 trial(s) of toy (mtl, part 2 of 2)" in out
    assert held_views and "2 trial(s) in 1 array(s) wait for the submit limit" in held_views[0]
    arrays: dict[str, list[int]] = {}
    for t in ids:
        base, _, task = read_ledger(results, t)["job_id"].partition("_")
        arrays.setdefault(base, []).append(int(task or 0))
    assert sorted(len(v) for v in arrays.values()) == [2, max_array]
    assert max(max(v) for v in arrays.values()) < max_array
    assert all(_record_status(results, t) == "done" for t in ids)
    assert read_held(results) is None
