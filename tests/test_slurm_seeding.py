"""Sequential seeds on the local Slurm (issue 21): the waves go through the Slurm executor, the
sweep stops by the rule, and a sweep killed between waves resumes without running a seed twice.

Needs a Slurm controller (skipped without one; ``MTLBENCH_REQUIRE_SLURM=1`` makes that a
failure, as in CI). MultiDigits at a toy size (512 training images, one epoch of 16 steps)
stands in for a benchmark: Slurm jobs import only the package's own benchmarks.
"""

from __future__ import annotations

import math
import signal
import statistics
import time
from pathlib import Path

import pytest
from scipy import stats
from test_slurm import _mtlbench, cleanup, slurm  # noqa: F401  (fixtures)

from mtlbench.records import iter_records
from mtlbench.run.driver import SweepRun
from mtlbench.run.local import LocalExecutor
from mtlbench.run.slurm.ledger import iter_ledger, squeue_states
from mtlbench.sweep import load_spec

PROTOCOL = "{epochs: 1, batch_size: 32, lr: 0.005, n_train: 512, n_val: 256, n_test: 512}"
UNTIL = 1e-9  # the target half-width: only runs with equal scores meet it (YAML: 1.0e-9)


def _spec(tmp_path: Path, results: Path) -> Path:
    """ls and the two references; seeds 0-1, then one seed a wave up to 3, with a target that
    only equal scores meet: a group grows unless its runs tie, the references first."""
    path = tmp_path / "spec.yaml"
    path.write_text(
        f"name: sequential_slurm\nresults: {results}\nmethods: [ls]\n"
        f"seeds: {{min: 2, max: 3, step: 1, until: {{ci_halfwidth: 1.0e-9}}}}\n"
        # time > 10 min: submitit would count every USR2 as a time-out below that
        "executor: {kind: slurm, time: 20, cpus: 1, poll_s: 1}\n"
        f"benchmarks:\n  multidigits: {{protocol: {PROTOCOL}, stl: true}}\n"
    )
    return path


def _halfwidth(scores: list[float]) -> float:
    """The 95% t interval's half-width of the mean, computed here from its definition."""
    n = len(scores)
    return stats.t.ppf(0.975, n - 1) * statistics.stdev(scores) / math.sqrt(n)


def _scores(records: list[dict]) -> dict[tuple, list[float]]:
    """Each group's test Δm% by seed: a reference's against its own mean, ls's against the
    references' means over all their seeds (ls is decided once they have stopped)."""
    by: dict[tuple, list[dict]] = {}
    for r in sorted(records, key=lambda r: r["config"]["seed"]):
        by.setdefault((r["config"]["method"], r["config"]["task"]), []).append(r)
    ref = {
        task: statistics.fmean(r["metrics"]["test"][f"{task}_acc"] for r in by[("stl", task)])
        for task in ("left", "right")
    }

    def delta(values: dict, base: dict) -> float:  # accuracy: higher is better
        return statistics.fmean(-100 * (values[m] - b) / b for m, b in base.items())

    out = {}
    for (method, task), runs in by.items():
        if method == "stl":
            metric = f"{task}_acc"
            own = statistics.fmean(r["metrics"]["test"][metric] for r in runs)
            out[(method, task)] = [delta(r["metrics"]["test"], {metric: own}) for r in runs]
        else:
            base = {f"{t}_acc": v for t, v in ref.items()}
            out[(method, task)] = [delta(r["metrics"]["test"], base) for r in runs]
    return out


def _queued(results: Path) -> set[str]:
    """The ledger's jobs that Slurm still holds."""
    active = squeue_states()
    return {e["job_id"] for e in iter_ledger(results) if e["job_id"] in active}


@pytest.mark.slurm
@pytest.mark.slow
def test_sequential_seeds_grow_in_waves_on_slurm_and_resume_after_a_kill(
    tmp_path,
    slurm,  # noqa: F811
    cleanup,  # noqa: F811
):
    procs, to_cancel = cleanup
    results = tmp_path / "results"
    to_cancel.append(results)
    spec = _spec(tmp_path, results)

    # 1. the first sweep: killed (SIGKILL) once a second wave is submitted
    first = _mtlbench("sweep", str(spec), "--device", "cpu", "--no-report")
    procs.append(first)
    deadline = time.monotonic() + 900  # guards against a hang only
    while not any("-s2-" in e["trial_id"] for e in iter_ledger(results)):
        assert first.poll() is None, first.stdout.read()
        assert time.monotonic() < deadline, "no second wave was ever submitted"
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)

    # 2. run again until nothing is left: trials still queued are left to their jobs (the
    # ledger refuses them), and the next run picks up from their records
    outputs = []
    for _ in range(6):
        deadline = time.monotonic() + 900
        while _queued(results):
            assert time.monotonic() < deadline, "Slurm jobs never finished"
            time.sleep(1)
        again = _mtlbench("sweep", str(spec), "--device", "cpu", "--no-report")
        procs.append(again)
        out, _ = again.communicate(timeout=1800)
        assert again.returncode == 0, out
        outputs.append(out)
        if "0 to run" in out and not _queued(results):
            break
    else:
        pytest.fail("the sweep never finished:\n" + "\n".join(outputs))

    # 3. the rule, checked from the records: a group grew past k seeds exactly when the
    # half-width of its first k was above the target, up to max (3); each seed ran once, in
    # a Slurm job, each trial submitted once
    records = list(iter_records(results))
    scores = _scores(records)
    assert set(scores) == {("ls", None), ("stl", "left"), ("stl", "right")}
    for group, values in scores.items():
        assert all(_halfwidth(values[:k]) > UNTIL for k in range(2, len(values))), group
        assert len(values) == 3 or _halfwidth(values) <= UNTIL, group
    assert max(len(v) for v in scores.values()) == 3  # a wave was added (on Slurm)
    assert sorted(
        (r["config"]["method"], r["config"]["task"], r["config"]["seed"]) for r in records
    ) == sorted((m, t, s) for (m, t), v in scores.items() for s in range(len(v)))
    assert len(list(results.glob("*.json"))) == len(records)
    assert all(r["status"] == "done" and r["environment"]["slurm"]["job_id"] for r in records)
    ledger = list(iter_ledger(results))
    assert len(ledger) == len(records) and not any(e.get("history") for e in ledger)
    # the waves: a seed 2 in a later submission than its group's seeds 0-1, and ls's after
    # every reference's
    job = {e["trial_id"]: int(e["job_id"].split("_")[0]) for e in ledger}
    groups: dict[tuple, dict[int, int]] = {}
    for r in records:
        key = (r["config"]["method"], r["config"]["task"])
        groups.setdefault(key, {})[r["config"]["seed"]] = job[r["trial_id"]]
    for group, jobs in groups.items():
        if 2 in jobs:
            assert jobs[2] > max(jobs[0], jobs[1]), group
    if 2 in groups[("ls", None)]:
        stl_jobs = [j for key, jobs in groups.items() if key[0] == "stl" for j in jobs.values()]
        assert groups[("ls", None)][2] > max(stl_jobs)

    # 4. the decisions replay from the records: a local run of the spec has nothing to do
    sweep = load_spec(spec)
    assert SweepRun(sweep, LocalExecutor(workers=1, device="cpu")).plan() == []
    assert len(sweep.trials) == len(records)
