"""The shipped sweep specs (``sweeps/*.yaml``): every one loads and validates, executor included;
the ``ldc_mtl_*`` specs hold the LDC-MTL paper's grid (every method of its tables x 3 seeds, with
the published single-task references) and ask Slurm for a GPU; a dry run needs neither the data
nor Slurm. The paper's grid is read from the published numbers the report ships
(``mtlbench/data/ldc_mtl_published.csv``), so it is not pasted here.
"""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import pytest

import tiny_benchmark  # noqa: F401  (registers the "_tiny" benchmark some specs here name)
from mtlbench import benchmark as benchmarks
from mtlbench import cli
from mtlbench.registry import ConfigError
from mtlbench.report import PUBLISHED_CSV
from mtlbench.run.base import Batch, make_executor
from mtlbench.run.options import ExecutorOptions
from mtlbench.run.slurm.executor import SlurmExecutor
from mtlbench.sweep import SpecError, Sweep, load_spec

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
SPECS = sorted(SWEEPS.glob("*.yaml"))
PAPER_BENCHMARKS = ("celeba", "qm9", "nyuv2", "cityscapes")
SEEDS = {0, 1, 2}


def paper_grid() -> dict[str, set[str]]:
    """Benchmark -> the registry names of the methods in the LDC-MTL paper's tables."""
    grid: dict[str, set[str]] = {}
    with PUBLISHED_CSV.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["method"] != "stl":
                grid.setdefault(row["benchmark"], set()).add(row["method"])
    return grid


def ldc_spec(bench: str) -> Sweep:
    return load_spec(SWEEPS / f"ldc_mtl_{bench}.yaml")


def test_the_glob_finds_the_specs():
    names = {p.name for p in SPECS}
    assert {"quickstart.yaml", "qm9_small.yaml"} <= names
    assert {f"ldc_mtl_{b}.yaml" for b in PAPER_BENCHMARKS} <= names


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_spec_loads_and_validates(path: Path):
    sweep = load_spec(path)  # raises SpecError listing every problem
    assert sweep.trials
    assert len({t.trial_id for t in sweep.trials}) == len(sweep.trials)
    executor = make_executor(sweep.executor)  # options and resources were checked at load
    if isinstance(executor, SlurmExecutor):
        groups = executor.groups(Batch.of(sweep))
        assert sum(len(g.trials) for g in groups) == len(sweep.trials)


def test_paper_grid_is_complete():
    # ldc-mtl.md 2.1 / 2.2: 16 methods on Cityscapes (with GradDrop and MoCo), 14 on the others
    grid = paper_grid()
    assert {b: len(grid[b]) for b in PAPER_BENCHMARKS} == {
        "celeba": 14,
        "qm9": 14,
        "nyuv2": 14,
        "cityscapes": 16,
    }
    assert grid["cityscapes"] - grid["nyuv2"] == {"graddrop", "moco"}


@pytest.mark.parametrize("bench", PAPER_BENCHMARKS)
def test_ldc_mtl_spec_runs_the_paper_grid(bench: str):
    sweep = ldc_spec(bench)
    methods = paper_grid()[bench]
    assert {t.benchmark for t in sweep.trials} == {bench}
    assert all(t.mode == "mtl" for t in sweep.trials)  # STL rows are the published ones
    runs = Counter((t.method, t.seed) for t in sweep.trials)
    assert set(runs) == {(m, s) for m in methods for s in SEEDS}
    assert len(sweep.trials) == 3 * len(methods)
    cls = benchmarks.get(bench)
    for protocol in {repr(t.protocol): t.protocol for t in sweep.trials}.values():
        assert cls(protocol).reference() is not None, f"{bench}: no published reference"
    assert all(t.data_root for t in sweep.trials)  # a placeholder the user edits
    assert sweep.report is not None and sweep.results == Path(f"results/ldc_mtl_{bench}")


@pytest.mark.parametrize("bench", PAPER_BENCHMARKS)
def test_ldc_mtl_spec_asks_slurm_for_a_gpu(bench: str):
    sweep = ldc_spec(bench)
    assert sweep.executor.kind == "slurm"
    own = sweep.resources[bench]
    assert own.gpus >= 1 and {"cpus", "mem", "time"} <= set(own.as_dict())
    executor = make_executor(sweep.executor)
    for group in executor.groups(Batch.of(sweep)):
        assert group.params["gpus_per_node"] >= 1
        assert group.params["timeout_min"] > 60
        assert group.params["slurm_array_parallelism"] >= 1


def test_qm9_small_spec():
    sweep = load_spec(SWEEPS / "qm9_small.yaml")
    mtl = Counter((t.method, t.seed) for t in sweep.trials if t.mode == "mtl")
    methods = {"ls", "ldc_mtl", "famo", "mgda", "db_mtl"}
    assert set(mtl) == {(m, s) for m in methods for s in SEEDS}
    assert {t.benchmark for t in sweep.trials} == {"qm9-small"}
    assert sweep.executor == ExecutorOptions(kind="local", workers="auto")


def test_dry_run_needs_no_data_and_no_slurm(tmp_path, monkeypatch, capsys):
    spec = SWEEPS / "ldc_mtl_nyuv2.yaml"
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no sbatch, squeue or sacct
    monkeypatch.chdir(tmp_path)  # the spec's relative results folder lands here, if anywhere
    monkeypatch.setattr(cli, "EXTENSIONS", [])
    assert shutil.which("sbatch") is None
    assert not Path(load_spec(spec).trials[0].data_root).exists()
    assert cli.main(["sweep", str(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "sweep ldc_mtl_nyuv2: 42 of 42 trials to run" in out
    assert "SLURM plan (slurm): 42 trial(s) in 1 job array(s)" in out
    for line in ("#SBATCH --array=0-41%14", "#SBATCH --gpus-per-node=1", "#SBATCH --time=1440"):
        assert line in out, line
    assert [p.name for p in tmp_path.iterdir()] == ["bin"]  # nothing submitted, nothing written


# -- executor options and resources: typed when the spec loads, each problem at its line -------

BAD_OPTIONS = """\
name: bad
methods: [ls]
executor:
  kind: slurm
  poll_s: 0
  wait: "yes"
  gpu: 1
  time: never
benchmarks:
  _tiny:
    resources:
      cpus: 0
      partiton: gpu
"""


def test_executor_options_and_resources_are_checked_at_load_with_their_lines(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_OPTIONS)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    problems = caught.value.problems
    # the lines of BAD_OPTIONS: 5 poll_s, 6 wait, 7 gpu, 8 time, 12 cpus, 13 partiton
    expected = [
        (5, "executor: poll_s must be a positive number of seconds"),
        (6, "executor: wait: expected bool, got 'yes'"),
        (7, "executor: unknown option 'gpu'. Did you mean 'gpus'?"),
        (8, "executor: resource 'time' must be minutes"),
        (12, "benchmark '_tiny': resource 'cpus' must be a positive integer, got 0"),
        (13, "benchmark '_tiny': unknown resource 'partiton'. Did you mean 'partition'?"),
    ]
    assert len(problems) == len(expected), problems
    for line, text in expected:
        assert any(p.startswith(f"{path}: line {line}: {text}") for p in problems), (line, text)


def test_local_executor_options_name_the_valid_ones(tmp_path):
    path = tmp_path / "local.yaml"
    path.write_text(
        "methods: [ls]\nexecutor: {kind: local, workers: 0, partition: cpu}\n"
        "benchmarks: {_tiny: {}}\n"
    )
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    text = "\n".join(caught.value.problems)
    assert "line 2: executor: workers: expected int >= 1 | 'auto', got 0" in text
    assert "line 2: executor: unknown option 'partition'. Valid: kind, workers" in text


def test_the_command_line_overrides_options_without_editing_them(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "methods: [ls]\nexecutor: {kind: slurm, partition: cpu, poll_s: 5}\n"
        "benchmarks: {_tiny: {}}\n"
    )
    sweep = load_spec(path)
    spec_options = sweep.executor
    assert spec_options.slurm.poll_s == 5 and spec_options.resources.partition == "cpu"
    same = spec_options.override(kind="slurm", workers=3)
    assert same.slurm == spec_options.slurm and same.workers == 3
    local = spec_options.override(kind="local", workers=2)
    assert local == ExecutorOptions(kind="local", workers=2)  # Slurm options left behind
    assert sweep.executor is spec_options and spec_options.workers == "auto"  # untouched
    with pytest.raises(ConfigError, match="executor: kind: expected one of 'local', 'slurm'"):
        spec_options.override(kind="cloud")
