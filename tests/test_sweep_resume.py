"""A sweep survives ``kill -9`` and concurrent writers lose nothing.

* ``mtlbench sweep`` (local executor, in-process or a process pool) killed with SIGKILL mid-way,
  then run again: every trial ends with exactly one done record, none lost, none duplicated,
  and a trial resumed from its checkpoint has the metrics of an uninterrupted run, bit for bit.
* Many processes writing records (and ledger entries) into one results folder at once, as the
  tasks of a job array do: every file is complete, none is lost, a reader never sees half a file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mtlbench.records import read_record, record_path
from mtlbench.run.base import checkpoint_path
from mtlbench.run.state import pending
from mtlbench.sweep import load_spec
from mtlbench.trainer import run_trial

EPOCHS = 8  # per toy trial (150 steps each): a few seconds


def _status(results: Path, trial_id: str) -> str | None:
    try:
        return read_record(record_path(results, trial_id))["status"]
    except (ValueError, OSError):
        return None


def _early(results: Path, trial_id: str, epochs_left: int = 3) -> bool:
    """Whether the trial has a checkpoint and at least ``epochs_left`` epochs still to run
    (with any done trial, that is the moment to kill a sweep mid-trial)."""
    if not any(_status(results, p.stem) == "done" for p in results.glob("*.json")):
        return False
    try:
        state = torch.load(checkpoint_path(results, trial_id), weights_only=False)["state"]
    except (OSError, EOFError, RuntimeError, KeyError):
        return False
    return state["epoch"] <= EPOCHS - epochs_left


def _sweep(spec: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mtlbench.cli", "sweep", str(spec), "--device", "cpu", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: kill -9 takes the workers with it
        **kwargs,
    )


def _wait_group_gone(pgid: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes of group {pgid} still alive {timeout} s after SIGKILL")


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_killed_sweep_resumes_without_loss_or_duplicates(tmp_path, workers):
    results = tmp_path / "results"
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: resume\n"
        f"results: {results}\n"
        "methods: [ls, mgda]\n"
        f"executor: {{kind: local, workers: {workers}}}\n"
        "benchmarks:\n"
        "  toy:\n"
        f"    protocol: {{epochs: {EPOCHS}, steps_per_epoch: 150}}\n"
        "    grid: {start: [0, 1]}\n"  # 4 trials: with 2 workers, 2 start after 2 finish
    )
    sweep = load_spec(spec)
    ids = [t.trial_id for t in sweep.trials]

    # 1. kill -9 once a trial is done and another is early in its run (a checkpoint, epochs left)
    first = _sweep(spec)
    deadline = time.monotonic() + 1200  # guards against a hang: 10 x an idle machine's time
    while not any(_early(results, t) for t in ids if _status(results, t) == "running"):
        assert first.poll() is None, f"the sweep ended before it could be killed:\n{first.stdout}"
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=300)
    assert first.returncode == -signal.SIGKILL
    _wait_group_gone(first.pid)  # the pool's workers too (a live pid would count as running)
    finished_before = {t for t in ids if _status(results, t) == "done"}
    assert finished_before and len(finished_before) < len(ids)
    # killed mid-trial: the record says running, the checkpoint is whole
    interrupted = [
        t for t in ids if _status(results, t) == "running" and checkpoint_path(results, t).exists()
    ]
    assert interrupted
    for t in interrupted:
        assert torch.load(checkpoint_path(results, t), weights_only=False)["state"]["epoch"] >= 1
    assert {t.trial_id for t in pending(sweep)} == set(ids) - finished_before

    # 2. run again: only what is missing, resumed from checkpoints
    second = _sweep(spec)
    out, _ = second.communicate(timeout=2400)
    assert second.returncode == 0, out
    assert f"{len(finished_before)} already finished, {len(ids) - len(finished_before)} to run" in (
        out
    )
    assert pending(sweep) == []

    # 3. one done record per trial, nothing else; equal to uninterrupted runs, bit for bit
    assert sorted(p.name for p in results.glob("*.json")) == sorted(f"{t}.json" for t in ids)
    assert not any(checkpoint_path(results, t).exists() for t in ids)
    for trial in sweep.trials:
        record = read_record(record_path(results, trial.trial_id))
        assert record["status"] == "done"
        if trial.trial_id in interrupted or trial.trial_id == sweep.trials[0].trial_id:
            reference = run_trial(trial, tmp_path / "reference", device="cpu")
            assert record["metrics"] == reference["metrics"]
            assert record["curves"] == reference["curves"]
            assert record["extra"] == reference["extra"]


WRITER = """
import pathlib, sys, time
from mtlbench.records import SCHEMA, write_record
from mtlbench.run.slurm.ledger import write_ledger
results, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sync = pathlib.Path(results).parent
(sync / f"ready-{worker}").touch()
while not (sync / "go").exists():  # start together, as the tasks of an array do
    time.sleep(0.01)
for i in range(n):
    for tid in (f"trial-{worker}-{i}", "shared"):  # its own records, and one all of them share
        write_record(results, {"schema": SCHEMA, "trial_id": tid, "status": "done",
                               "worker": worker, "i": i, "payload": list(range(2000))})
    write_ledger(results, {"trial_id": f"trial-{worker}-{i}", "job_id": f"7_{worker}"})
"""


@pytest.mark.slow
def test_concurrent_writers_lose_nothing(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    n_writers, n_records = 4, 50
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(results), str(w), str(n_records)])
        for w in range(n_writers)
    ]
    deadline = time.monotonic() + 1200
    while len(list(tmp_path.glob("ready-*"))) < n_writers:
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    (tmp_path / "go").touch()
    torn = 0
    reads = 0
    while any(p.poll() is None for p in procs):  # read while they write: never half a record
        path = record_path(results, "shared")
        if path.exists():
            try:
                read_record(path)
                reads += 1
            except ValueError:
                torn += 1
        time.sleep(0.002)
    assert all(p.wait(timeout=1200) == 0 for p in procs)
    assert torn == 0 and reads > 0
    names = {p.name for p in results.iterdir() if p.is_file()}
    expected = {f"trial-{w}-{i}.json" for w in range(n_writers) for i in range(n_records)}
    assert names == expected | {"shared.json"}  # nothing lost, no temp file left behind
    for name in names:
        record = read_record(results / name)
        assert len(record["payload"]) == 2000
    ledger = list((results / ".submissions").glob("*.submission"))
    assert len(ledger) == n_writers * n_records
