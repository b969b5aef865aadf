"""A trial is claimed before it runs: the lease file, its expiry, and two sweeps on one folder.

* the lease is taken atomically, once; a live owner keeps it, a dead one (pid gone on this
  host, a stale heartbeat elsewhere, an earlier incarnation of the same Slurm job) loses it;
* an array task (``TrialRunner``) whose trial another process holds returns without running it;
* two real ``mtlbench sweep`` processes on one spec and folder run every trial exactly once,
  and each one's summary line counts only its own trials and the ones it left to the other.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tiny_benchmark  # noqa: F401  (registers the "_tiny" benchmark)
from mtlbench.records import read_record, record_path
from mtlbench.run import lease as lease_mod
from mtlbench.run.base import ELSEWHERE, TrialTask, checkpoint_path
from mtlbench.run.lease import Lease, LeaseInfo, LeaseLost, lease_path, read_lease
from mtlbench.run.slurm.executor import TrialRunner
from mtlbench.run.state import pending, trial_states
from mtlbench.sweep import load_spec
from mtlbench.trial import TrialConfig, resolve


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _fake_lease(results: Path, trial_id: str, **fields) -> Path:
    """A lease file as another process would have written it."""
    path = lease_path(results, trial_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "trial_id": trial_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "token": "other",
        "taken_at": time.time(),
        **fields,
    }
    path.write_text(json.dumps(data))
    return path


def test_a_lease_is_taken_once_and_released(tmp_path):
    mine = Lease.claim(tmp_path, "t")
    assert isinstance(mine, Lease)
    info = read_lease(lease_path(tmp_path, "t"))
    assert (info.host, info.pid, info.token) == (socket.gethostname(), os.getpid(), mine.info.token)
    again = Lease.claim(tmp_path, "t")  # its owner (this process) is alive
    assert isinstance(again, LeaseInfo) and again.token == mine.info.token
    with mine:
        assert mine.beat()
    assert not lease_path(tmp_path, "t").exists()  # released on exit
    assert not list((tmp_path / ".leases").glob(".*.tmp"))  # no temporary file left


def test_a_dead_owner_on_this_host_loses_the_lease(tmp_path):
    _fake_lease(tmp_path, "t", pid=_dead_pid())
    taken = Lease.claim(tmp_path, "t")
    assert isinstance(taken, Lease) and read_lease(taken.path).token == taken.info.token


def test_an_unreadable_lease_is_taken_over(tmp_path):
    path = lease_path(tmp_path, "t")
    path.parent.mkdir(parents=True)
    path.write_text('{"trial_id": "t", "ho')  # a write cut short (disk full)
    assert isinstance(Lease.claim(tmp_path, "t"), Lease)


def test_a_reused_pid_is_not_the_owner(tmp_path):
    _fake_lease(tmp_path, "t", pid=os.getpid(), pid_start="1")  # this pid, another start time
    assert isinstance(Lease.claim(tmp_path, "t"), Lease)


def test_elsewhere_the_heartbeat_decides(tmp_path):
    path = _fake_lease(tmp_path, "t", host="node-that-is-not-here", pid=1)
    assert isinstance(Lease.claim(tmp_path, "t"), LeaseInfo)  # fresh heartbeat: alive
    old = time.time() - lease_mod.STALE_AFTER_S - 1
    os.utime(path, (old, old))
    assert isinstance(Lease.claim(tmp_path, "t"), Lease)


def test_a_job_gone_from_the_queue_loses_its_lease(tmp_path):
    _fake_lease(tmp_path, "t", host="node-that-is-not-here", pid=1, slurm_job="77_3")
    assert isinstance(Lease.claim(tmp_path, "t", lambda job: None), LeaseInfo)  # unknown
    assert isinstance(Lease.claim(tmp_path, "t", lambda job: False), Lease)


def test_a_requeued_job_takes_over_its_own_lease(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    _fake_lease(tmp_path, "t", host="node-that-is-not-here", pid=1, slurm_job="77_3")
    assert isinstance(Lease.claim(tmp_path, "t"), Lease)


def test_an_owner_whose_lease_was_taken_over_stops(tmp_path):
    mine = Lease.claim(tmp_path, "t")
    assert isinstance(mine, Lease)
    mine.path.unlink()
    _fake_lease(tmp_path, "t", host="node-that-is-not-here")
    assert not mine.beat()
    with pytest.raises(LeaseLost):
        mine.check()
    mine.release()  # not ours any more: left in place
    assert read_lease(lease_path(tmp_path, "t")).token == "other"


def test_an_array_task_leaves_a_claimed_trial_alone(tmp_path):
    results = tmp_path / "results"
    trial = resolve(TrialConfig("_tiny", "ls", 0, {"epochs": 2}))
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        _fake_lease(results, trial.trial_id, pid=owner.pid)
        runner = TrialRunner(str(results), "s", "cpu", {"_tiny": 1})
        assert runner(TrialTask(trial)) == ELSEWHERE
        assert not record_path(results, trial.trial_id).exists()
        [state] = trial_states(results, [trial])
        assert state.status == "running" and f"pid {owner.pid} on this host" in state.detail
    finally:
        owner.kill()
        owner.wait()
    [state] = trial_states(results, [trial])
    assert state.status == "pending"  # the owner is gone: nothing ran, nothing is held
    assert runner(TrialTask(trial)) == "done"
    assert not lease_path(results, trial.trial_id).exists()
    assert not checkpoint_path(results, trial.trial_id).exists()


SUMMARY = re.compile(
    r"^sweep two: (?P<ran>(?:[a-z]+=\d+ ?)+|ran none)(?:; (?P<left>\d+) left to another process)?$",
    re.M,
)


def _summary(out: str) -> tuple[int, int]:
    """(trials this process ran, trials it left to the other) from its summary line."""
    match = SUMMARY.search(out)
    assert match is not None, out
    ran = sum(int(n) for n in re.findall(r"=(\d+)", match["ran"]))
    return ran, int(match["left"] or 0)


@pytest.mark.slow
def test_two_sweeps_on_one_folder_run_each_trial_once(tmp_path):
    results = tmp_path / "results"
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: two\n"
        f"results: {results}\n"
        "methods: [ls, mgda]\n"
        "executor: {kind: local, workers: 1}\n"
        "benchmarks:\n"
        "  toy:\n"
        "    protocol: {epochs: 6, steps_per_epoch: 150}\n"
        "    grid: {start: [0, 1, 2, 3]}\n"
    )
    sweep = load_spec(spec)
    ids = [t.trial_id for t in sweep.trials]
    command = [sys.executable, "-m", "mtlbench.cli", "sweep", str(spec), "--device", "cpu"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 1200  # guards against a hang only
    while not list((results / ".leases").glob("*.lease")):  # the first has claimed a trial
        assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()
        time.sleep(0.05)
    second = subprocess.Popen(
        [*command, "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    out1, _ = first.communicate(timeout=2400)
    out2, _ = second.communicate(timeout=2400)
    print(out1, out2, sep="\n----\n")
    assert first.returncode == 0 and second.returncode == 0, out1 + out2

    ran1, left1 = _summary(out1)
    ran2, left2 = _summary(out2)
    assert ran1 + ran2 == len(ids)  # every trial ran once: none twice, none lost
    assert ran1 >= 1 and ran2 >= 1 and left1 >= 1  # they really shared the work
    todo2 = int(re.search(r"(\d+) to run", out2)[1])
    assert ran2 + left2 == todo2  # the rest of what it planned, left to the first
    assert "\r" not in out1 + out2  # not a terminal: plain lines
    for tid in ids:
        assert read_record(record_path(results, tid))["status"] == "done"
    assert sorted(p.name for p in results.glob("*.json")) == sorted(f"{t}.json" for t in ids)
    assert not list((results / ".leases").iterdir()) or all(
        p.name == ".lock" for p in (results / ".leases").iterdir()
    )
    assert not list((results / "checkpoints").glob("*.pt"))
    assert pending(sweep) == []


def test_a_trial_finished_elsewhere_after_the_plan_is_counted_as_left(
    tmp_path, monkeypatch, capsys
):
    """The closing line accounts for every trial the sweep planned: one that another process
    finished between this sweep's plan ("N to run") and its turn never reaches the executor,
    and is counted as left to another process (the race CI once caught in the test above)."""
    from mtlbench.cli import main
    from mtlbench.run.local import LocalExecutor

    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: race\nresults: {tmp_path / 'results'}\nmethods: [ls]\nseeds: [0, 1]\n"
        "executor: {kind: local, workers: 1}\nbenchmarks:\n  _tiny: {protocol: {epochs: 1}}\n"
    )
    ids = [t.trial_id for t in load_spec(spec).trials]
    # Another process takes the first trial: this sweep's executor only sees the second.
    monkeypatch.setattr(LocalExecutor, "run", lambda *a, **k: {ids[1]: "done"})
    assert main(["sweep", str(spec), "--no-report", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2 to run" in out and "sweep race: done=1; 1 left to another process" in out
