"""A new method against a committed leaderboard (issue 19, item 4): ``mtlbench sweep SPEC --only
METHOD --results FOLDER`` and a spec with ``extends:`` run the method alone with the base's
protocol, tuning and seeds, reading the references from the base's records; ``mtlbench report
BASE FOLDER`` merges them into one leaderboard after checking that they are the same comparison;
time × LS divides only times of one machine (docs/tuning.md, docs/reports.md).

The leaderboard here is ``_tiny_stl`` (no published reference: Δm% needs its STL runs) with LS
and MGDA, tuned (references too) with a budget of 2, on 2 seeds: 16 trials of 2 epochs, run once
for the module."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from report_records import record

import tiny_benchmark  # noqa: F401  (registers _tiny_stl)
from mtlbench import extends
from mtlbench.cli import main
from mtlbench.environment import cpu_model, describe
from mtlbench.records import iter_records, write_record
from mtlbench.registry import ConfigError
from mtlbench.report.build import build_report
from mtlbench.report.leaderboard import compute_board
from mtlbench.report.load import read_results
from mtlbench.report.merge import read_folders
from mtlbench.report.tables import leaderboard_tables
from mtlbench.report.timing import NOT_COMPARABLE, timing_runs
from mtlbench.report.variants import prepare
from mtlbench.run.driver import SweepRun
from mtlbench.run.local import LocalExecutor
from mtlbench.sweep import SpecError, load_spec

# one worker runs the module, so that the leaderboard below is run once (--dist loadgroup)
pytestmark = pytest.mark.xdist_group("extends")

BENCH = "_tiny_stl"
BASE = {
    "name": "tinyboard",
    "seeds": [0, 1],
    "methods": {"ls": None, "mgda": None},
    "executor": {"kind": "local", "workers": 1},
    "benchmarks": {
        BENCH: {
            "protocol": {"epochs": 2},
            "stl": True,
            "tune": {"budget": 2, "sampler": "random", "seeds": [10], "seed": 0},
        }
    },
}


def _run(sweep) -> dict[str, str]:
    return SweepRun(sweep, LocalExecutor(workers=1, device="cpu")).run(
        progress=False, echo=lambda _: None
    )


def _spec(folder: Path, results: Path, **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "leaderboard.yaml"
    path.write_text(yaml.safe_dump({**BASE, "results": str(results), **changes}))
    return path


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> dict[str, Path]:
    """The base leaderboard, run; and FAMO run against it with ``--only``."""
    root = tmp_path_factory.mktemp("extends")
    spec = _spec(root / "sweeps", root / "results" / "board")
    assert set(_run(load_spec(spec)).values()) == {"done"}
    mine = root / "results" / "mine"
    argv = ["sweep", str(spec), "--only", "famo", "--results", str(mine), "--device", "cpu"]
    assert main([*argv, "--quiet"]) == 0
    return {"root": root, "spec": spec, "board": root / "results" / "board", "mine": mine}


def _by_id(folder: Path) -> dict[str, dict]:
    return {r["trial_id"]: r for r in iter_records(folder)}


# -- the two spellings ----------------------------------------------------------------------------
def test_only_runs_the_method_alone_with_the_base_settings_and_references(board):
    mine, base = _by_id(board["mine"]), _by_id(board["board"])
    assert {r["config"]["method"] for r in mine.values()} == {"famo"}  # no LS, MGDA or STL again
    assert sorted(r["config"].get("stage") for r in mine.values()) == ["final"] * 2 + ["tune"] * 2
    link = extends.read_link(board["mine"])
    assert link is not None and link.results.resolve() == board["board"].resolve()
    # the references are the base's STL final runs (its STL tuning runs are not references)
    stl_finals = {
        tid
        for tid, r in base.items()
        if r["config"]["mode"] == "stl" and r["config"]["stage"] == "final"
    }
    for r in mine.values():
        if r["config"]["stage"] == "final":
            trials = r["delta_m"]["reference"]["details"]["trials"]
            assert {t for ts in trials.values() for t in ts} == stl_finals

    # exactly what the base spec would have run for FAMO: the same trials (ids hash the
    # resolved configs), the same selection, the same numbers
    copy = board["root"] / "results" / "with_famo"
    shutil.copytree(board["board"], copy)
    spec = _spec(board["root"] / "copy", copy, methods={"ls": None, "mgda": None, "famo": None})
    assert set(_run(load_spec(spec)).values()) == {"done"}
    famo = {t: r for t, r in _by_id(copy).items() if r["config"]["method"] == "famo"}
    assert set(famo) == set(mine)
    for tid, r in famo.items():
        assert r["config"] == mine[tid]["config"]
        assert r["metrics"] == mine[tid]["metrics"]


def test_an_extends_spec_is_the_same_sweep_and_refuses_the_comparison_keys(board, tmp_path):
    own = tmp_path / "specs"
    own.mkdir()
    spec = own / "mine.yaml"  # extends: relative to its own folder
    base = os.path.relpath(board["spec"], own)
    spec.write_text(f"extends: {base}\nmethods: [famo]\nresults: {tmp_path}/r\n")
    sweep = load_spec(spec)
    only = load_spec(board["spec"], only=["famo"], results=tmp_path / "r")
    assert [t.to_dict() for t in sweep.trials] == [t.to_dict() for t in only.trials]
    assert {t.method for t in sweep.trials} == {"famo"} and sweep.base is not None
    assert sweep.base.digest == only.base.digest and sweep.report is None

    spec.write_text(
        f"extends: {base}\nmethods: [famo, stl]\ntune: {{budget: 9}}\nseeds: [0]\nreprot: x\n"
    )
    with pytest.raises(SpecError) as error:
        load_spec(spec)
    problems = "\n".join(error.value.problems)
    assert "line 3: 'tune' defines the comparison" in problems
    assert "line 4: 'seeds' defines the comparison" in problems
    assert "line 5: unknown key 'reprot'" in problems
    assert "line 2: stl: the single-task references are read from the base" in problems
    spec.write_text(f"extends: {base}\nmethods: [famo]\n")
    with pytest.raises(SpecError, match="is the base's own"):
        load_spec(spec, results=board["board"])


def test_only_names_unknown_methods_with_the_valid_ones(board, capsys):
    assert main(["sweep", str(board["spec"]), "--only", "ls,nope", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'nope'" in err and "Valid: " in err and "famo" in err


def test_a_folder_extends_one_base(board, tmp_path):
    link = load_spec(board["spec"], only=["famo"], results=tmp_path).base
    other = extends.BaseLink(link.spec, tmp_path / "elsewhere", link.comparison)
    with pytest.raises(ConfigError, match="extends .* not "):
        extends.claim(board["mine"], other)
    with pytest.raises(ConfigError, match="holds records of a sweep that extends nothing"):
        extends.claim(board["board"], link)


# -- the merged report ----------------------------------------------------------------------------
def test_the_merged_report_ranks_the_new_method_among_the_baselines(board, tmp_path):
    out = tmp_path / "report"
    build_report([board["board"], board["mine"]], out, ["md", "csv"])
    table = pd.read_csv(out / "tables" / f"leaderboard_{BENCH}.csv")
    methods = table[table["role"] == "method"].set_index("method")
    assert set(methods.index) == {"ls", "mgda", "famo"}
    famo = methods.loc["famo"]
    assert famo["n"] == 2 and math.isfinite(famo["delta_m"])
    assert math.isfinite(famo["delta_m_ci_low"]) and math.isfinite(famo["p_vs_ls"])
    assert methods["mean_rank"].notna().all()  # ranked with the rest
    assert famo["vs_ls"] in ("better", "worse", "tie")
    assert math.isfinite(famo["step_x_ls"])  # same machine: LS's timing is reused
    assert "time_x_ls_note" not in table
    page = (out / "index.md").read_text()
    assert "`" + str(board["mine"]) + "`" in page and "same comparison" in page

    # the folder alone: Δm% against the base's references (read through its sidecar)
    alone = read_folders([board["mine"]])
    board_alone = compute_board(prepare(alone.frame), BENCH)
    row = board_alone.table.set_index("method").loc["famo"]
    assert row["delta_m"] == pytest.approx(famo["delta_m"])


# -- the comparison check -------------------------------------------------------------------------
ENV = {"device": "cpu", "device_name": "cpu", "cpu_model": "CPU A", "torch": "2.13", "host": "h"}


def _folder(path: Path, methods, *, env=None, protocol=None, stl=True, step=0.01, tuning=None):
    """Records of ``_tiny_stl``: ``methods`` on seeds 0-2 (and STL runs of both tasks)."""
    values = {"ls": 0.5, "mgda": 0.6, "famo": 0.4}
    recs = []
    for seed in range(3):
        for method in methods:
            test = {"mse_a": values[method] + 0.01 * seed, "mse_b": values[method]}
            recs.append(record(BENCH, method, seed, test, protocol=protocol, step_s=step))
        if stl:
            for task in ("a", "b"):
                test = {f"mse_{task}": 0.5 + 0.01 * seed}
                recs.append(record(BENCH, "stl", seed, test, task=task, protocol=protocol))
    for rec in recs:
        rec["environment"] = {**ENV, **(env or {}), "mtlbench": "0.1.0"}
        if tuning and rec["config"]["mode"] == "mtl":
            rec["config"]["tuning"] = {**tuning, "selected": {}}
            rec["config"]["stage"] = "final"
        write_record(path, rec)
    return path


TUNING = {"budget": 6, "sampler": "random", "metric": "val_delta_m", "seeds": [100], "seed": 0}


def test_folders_that_are_not_the_same_comparison_are_refused_naming_the_keys(tmp_path, capsys):
    base = _folder(tmp_path / "base", ["ls", "mgda"], tuning=TUNING)
    other = _folder(
        tmp_path / "other",
        ["famo"],
        stl=False,
        protocol={"epochs": 4, "selection": "last"},
        tuning={**TUNING, "budget": 2},
    )
    assert main(["report", str(base), str(other), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not the same comparison" in err
    assert f"{other} differs from {base}" in err
    for key in ("protocol.epochs (3 vs 4)", 'protocol.selection ("best_val_delta_m" vs "last")'):
        assert key in err
    assert "tune.budget (6 vs 2)" in err and "protocol.batch_size" not in err
    assert not (tmp_path / "r" / "index.md").exists()


# -- time × LS across machines --------------------------------------------------------------------
def _board(folders, timing=None):
    results = read_folders(folders)
    ls = timing_runs(read_results(timing).frame) if timing else None
    return compute_board(prepare(results.frame), BENCH, timing_ls=ls)


def _famo(board):
    return board.table.set_index("method").loc["famo"]


def test_time_x_ls_reuses_the_leaderboards_ls_only_on_the_same_machine(tmp_path):
    base = _folder(tmp_path / "base", ["ls", "mgda"], step=0.01)
    same = _folder(tmp_path / "same", ["famo"], stl=False, step=0.03)
    assert _famo(_board([base, same]))["step_x_ls"] == pytest.approx(3.0)

    other = _folder(tmp_path / "other", ["famo"], stl=False, step=0.03, env={"torch": "2.14"})
    board = _board([base, other])
    famo = _famo(board)
    assert math.isnan(famo["step_x_ls"]) and famo["time_x_ls_note"] == NOT_COMPARABLE
    assert _famo(_board([base, same])).get("time_x_ls_note") is None
    note = next(n for n in board.notes if "time × LS of famo" in n)
    assert "torch '2.14' vs '2.13'" in note  # famo's machine vs LS's
    assert "--timing-reference" in note
    (table,) = leaderboard_tables(board.table, board.metrics)
    row = next(r for r in table.rows if r[0].text == "famo")
    assert [c.text for c in row[-2:]] == [NOT_COMPARABLE, NOT_COMPARABLE]

    # LS run on famo's machine, given as the timing reference: its time is the denominator
    here = _folder(tmp_path / "here", ["ls"], stl=False, step=0.02, env={"torch": "2.14"})
    board = _board([base, other], timing=here)
    assert _famo(board)["step_x_ls"] == pytest.approx(1.5)
    assert _famo(board)["time_x_ls_note"] == "timing reference"
    assert any("against 3 LS run(s) of the timing reference" in n for n in board.notes)


def test_the_report_command_takes_a_timing_reference(tmp_path):
    base = _folder(tmp_path / "base", ["ls", "mgda"], step=0.01)
    other = _folder(tmp_path / "other", ["famo"], stl=False, step=0.03, env={"cpu_model": "B"})
    here = _folder(tmp_path / "here", ["ls"], stl=False, step=0.02, env={"cpu_model": "B"})
    out = tmp_path / "r"
    argv = ["report", str(base), str(other), "--out", str(out), "--format", "csv"]
    assert main(argv) == 0
    table = pd.read_csv(out / "tables" / f"leaderboard_{BENCH}.csv").set_index("method")
    assert math.isnan(table.loc["famo", "step_x_ls"])
    assert main([*argv, "--timing-reference", str(here)]) == 0
    table = pd.read_csv(out / "tables" / f"leaderboard_{BENCH}.csv").set_index("method")
    assert table.loc["famo", "step_x_ls"] == pytest.approx(1.5)
    assert table.loc["famo", "time_x_ls_note"] == "timing reference"


def test_records_say_which_cpu_they_ran_on():
    assert describe(torch.device("cpu"))["cpu_model"] == cpu_model()
    if Path("/proc/cpuinfo").exists():
        assert cpu_model()  # Linux: the model name of /proc/cpuinfo
