"""``mtlbench status`` at scale: the summary by default, ``--all``, ``--state``, the time left
and the arrays a Slurm submitter holds back (issue 22)."""

from __future__ import annotations

import argparse
import json

import pytest
from status_folder import BENCHMARKS, METHODS, config, make_folder, status_of, trial_id

from mtlbench.records import new_record, record_path
from mtlbench.run.lease import Lease
from mtlbench.run.progress import progress_path
from mtlbench.run.slurm.held import clear_held, read_held, this_process, write_held
from mtlbench.run.state import collect
from mtlbench.run.status_cli import add_command, cmd_status
from mtlbench.run.status_summary import NAMED, plain_table, time_left

N = 10_000  # 500 seeds per benchmark x method: 300 done, 100 failed, 100 diverged


def status(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """``mtlbench status ARGV`` through the subcommand's own parser; its printed text."""
    parser = argparse.ArgumentParser()
    add_command(parser.add_subparsers())
    assert cmd_status(parser.parse_args(["status", *argv])) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    results = tmp_path_factory.mktemp("scale") / "results"
    expected = make_folder(results, N)
    return results, expected


def test_summary_of_10000_records_is_short_and_counts_every_state(big, capsys):
    results, expected = big
    out = status(capsys, str(results))
    lines = out.splitlines()
    assert len(lines) < 80  # a screen, not one line per trial
    assert (
        lines[0]
        == f"{results}: {N} trial(s): 6000 done, 0 running, 0 pending, 2000 failed, 2000 diverged"
    )
    # one line per benchmark x method, with the counts of its 500 seeds
    cells = [line.split() for line in lines if line.split()[:1] and line.split()[0] in BENCHMARKS]
    assert len(cells) == len(BENCHMARKS) * len(METHODS)
    header = next(line.split() for line in lines if line.startswith("benchmark"))
    assert header == ["benchmark", "method", "done", "diverged", "failed", "total"]
    for bench, method, *counts in cells:
        want = expected[(bench, method)]
        assert [int(c) for c in counts] == [want["done"], want["diverged"], want["failed"], 500]
    # the failed trials by name, at most NAMED, and how to see the rest
    assert "failed (2000):" in out
    named = [line for line in lines if line.startswith("  ") and "RuntimeError: boom" in line]
    assert len(named) == NAMED
    assert f"... and {2000 - NAMED} more: mtlbench status {results} --state failed" in out
    assert "running (" not in out and "time left" not in out  # nothing runs or waits


def test_state_filter_and_all_list_the_trials(big, capsys):
    results, _ = big
    out = status(capsys, str(results), "--state", "failed", "--lines", "0")
    table = [line for line in out.splitlines() if line.startswith("failed ")]
    assert len(table) == 2000
    ids = {line.split()[1] for line in table}
    want = {
        trial_id(b, m, seed)
        for b in BENCHMARKS
        for m in METHODS
        for seed in range(500)
        if status_of(seed) == "failed"
    }
    assert ids == want
    out = status(capsys, str(results), "--all", "--lines", "0")
    rows = [line for line in out.splitlines() if line.split()[:1] in (["done"], ["diverged"])]
    assert len(rows) == 8000


def test_time_left_from_measured_epochs(tmp_path, capsys):
    """A done trial measured 10 s/epoch ((90 + 10) s over 10 epochs), a running one reports
    20 s/epoch at epoch 4 of 10: the benchmark's rate is their mean, 15 s. Left: the running
    trial's 6 epochs and the pending trial's 10, at 15 s, over 1 running slot = 240 s."""

    def write(tid: str, status: str, **fields: object) -> None:
        record = new_record(
            tid, config("toy", "ls", 0), sweep="t", environment={}, runner={}, started_at=""
        )
        record.update(status=status, **fields)  # type: ignore[typeddict-item]
        record_path(tmp_path, tid).write_text(json.dumps(record))

    write("done1", "done", timing={"train_s": 90.0, "eval_s": 10.0})
    write("run1", "running")
    lease = Lease.claim(tmp_path, "run1")
    assert isinstance(lease, Lease)
    progress_path(tmp_path, "run1").write_text(
        json.dumps({"epoch": 4, "epochs": 10, "s_per_epoch": 20.0})
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: t\nresults: {tmp_path}\nmethods: [ls]\nseeds: [5]\n"
        "benchmarks:\n  toy: {protocol: {epochs: 10}}\n"
    )
    try:
        state = collect(tmp_path)
        assert [r.status for r in state.rows] == ["running", "done"]
        # without the pending trial: 6 epochs x 15 s
        assert time_left(state) == pytest.approx(90.0)
        out = status(capsys, "--spec", str(spec))
        assert "3 trial(s): 1 done, 1 running, 1 pending" in out
        assert "time left: ~4 min at 1 trial(s) at once" in out  # 240 s
        assert "running (1):" in out and "run1" in out and "epoch 4/10" in out
    finally:
        lease.release()


def test_held_arrays_are_shown_and_filtered(tmp_path, capsys):
    (tmp_path / "a.json").write_text("{}")  # the folder exists; no record of the held trials
    held = this_process(
        "MaxSubmitJobs=4 (association root/default)",
        [{"benchmarks": ["toy"], "stage": "mtl", "trials": ["toy-a", "toy-b", "toy-c"]}],
    )
    write_held(tmp_path, held)
    assert read_held(tmp_path) is not None
    out = status(capsys, str(tmp_path))
    assert "held: 3 trial(s) in 1 array(s) wait for the submit limit (MaxSubmitJobs=4" in out
    assert "3 trial(s): 0 done, 0 running, 3 pending" in out
    out = status(capsys, str(tmp_path), "--state", "held")
    assert [line.split()[1] for line in out.splitlines() if line.startswith("pending")] == [
        "toy-a",
        "toy-b",
        "toy-c",
    ]
    # a submitter that is gone holds nothing: the file is ignored
    write_held(tmp_path, type(held)(**{**held.__dict__, "pid": 2**22 + 12345}))
    assert read_held(tmp_path) is None
    clear_held(tmp_path)
    assert "held:" not in status(capsys, str(tmp_path))


def test_plain_table_pads_columns():
    assert plain_table([("a", 1), ("bbb", 22)], ["x", "yy"]).splitlines() == [
        "x    yy",
        "---  --",
        "a    1",
        "bbb  22",
    ]
