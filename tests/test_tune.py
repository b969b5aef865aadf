"""The tuning stage: declared spaces, seeded samplers, tuned sweep specs end to end (with a
resume after a kill), and the report notes."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import socket
from pathlib import Path

import pytest

import tiny_benchmark  # noqa: F401  (registers _tiny)
from mtlbench.cli import main
from mtlbench.method import METHODS, names
from mtlbench.metrics import delta_m_metric_avg
from mtlbench.notes import (
    KNOWN_CAUSES,
    outlier_notes,
    protocol_note,
    stage_of,
    tuning_note,
    tuning_status,
)
from mtlbench.records import iter_records, read_record, record_path, write_record
from mtlbench.registry import ConfigError
from mtlbench.report import build_report
from mtlbench.run.base import Batch
from mtlbench.run.driver import SweepRun
from mtlbench.run.local import LocalExecutor
from mtlbench.run.state import pending
from mtlbench.space import PROTOCOL_SPACE, Choice, IntRange, LogUniform
from mtlbench.sweep import SpecError, load_spec, parse_spec
from mtlbench.trainer import run_trial
from mtlbench.trial import TrialConfig, resolve
from mtlbench.tune import TuneSpec, describe_budget, method_space, sample_configs

ROOT = Path(__file__).resolve().parents[1]


# -- declared spaces ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", names())
def test_declared_space_matches_the_constructor(name):
    """Every declared key is a typed hyper-parameter of the constructor and every value the
    space can produce passes its type check (the registry's validation)."""
    hparams = METHODS.hparams(name)
    defaults = METHODS.defaults(name)
    rng = random.Random(0)
    for key, space in METHODS.get(name).search_space.items():
        assert key in hparams, f"{name}.search_space declares {key!r}, not a hyper-parameter"
        values = space.grid(defaults.get(key)) + [
            space.sample(rng, defaults.get(key)) for _ in range(5)
        ]
        for value in values:
            METHODS.validate(name, {key: value})
        if isinstance(space, Choice):
            assert len(set(space.values)) == len(space.values)
    if METHODS.get(name).search_space:
        assert "Search space" in (METHODS.get(name).__doc__ or ""), "cite the values"


def test_every_method_tunes_the_protocol_learning_rate():
    assert set(method_space("ls")) == {"protocol.lr"}
    assert set(method_space("ldc_mtl")) == {"protocol.lr", "method.lamb"}
    for name in names():
        assert method_space(name)["protocol.lr"] is PROTOCOL_SPACE["protocol.lr"]
    assert PROTOCOL_SPACE["protocol.lr"].grid(1e-3) == [1e-4, 3.162e-4, 1e-3, 3.162e-3, 1e-2]


def test_spaces_validate_their_bounds():
    with pytest.raises(ValueError):
        LogUniform(1.0, 0.1)
    with pytest.raises(ValueError):
        IntRange(3, 1)
    with pytest.raises(ValueError):
        Choice()
    assert IntRange(1, 3).grid() == [1, 2, 3]


def test_list_methods_space(capsys):
    assert main(["list", "methods", "--space"]) == 0
    out = capsys.readouterr().out
    assert "lamb" in out and "{0.01, 0.05, 0.1}" in out and "lr (protocol)" in out


# -- samplers -------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["grid", "random", "stratified"])
def test_samplers_are_seeded_distinct_and_fill_the_budget(sampler):
    space = method_space("famo")
    tune = TuneSpec(budget=6, sampler=sampler)
    first = sample_configs(space, tune, {"protocol.lr": 1e-3}, "b/famo")
    assert first == sample_configs(space, tune, {"protocol.lr": 1e-3}, "b/famo")
    assert len(first) == 6 and len({json.dumps(c, sort_keys=True) for c in first}) == 6
    assert first != sample_configs(
        space, TuneSpec(6, sampler, seed=1), {"protocol.lr": 1e-3}, "b/famo"
    )
    for config in first:
        assert 1e-4 <= config["protocol.lr"] <= 1e-2
        assert config["method.gamma"] in (0.0, 0.001, 0.01)


@pytest.mark.parametrize("method", ["ls", "famo", "db_mtl"])
def test_the_stratified_sampler_puts_one_lr_in_each_sixth_of_its_range(method):
    """Budget 6 over the lr's log-uniform [1e-4, 1e-2] (0.1 to 10 x 1e-3): the log range cut in
    6 strata of 1/3 decade each, one lr in each, whatever the other hyper-parameters (LS has
    none, FAMO two, DB-MTL two). FAMO's gamma, a choice of 3, gets each value twice."""
    configs = sample_configs(
        method_space(method), TuneSpec(6, "stratified"), {"protocol.lr": 1e-3}, f"b/{method}"
    )
    strata = sorted(int((math.log10(c["protocol.lr"]) + 4) * 3) for c in configs)
    assert strata == [0, 1, 2, 3, 4, 5]
    if method == "famo":
        gammas = sorted(c["method.gamma"] for c in configs)
        assert gammas == [0.0, 0.0, 0.001, 0.001, 0.01, 0.01]


def test_random_draws_are_what_they_were():
    """The random sampler draws as before the stratified one existed: a committed tuned sweep
    resumes with the same tuning trials (values pinned 2026-12-03, before the change)."""
    configs = sample_configs(
        method_space("ls"), TuneSpec(3, "random"), {"protocol.lr": 1e-3}, "b/ls"
    )
    assert [c["protocol.lr"] for c in configs] == [0.002122, 0.002297, 0.0003009]


def test_a_grid_smaller_than_the_budget_is_an_error():
    with pytest.raises(ConfigError, match="5 points, fewer than the budget 6"):
        sample_configs(method_space("ls"), TuneSpec(6, "grid"), {"protocol.lr": 1e-3}, "b/ls")


# -- specs ----------------------------------------------------------------------------------------
def test_untuned_specs_keep_their_trial_ids():
    """Pinned before the tuning stage existed: the ids of the shipped specs do not move. (Pinned
    again when LDC-MTL gained ``algorithm`` and ``router_lr``, and ``router_warmup``: its
    trials, and only its, changed ids then; docs/methods.md says so.)"""
    for spec, n, digest in [
        ("quickstart.yaml", 46, "8e60807e279d613d"),
        ("qm9_small.yaml", 48, "873b030caa17410e"),
    ]:
        sweep = load_spec(ROOT / "sweeps" / spec)
        ids = sorted(t.trial_id for t in sweep.trials)
        assert (len(ids), hashlib.sha256(" ".join(ids).encode()).hexdigest()[:16]) == (n, digest)
        assert not sweep.tuning and not any(hasattr(t, "stage") for t in sweep.trials)


def _spec(results: Path, **tune) -> dict:
    return {
        "name": "tuned",
        "results": str(results),
        "seeds": [0, 1],
        "methods": ["ls", "famo", "mgda"],
        "tune": {
            "budget": 3,
            "sampler": "random",
            "seeds": [10],
            "methods": ["ls", "famo"],
            **tune,
        },
        "benchmarks": {"_tiny": {"protocol": {"epochs": 2}, "stl": True}},
    }


@pytest.mark.parametrize(
    ("tune", "message"),
    [
        ({"sampler": "tpe"}, "sampler 'tpe' is not supported"),
        ({"metric": "val_nope"}, "unknown tune metric 'val_nope'"),
        ({"budget": 0}, "budget must be a positive integer"),
        ({"budget": 9, "sampler": "grid"}, "fewer than the budget 9"),
    ],
)
def test_tune_block_errors(tmp_path, tune, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(_spec(tmp_path, **tune))


def test_tuned_methods_take_fixed_settings_only(tmp_path):
    spec = _spec(tmp_path)
    spec["methods"] = {"famo": {"gamma": [0.0, 0.01]}}
    with pytest.raises(SpecError, match="not grids: gamma"):
        parse_spec(spec)
    spec["methods"] = {"famo": {"gamma": 0.001}}
    sweep = parse_spec(spec)
    (plan,) = sweep.tuning
    assert all("method.gamma" not in c for c in plan.configs)  # fixed: out of the space
    assert all(t.hparams["gamma"] == 0.001 for ts in plan.trials for t in ts)


def test_stages_order_stl_tune_then_the_rest(tmp_path):
    sweep = parse_spec(_spec(tmp_path))
    stl, tune, rest = sweep.stages()
    assert {t.mode for t in stl} == {"stl"}
    assert {t.stage for t in tune} == {"tune"} and len(tune) == 6  # 3 configs x 1 seed x 2
    assert {t.method for t in rest} == {"mgda"}  # untuned; finals join after selection
    assert "_tiny/famo: 3 configs x 1 seed(s) = 3 tuning trials" in describe_budget(sweep.tuning)
    assert "then 2 final trial(s), selection pending" in describe_budget(sweep.tuning)


def test_dry_run_budget_gives_the_range_of_sequential_final_seeds(tmp_path):
    """With sequential seeds the finals are the first wave, then more up to ``max``."""
    spec = _spec(tmp_path)
    spec["seeds"] = {"min": 2, "max": 7, "step": 2, "until": {"ci_halfwidth": 1.0}}
    budget = describe_budget(parse_spec(spec).tuning)
    assert "then 2 to 7 final trial(s), selection pending" in budget


# -- end to end -----------------------------------------------------------------------------------
class CountingExecutor(LocalExecutor):
    """The local executor, keeping the batches the driver hands it."""

    def __init__(self) -> None:
        super().__init__(workers=1, device="cpu")
        self.batches: list[Batch] = []

    def run(self, batch: Batch, progress: bool = True) -> dict[str, str]:
        self.batches.append(batch)
        return super().run(batch, progress)


def run_stages(sweep, executor) -> dict[str, str]:
    """What ``mtlbench sweep`` runs: the driver, quiet."""
    return SweepRun(sweep, executor).run(progress=False, echo=lambda _: None)


def _score(record: dict) -> float:
    return delta_m_metric_avg(
        record["metrics"]["val"], {"mse_a": 0.5, "mse_b": 0.5}, tiny_benchmark.Tiny.metrics
    )


def test_tuned_sweep_runs_stl_tune_final_and_resumes_after_a_kill(tmp_path):
    results = tmp_path / "results"
    executor = CountingExecutor()

    # 1. a run killed in the tuning stage: STL and 2 tuning trials done, one left `running`
    # by a process that is gone (what kill -9 leaves), the rest never started
    sweep = parse_spec(_spec(results))
    stl, tune, _ = sweep.stages()
    executor.run(Batch.of(sweep, [*stl, *tune[:3]]), progress=False)
    killed = read_record(record_path(results, tune[2].trial_id))
    killed["status"] = "running"
    killed["runner"] = {"host": socket.gethostname(), "pid": 2**22 + 1}  # no such process
    write_record(results, killed)
    assert not os.path.exists(f"/proc/{2**22 + 1}")

    # 2. the same spec again: only what is missing runs, in order, then the final runs
    sweep = parse_spec(_spec(results))
    before = {t.trial_id for t in sweep.trials} - {t.trial_id for t in pending(sweep)}
    statuses = run_stages(sweep, executor)
    assert set(statuses).isdisjoint(before) and set(statuses.values()) == {"done"}
    assert pending(sweep) == []
    # the driver: two batches after the first (the rest, then the final runs), typed stages
    first, rest, finals = executor.batches
    assert [s.kind for s in rest.stages] == ["tune", "mtl"]  # STL all done: no STL stage
    assert [s.kind for s in finals.stages] == ["mtl"]
    assert {t.stage for t in finals.trials} == {"final"} and len(finals.trials) == 4
    records = list(iter_records(results))
    by_stage = {s: [r for r in records if stage_of(r) == s] for s in ("tune", "final", "untuned")}
    assert len(by_stage["tune"]) == 6 and len(by_stage["final"]) == 4
    assert sorted(
        r["config"]["method"] for r in by_stage["untuned"] if r["config"]["mode"] == "mtl"
    ) == ["mgda", "mgda"]
    # stages ran in order: every STL run ended before the tuning runs of this round started,
    # every tuning run before any final run
    first_final = min(r["started_at"] for r in by_stage["final"])
    assert max(r["finished_at"] for r in by_stage["tune"]) <= first_final

    # 3. selection: the best mean validation score of each method's configurations
    for plan in sweep.tuning:
        scores = [_score(read_record(record_path(results, ts[0].trial_id))) for ts in plan.trials]
        assert plan.scores == pytest.approx(scores)
        best = min(range(3), key=scores.__getitem__)
        assert plan.selected == best
        for final in plan.final:
            record = read_record(record_path(results, final.trial_id))
            assert record["config"]["tuning"]["selected"] == dict(
                sorted(plan.configs[best].items())
            )
            assert record["config"]["tuning"]["budget"] == 3
            assert record["config"]["protocol"]["lr"] == plan.configs[best]["protocol.lr"]

    # 4. nothing left: a third run selects the same and runs nothing
    again = parse_spec(_spec(results))
    assert run_stages(again, executor) == {}
    assert len(executor.batches) == 3  # nothing handed to the executor
    assert [p.selected for p in again.tuning] == [p.selected for p in sweep.tuning]

    # 5. the notes count the budget per method
    status = tuning_status(records)
    assert status["mgda"] == "untuned defaults"
    assert status["famo"].startswith("tuned: 3 tuning trials (random, budget 3 x 1 seed(s)")
    assert "Run at untuned defaults: mgda" in tuning_note(records)
    assert protocol_note(records).startswith("Protocol: 2 epochs, 8 optimisation steps")


def test_selection_on_one_validation_metric(tmp_path):
    spec = _spec(tmp_path / "r", metric="val_mse_b", methods=["ls"])
    spec["benchmarks"]["_tiny"]["stl"] = False
    sweep = parse_spec(spec)
    run_stages(sweep, LocalExecutor(workers=1, device="cpu"))
    (plan,) = sweep.tuning
    vals = [
        read_record(record_path(sweep.results, ts[0].trial_id))["metrics"]["val"]["mse_b"]
        for ts in plan.trials
    ]
    assert plan.selected == min(range(3), key=vals.__getitem__)


# -- notes ----------------------------------------------------------------------------------------
def _record(method: str, stage: str | None = None, **config) -> dict:
    cfg = {"method": method, "mode": "mtl", "hparams": {}, "protocol": {"epochs": 6}, **config}
    if stage:
        cfg["stage"] = stage
    return {"config": cfg, "status": "done", "timing": {"steps": 600}}


def test_outlier_notes_point_at_known_causes():
    records = [
        _record("ls"),
        _record("db_mtl", hparams={"beta": 0.9}),
        _record("stch", hparams={"warmup_epochs": 4}, protocol={"epochs": 5}),
        _record("mgda"),
        _record("famo"),
    ]
    lines = outlier_notes(
        {"ls": 1.0, "db_mtl": 37.0, "stch": 20.0, "mgda": 15.0, "famo": 5.0}, records
    )
    assert lines[0].startswith("db_mtl is 36.0 points of Δm% behind LS: its constant gradient EMA")
    assert "(docs/methods.md#db_mtl)" in lines[0] and "beta 0.9" in lines[0]
    assert "stch is 19.0 points" in lines[1] and "warm-up (epochs 0-4" in lines[1]
    assert lines[2] == "mgda is 14.0 points of Δm% behind LS: no known cause is documented."
    assert len(lines) == 3  # famo is within the margin
    # the condition matters: DB-MTL without its EMA, or on a long protocol, has no known cause
    calm = [_record("ls"), _record("db_mtl", hparams={"beta": 0.0})]
    assert "no known cause" in outlier_notes({"ls": 0.0, "db_mtl": 30.0}, calm)[0]
    assert all(c.anchor.startswith("docs/methods.md#") for c in KNOWN_CAUSES)


def test_protocol_and_tuning_notes_skip_tuning_runs():
    records = [
        _record("ls", "tune", protocol={"epochs": 2}),
        _record(
            "ls",
            "final",
            tuning={"budget": 4, "sampler": "grid", "metric": "val_delta_m", "seeds": [9]},
        ),
    ]
    assert protocol_note(records) == "Protocol: 6 epochs, 600 optimisation steps per run."
    assert tuning_status(records) == {
        "ls": "tuned: 1 tuning trials (grid, budget 4 x 1 seed(s), on val_delta_m)"
    }
    assert protocol_note([]) == "Protocol: no finished run."


def test_a_method_whose_tuning_selected_nothing_is_named_with_the_reason():
    """GLS on Yeast: every tuning trial diverged, so no configuration was selected and no final
    run exists; the note says so instead of calling the method untuned or not run."""
    diverged = {"reason": "non-finite loss", "epoch": 0, "step": 21}
    records = [
        *[{**_record("gls", "tune"), "status": "diverged", "diverged": diverged}] * 2,
        _record("ls", "tune"),
        _record("ls", "final", tuning={"budget": 2, "sampler": "random", "seeds": [9]}),
        _record("famo", "tune"),
    ]
    status = tuning_status(records)
    assert status["gls"] == (
        "no final runs: all 2 tuning trials diverged (non-finite loss), so no configuration "
        "was selected"
    )
    assert status["famo"] == "no final runs: 1 of 1 tuning trials done, tuning not finished"
    note = tuning_note(records)
    assert "No final runs: famo: 1 of 1" in note and "gls: all 2 tuning trials diverged" in note
    assert "untuned" not in note


def test_dry_run_shows_the_budget_per_method(tmp_path, capsys):
    spec = ROOT / "sweeps" / "quickstart_tuned.yaml"
    assert main(["sweep", str(spec), "--dry-run", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for method in ("ls", "ldc_mtl", "famo", "mgda", "db_mtl", "stl[left]", "stl[right]"):
        assert f"multidigits/{method}: 6 configs x 1 seed(s) = 6 tuning trials" in out
    # The references are tuned first (2 tasks x 6 configs); the 5 x 6 tuning trials of the
    # methods wait for them, and every final run waits for its selection.
    assert "12 of 42 trials to run" in out
    assert "30 multi-task trial(s) of multidigits wait for the tuned single-task references" in out


_CLI = (
    "import sys; sys.path.insert(0, {tests!r}); import tiny_benchmark; "
    "from mtlbench.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _write_spec(raw: dict, results: Path, protocol: dict) -> Path:
    """``raw`` with ``_tiny``'s ``protocol`` and one local worker, as ``<results>.yaml``."""
    import yaml

    raw["benchmarks"]["_tiny"]["protocol"] = protocol
    raw["executor"] = {"kind": "local", "workers": 1}
    path = results.parent / f"{results.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _sweep_process(path: Path):
    """``mtlbench sweep PATH`` in a fresh Python, in a session of its own (killed as a group)."""
    import subprocess
    import sys

    code = _CLI.format(tests=str(ROOT / "tests"))
    cmd = [sys.executable, "-c", code, "sweep", str(path), "--device", "cpu", "-q"]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


@pytest.mark.slow
def test_tuned_sweep_killed_with_sigkill_resumes(tmp_path):
    """``mtlbench sweep`` on a tuned spec, killed with SIGKILL in its tuning stage, run again:
    every trial once, and the same selection and final records as an uninterrupted sweep."""
    import signal
    import time

    import yaml

    def spec(results: Path) -> Path:
        return _write_spec(_spec(results), results, {"epochs": 8, "n": 128})

    sweep = _sweep_process

    results = tmp_path / "killed"
    path = spec(results)
    tune_ids = {t.trial_id for t in parse_spec(yaml.safe_load(path.read_text())).stages()[1]}

    def done_tuning() -> int:
        n = 0
        for tid in tune_ids:
            try:
                n += read_record(record_path(results, tid))["status"] == "done"
            except (OSError, ValueError):
                pass
        return n

    first = sweep(path)
    deadline = time.monotonic() + 180
    while done_tuning() < 2:
        assert first.poll() is None, first.stdout.read()
        assert time.monotonic() < deadline, "no tuning trial finished in time"
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert 2 <= done_tuning() < len(tune_ids)

    second = sweep(path)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    reference = spec(tmp_path / "uninterrupted")
    third = sweep(reference)
    out, _ = third.communicate(timeout=300)
    assert third.returncode == 0, out

    def finals(folder: Path) -> dict[str, dict]:
        return {r["trial_id"]: r for r in iter_records(folder) if stage_of(r) == "final"}

    killed, clean = finals(results), finals(tmp_path / "uninterrupted")
    assert sorted(killed) == sorted(clean) and len(killed) == 4
    for tid, record in killed.items():
        assert record["config"]["tuning"] == clean[tid]["config"]["tuning"]
        assert record["metrics"] == clean[tid]["metrics"]
    assert len(list(results.glob("*.json"))) == len(
        list((tmp_path / "uninterrupted").glob("*.json"))
    )


@pytest.mark.slurm
@pytest.mark.slow
def test_tuned_sweep_on_the_local_slurm(tmp_path):
    """The same stages on SLURM: an array for the tuning trials, then one for the final runs,
    every record written by a SLURM job."""
    import subprocess
    import sys

    from test_slurm import slurm_problem

    from mtlbench.run.slurm.ledger import iter_ledger

    problem = slurm_problem()
    if problem is not None:
        if os.environ.get("MTLBENCH_REQUIRE_SLURM") == "1":
            pytest.fail(f"MTLBENCH_REQUIRE_SLURM=1 but {problem}")
        pytest.skip(problem)
    results = tmp_path / "results"
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: tuned_slurm\nresults: {results}\nseeds: [0]\nmethods: [ls, mgda]\n"
        "executor: {kind: slurm, time: 20, cpus: 1, poll_s: 2}\n"
        "tune: {budget: 2, sampler: random, metric: val_L1, seeds: [5]}\n"
        "benchmarks:\n  toy: {protocol: {epochs: 2, steps_per_epoch: 20}}\n"
    )
    cmd = [sys.executable, "-m", "mtlbench.cli", "sweep", str(spec), "--device", "cpu"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    finally:
        jobs = {e["job_id"] for e in iter_ledger(results)} if results.is_dir() else set()
        if jobs:
            subprocess.run(["scancel", *sorted(jobs)], capture_output=True)
    assert done.returncode == 0, done.stdout + done.stderr
    records = list(iter_records(results))
    assert sorted(stage_of(r) for r in records) == ["final", "final", *["tune"] * 4]
    assert all(r["status"] == "done" and r["environment"]["slurm"]["job_id"] for r in records)


def test_tuned_references_run_first_and_the_methods_wait_for_them(tmp_path):
    """``stl: true`` with a ``tune`` block that names ``stl`` (or names no methods): each task's
    reference gets the budget over the protocol's lr and selects on its own task's validation
    metric; the methods' tuning trials wait until the references' final runs exist, so their
    validation Δm% has its reference (issue 21, item 1)."""
    results = tmp_path / "results"
    raw = _spec(results, methods=["ls", "stl"], budget=4)
    raw["methods"] = ["ls"]
    sweep = parse_spec(raw)
    assert [s.kind for s in sweep.ready_stages()] == ["stl-tune"]  # ls's tuning waits
    assert sweep.waiting() == {"_tiny"}
    executor = CountingExecutor()
    said: list[str] = []
    statuses = SweepRun(sweep, executor).run(progress=False, echo=said.append)
    # 2 tasks x 4 reference draws to run now; ls's 4 draws wait (nothing was finished before)
    assert said[0].startswith(
        "sweep tuned: 12 trials, 0 already finished, 8 to run "
        "(4 more once the single-task references are tuned)"
    )
    assert set(statuses.values()) == {"done"} and pending(sweep) == []
    assert [[s.kind for s in b.stages] for b in executor.batches] == [
        ["stl-tune"],
        ["stl", "tune"],
        ["mtl"],
    ]
    records = {r["trial_id"]: r for r in iter_records(results)}
    references = [p for p in sweep.tuning if p.method == "stl"]
    assert sorted(p.task for p in references) == ["a", "b"]
    for plan in references:
        # each task's selection: the lowest validation mse of its task over the 4 lrs drawn
        metric = f"mse_{plan.task}"
        scores = [records[ts[0].trial_id]["metrics"]["val"][metric] for ts in plan.trials]
        assert plan.scores == pytest.approx(scores)
        assert plan.selected == min(range(4), key=scores.__getitem__)
        lr = plan.configs[plan.selected]["protocol.lr"]
        assert lr != tiny_benchmark.TinyProtocol.lr  # drawn from 0.1 to 10 x the default
        for final in plan.final:
            record = records[final.trial_id]
            assert (record["config"]["task"], record["config"]["protocol"]["lr"]) == (
                plan.task,
                lr,
            )
            assert record["config"]["stage"] == "final"
    # the default lr is poor here: an untuned reference of task a (seed 0) validates worse
    untuned = run_trial(resolve(TrialConfig("_tiny", "stl", 0, {"epochs": 2}, "a")), tmp_path)
    (tuned_a,) = [records[t.trial_id] for p in references if p.task == "a" for t in p.final[:1]]
    assert tuned_a["metrics"]["val"]["mse_a"] < untuned["metrics"]["val"]["mse_a"]
    # ls's tuning trials started after the last reference finished
    finals = [records[t.trial_id] for p in references for t in p.final]
    ls_tuning = [
        records[t.trial_id] for p in sweep.tuning if p.method == "ls" for ts in p.trials for t in ts
    ]
    assert max(r["finished_at"] for r in finals) <= min(r["started_at"] for r in ls_tuning)


# -- sequential seeds (issue 21, item 3) -------------------------------------------------------
def _sequential(results: Path, until: float, stl: bool = False) -> dict:
    return {
        "name": "sequential",
        "results": str(results),
        "seeds": {"min": 2, "max": 5, "step": 2, "until": {"ci_halfwidth": until}},
        "methods": ["ls", "mgda"],
        "benchmarks": {"_tiny": {"protocol": {"epochs": 2}, "stl": stl}},
    }


def test_sequential_seeds_grow_in_waves_to_max_and_resume_without_running_a_seed_twice(tmp_path):
    """``until`` below any spread: every group goes 2 -> 4 -> 5 seeds (max 5, step 2), one
    wave per round; the references (``stl: true``) first. Run again, nothing runs."""
    results = tmp_path / "results"
    sweep = parse_spec(_sequential(results, 1e-12, stl=True))
    assert {t.seed for t in sweep.trials} == {0, 1}
    assert all(t.seeding == {"min": 2, "max": 5, "step": 2, "until": 1e-12} for t in sweep.trials)
    executor = CountingExecutor()
    statuses = run_stages(sweep, executor)
    assert set(statuses.values()) == {"done"}
    records = list(iter_records(results))
    seeds: dict[tuple, set] = {}
    for r in records:
        key = (r["config"]["method"], r["config"]["task"])
        seeds.setdefault(key, set()).add(r["config"]["seed"])
    assert seeds == {
        k: {0, 1, 2, 3, 4} for k in [("ls", None), ("mgda", None), ("stl", "a"), ("stl", "b")]
    }
    assert len(records) == 20 and len(statuses) == 20  # each trial ran once
    again = parse_spec(_sequential(results, 1e-12, stl=True))
    assert run_stages(again, CountingExecutor()) == {}  # the waves replayed from the records
    assert len(again.trials) == 20
    index = build_report(results, tmp_path / "report", ["md"]).read_text()
    assert (
        "Sequential seeds: 2 to start, 2 more per wave while the 95% CI of the mean Δm% is "
        in index
    )
    assert "ls 5 (max reached, CI ±" in index and "mgda 5 (max reached, CI ±" in index


def test_sequential_seeds_stop_at_min_when_the_interval_is_narrow(tmp_path):
    results = tmp_path / "results"
    statuses = run_stages(parse_spec(_sequential(results, 1e9)), CountingExecutor())
    assert len(statuses) == 4  # ls and mgda, seeds 0 and 1: nothing more needed


def test_sequential_seed_plan_errors(tmp_path):
    raw = _sequential(tmp_path, 1.0)
    raw["seeds"] = {"min": 1, "max": 0, "until": {}}
    with pytest.raises(SpecError) as error:
        parse_spec(raw)
    text = str(error.value)
    assert "max must be a positive integer, got 0" in text
    assert "min must be at least 2: a confidence interval needs two seeds" in text
    assert "until must be {ci_halfwidth" in text


@pytest.mark.slow
def test_sequential_sweep_killed_with_sigkill_resumes_without_running_a_seed_twice(tmp_path):
    """``mtlbench sweep`` on a sequential spec (2 to 4 seeds, a target no spread meets), killed
    with SIGKILL once 3 runs are done, run again: the same records as an uninterrupted sweep,
    every trial once (one record per trial id, no seed run twice)."""
    import signal
    import time

    def spec(results: Path) -> Path:
        raw = _sequential(results, 1e-12)
        raw["seeds"]["max"] = 4
        return _write_spec(raw, results, {"epochs": 6, "n": 128})

    sweep = _sweep_process

    def done(folder: Path) -> int:
        return sum(r["status"] == "done" for r in iter_records(folder)) if folder.is_dir() else 0

    results = tmp_path / "killed"
    first = sweep(spec(results))
    deadline = time.monotonic() + 180
    while done(results) < 3:
        assert first.poll() is None, first.stdout.read()
        assert time.monotonic() < deadline, "no run finished in time"
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    second = sweep(spec(results))
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    clean = sweep(spec(tmp_path / "clean"))
    out, _ = clean.communicate(timeout=300)
    assert clean.returncode == 0, out

    def seeds(folder: Path) -> list[tuple[str, int]]:
        return sorted((r["config"]["method"], r["config"]["seed"]) for r in iter_records(folder))

    assert (
        seeds(results)
        == seeds(tmp_path / "clean")
        == [(m, s) for m in ("ls", "mgda") for s in range(4)]
    )
    assert len(list(results.glob("*.json"))) == 8
