"""Plug-ins from outside the repository (issue 19): the fixture package ``tests/plugin_fixture``
installed with pip into a temporary folder (never into the venv) is found by its entry points
by every command and in every process that runs a trial (spawned pool workers, Slurm jobs);
the same files given as ``plugins:`` run uninstalled; records name each plug-in, its version
and a digest of its files; every bad plug-in is one line on stderr, exit 2, nothing written."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_slurm import slurm  # noqa: F401  (the fixture: skips, or fails under CI, without Slurm)

import mtlbench.datasets  # noqa: F401  (the built-ins, registered before any snapshot)
import mtlbench.methods  # noqa: F401
from mtlbench import plugins
from mtlbench.benchmark import BENCHMARKS
from mtlbench.cli import main
from mtlbench.method import METHODS
from mtlbench.method import create as create_method
from mtlbench.records import iter_records

FIXTURE = Path(__file__).parent / "plugin_fixture"
PACKAGE = FIXTURE / "mtlbench_plugin_fixture"
DIST, VERSION = "mtlbench-plugin-fixture", "0.3.1"  # tests/plugin_fixture/pyproject.toml


@pytest.fixture(scope="session")
def fixture_target(tmp_path_factory) -> Path:
    """The fixture package, pip-installed into a temporary folder (built from a copy, so that
    the build leaves nothing in the source tree; no network: --no-index, no build isolation)."""
    base = tmp_path_factory.mktemp("plugin-fixture")
    source = shutil.copytree(FIXTURE, base / "src")
    target = base / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--no-cache-dir", "--disable-pip-version-check", "--target",
         str(target), str(source)],
        check=True,
    )  # fmt: skip
    return target


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """Registries, plug-in modules and the entry-point cache as they were before the test."""
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    monkeypatch.setattr(BENCHMARKS, "_entries", dict(BENCHMARKS._entries))
    monkeypatch.setenv("MTLBENCH_CACHE", str(tmp_path / "cache"))
    plugins.installed.cache_clear()
    yield
    for name in [m for m in sys.modules if m.startswith(("mtlbench_plugin", "broken_plugin"))]:
        del sys.modules[name]
    plugins.installed.cache_clear()


@pytest.fixture
def installed(fixture_target, monkeypatch) -> Path:
    """The fixture package on this process's path, and on its children's (Slurm jobs)."""
    monkeypatch.syspath_prepend(str(fixture_target))
    monkeypatch.setenv("PYTHONPATH", str(fixture_target))
    plugins.installed.cache_clear()
    return fixture_target


def _named(record: dict, module: str) -> dict:
    return next(p for p in record["plugins"] if p["module"] == module)


def _sha256(*files: Path, root: Path | None = None) -> str:
    digest = hashlib.sha256()
    for path in files:
        name = str(path.relative_to(root)) if root else path.name
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _assert_installed_provenance(record: dict) -> None:
    info = _named(record, "mtlbench_plugin_fixture.methods")
    assert (info["distribution"], info["version"]) == (DIST, VERSION)
    assert info["entry_point"] == "mtlbench.methods:fixture_inverse_loss"
    files = sorted(PACKAGE.glob("*.py"))
    assert info["files"] == len(files)
    assert info["sha256"] == _sha256(*files, root=PACKAGE)  # the installed copy, same bytes


def _spec(path: Path, results: Path, body: str) -> Path:
    path.write_text(f"name: {path.stem}\nresults: {results}\n{body}")
    return path


# -- found with no configuration ----------------------------------------------------------------


def test_the_fixture_is_listed_by_its_entry_points(installed, capsys):
    assert main(["list", "methods"]) == 0
    assert "fixture_inverse_loss" in capsys.readouterr().out
    assert main(["list", "benchmarks"]) == 0
    assert "two synthetic sine / cosine regressions" in capsys.readouterr().out


def test_the_fixture_method_has_its_golden_update(installed):
    """Losses (1, 2, 4), p = 1: weights 3 (1, 1/2, 1/4) / (7/4) = (12/7, 6/7, 3/7), objective
    sum_k w_k l_k = 3 * 12/7 = 36/7 (the method's docstring); p = 0 is LS."""
    losses = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    out = create_method("fixture_inverse_loss", 3).objective(losses, None)
    expected = torch.tensor([12 / 7, 6 / 7, 3 / 7], dtype=torch.float64)
    torch.testing.assert_close(out.weights, expected, rtol=1e-7, atol=0)
    assert out.loss.item() == pytest.approx(36 / 7, rel=1e-7)
    ls = create_method("fixture_inverse_loss", 3, power=0.0).objective(losses, None)
    torch.testing.assert_close(ls.weights, torch.ones(3, dtype=torch.float64))


def test_run_records_the_plugin_and_its_version(installed, tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["run", "-b", "fixture_sines", "-m", "fixture_inverse_loss", "--set", "epochs=1"]
    assert main([*argv, "--out", str(out), "-q", "--device", "cpu"]) == 0
    [record] = iter_records(out)
    assert record["status"] == "done"
    _assert_installed_provenance(record)
    assert _named(record, "mtlbench_plugin_fixture.benchmark")["version"] == VERSION


def test_check_and_bench_name_the_plugin(installed, tmp_path, capsys):
    line = f"plug-in: mtlbench_plugin_fixture.methods ({DIST} {VERSION}, sha256 "
    assert main(["check", "method", "fixture_inverse_loss"]) == 0
    out = capsys.readouterr().out
    assert line in out and "method fixture_inverse_loss: conforms" in out
    assert main(["check", "benchmark", "fixture_sines", "--fixture"]) == 0
    out = capsys.readouterr().out
    assert "benchmark fixture_sines: conforms" in out
    assert f"plug-in: mtlbench_plugin_fixture.benchmark ({DIST} {VERSION}" in out
    csv_path = tmp_path / "bench.csv"
    argv = ["bench", "--workload", "toy", "--methods", "fixture_inverse_loss", "--reps", "1"]
    assert main([*argv, "--warmup", "0", "--device", "cpu", "--out", str(csv_path)]) == 0
    rows = {r["method"]: r for r in csv.DictReader(csv_path.open())}
    assert rows["fixture_inverse_loss"]["plugin"].startswith(line.removeprefix("plug-in: "))
    assert rows["ls"]["plugin"] == ""  # a built-in


@pytest.mark.slow
def test_a_sweep_on_two_spawned_workers_finds_the_installed_plugin(installed, tmp_path):
    results = tmp_path / "results"
    spec = _spec(
        tmp_path / "installed.yaml",
        results,
        "seeds: [0, 1]\nmethods: [fixture_inverse_loss]\nexecutor: {kind: local, workers: 2}\n"
        "benchmarks:\n  fixture_sines:\n    protocol: {epochs: 1}\n",
    )
    assert main(["sweep", str(spec), "--device", "cpu", "-q", "--no-report"]) == 0
    records = list(iter_records(results))
    assert len(records) == 2 and {r["status"] for r in records} == {"done"}
    assert all(r["runner"]["pid"] != os.getpid() for r in records)  # ran in the workers
    for record in records:
        _assert_installed_provenance(record)


@pytest.mark.slow
def test_the_same_files_uninstalled_run_in_a_spawned_sweep(tmp_path, monkeypatch):
    """``plugins:`` with the fixture's two files, relative to the spec's folder (the sweep runs
    from elsewhere): the Batch carries them to the workers, which import them before the
    trials (whose protocol is the file plug-in's class)."""
    folder = tmp_path / "spec"
    folder.mkdir()
    for name in ("methods.py", "benchmark.py"):
        shutil.copy(PACKAGE / name, folder / name)
    results = tmp_path / "results"
    spec = _spec(
        folder / "files.yaml",
        results,
        "plugins: [./methods.py, ./benchmark.py]\nseeds: [0, 1]\n"
        "methods: [fixture_inverse_loss]\nexecutor: {kind: local, workers: 2}\n"
        "benchmarks:\n  fixture_sines:\n    protocol: {epochs: 1}\n",
    )
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", str(spec), "--device", "cpu", "-q", "--no-report"]) == 0
    records = list(iter_records(results))
    assert len(records) == 2 and {r["status"] for r in records} == {"done"}
    for record in records:
        assert all(r["runner"]["pid"] != os.getpid() for r in records)
        sources = {p["source"]: p for p in record["plugins"]}
        info = sources[str((folder / "methods.py").resolve())]
        assert info["distribution"] is None and info["entry_point"] is None
        assert info["module"].startswith("mtlbench_plugin_methods_")
        assert info["sha256"] == _sha256(folder / "methods.py")
        assert str((folder / "benchmark.py").resolve()) in sources


# -- on the local Slurm -------------------------------------------------------------------------


@pytest.mark.slurm
@pytest.mark.slow
def test_a_slurm_job_imports_installed_and_given_plugins(
    installed,
    tmp_path,
    slurm,  # noqa: F811  (the fixture)
):
    """One array task: the installed benchmark (found by the job through its entry point on
    the shared path) and a method from a file given in ``plugins:`` (carried in the task)."""
    (tmp_path / "halves.py").write_text(
        "import torch\nfrom mtlbench.method import LossWeighting, Objective, register\n\n\n"
        '@register("file_halves")\nclass Halves(LossWeighting):\n'
        '    """Every task weighted 1/2 (a test plug-in)."""\n\n'
        "    def objective(self, losses, ctx):\n"
        "        weights = torch.full_like(losses, 0.5)\n"
        "        return Objective(loss=(weights * losses).sum(), weights=weights)\n"
    )
    results = tmp_path / "results"
    spec = _spec(
        tmp_path / "slurm.yaml",
        results,
        "plugins: [./halves.py]\nmethods: [file_halves]\n"
        "executor: {kind: slurm, time: 20, cpus: 1, poll_s: 2}\n"
        "benchmarks:\n  fixture_sines:\n    protocol: {epochs: 1}\n",
    )
    try:
        assert main(["sweep", str(spec), "--device", "cpu", "-q", "--no-report"]) == 0
    finally:
        subprocess.run(["scancel", "--name", "mtlbench-slurm"], capture_output=True)
    [record] = iter_records(results)
    assert record["status"] == "done" and record["environment"]["slurm"]["job_id"]
    assert _named(record, "mtlbench_plugin_fixture.benchmark")["version"] == VERSION
    halves = next(p for p in record["plugins"] if p["source"].endswith("halves.py"))
    assert halves["sha256"] == _sha256(tmp_path / "halves.py")


# -- bad plug-ins: one line, exit 2, nothing written --------------------------------------------

HEAD = "import torch\nfrom mtlbench.method import LossWeighting, Method, register\n"
BENCH_HEAD = "from mtlbench.benchmark import Benchmark, register\n"
BAD = {
    "import": ("import not_a_module_xyz\n", "failed to import: ModuleNotFoundError"),
    "syntax": ("def broken(:\n", "failed to import: SyntaxError"),
    "builtin clash": (
        HEAD + '@register("ls")\nclass Mine(LossWeighting):\n'
        "    def objective(self, losses, ctx):\n        return None\n",
        "method 'ls' clashes with the built-in one (mtlbench.methods.ls); register it under "
        "another name",
    ),
    "not a method": (
        HEAD + '@register("not_m")\nclass NotAMethod:\n    pass\n',
        "is not a subclass of mtlbench.method.Method: subclass LossWeighting",
    ),
    "no needs": (
        HEAD + '@register("bare")\nclass Bare(Method):\n    pass\n',
        "declares no `needs` (it subclasses Method directly)",
    ),
    "no objective": (
        HEAD + '@register("lazy")\nclass Lazy(LossWeighting):\n    pass\n',
        "does not implement `objective`, which a 'losses' method must define",
    ),
    "not a benchmark": (
        BENCH_HEAD + '@register("not_b")\nclass NotABenchmark:\n    pass\n',
        "is not a subclass of mtlbench.benchmark.Benchmark: subclass it",
    ),
    "no tasks": (
        BENCH_HEAD + '@register("no_tasks")\nclass NoTasks(Benchmark):\n    pass\n',
        "declares no tasks: set the class attribute `tasks = ('a', 'b')`",
    ),
}


def _refused(capsys, argv: list[str], expected: str) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("mtlbench: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def _run(out: Path, *plugin_args: str) -> list[str]:
    return ["run", "-b", "toy", "-m", "ls", "--out", str(out), *plugin_args]


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_plugin_is_one_line_and_nothing_is_written(case, tmp_path, capsys):
    text, expected = BAD[case]
    path = tmp_path / "bad_plugin.py"
    path.write_text(text)
    line = _refused(capsys, _run(tmp_path / "out", "--plugin", str(path)), expected)
    assert str(path) in line  # names the plug-in
    assert not (tmp_path / "out").exists()


def test_missing_plugins_and_clashing_plugins(tmp_path, capsys):
    out = tmp_path / "out"
    _refused(
        capsys,
        _run(out, "--plugin", "no_such_plugin_xyz"),
        "plugin no_such_plugin_xyz: no module named 'no_such_plugin_xyz' on this Python's path;"
        " install its package",
    )
    _refused(capsys, _run(out, "--plugin", "./nope.py"), "plugin file ./nope.py not found")
    _refused(capsys, _run(out, "--plugin", "1bad name"), "neither a module name")
    method = HEAD + '@register("twice")\nclass M(LossWeighting):\n    def objective(s, l, c):\n'
    (tmp_path / "first.py").write_text(method + "        return 1\n")
    (tmp_path / "second.py").write_text(method + "        return 2\n")
    line = _refused(
        capsys,
        _run(out, "--plugin", str(tmp_path / "first.py"), "--plugin", str(tmp_path / "second.py")),
        "method 'twice' clashes with the one of the plug-in mtlbench_plugin_first_",
    )
    assert line.startswith(f"mtlbench: error: plugin {tmp_path / 'second.py'}: ")
    assert not out.exists()


def test_a_broken_installed_plugin_names_its_distribution(tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    (site / "broken_plugin_dist-1.0.dist-info").mkdir(parents=True)
    (site / "broken_plugin_dist-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: broken-plugin-dist\nVersion: 1.0\n"
    )
    (site / "broken_plugin_dist-1.0.dist-info" / "entry_points.txt").write_text(
        "[mtlbench.methods]\nbroken = broken_plugin_mod\n"
    )
    (site / "broken_plugin_mod.py").write_text("raise RuntimeError('needs a GPU driver')\n")
    monkeypatch.syspath_prepend(str(site))
    plugins.installed.cache_clear()
    _refused(
        capsys,
        _run(tmp_path / "out", "-q"),
        "plugin broken_plugin_mod (entry point mtlbench.methods:broken of broken-plugin-dist) "
        "failed to import: RuntimeError: needs a GPU driver; `python -c 'import "
        "broken_plugin_mod'` shows it, or uninstall it (pip uninstall broken-plugin-dist)",
    )
    _refused(capsys, ["list", "methods"], "plugin broken_plugin_mod (entry point")
    assert not (tmp_path / "out").exists()


def test_a_spec_plugin_problem_has_its_line_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "broken.py").write_text("import not_a_module_xyz\n")
    results = tmp_path / "results"
    spec = _spec(
        tmp_path / "bad.yaml",
        results,
        "plugins:\n  - ./broken.py\nmethods: [mine]\nbenchmarks: {toy: {}}\n",
    )
    line = _refused(capsys, ["sweep", str(spec)], "line 4: plugin ")
    assert "broken.py failed to import: ModuleNotFoundError" in line  # not "unknown method"
    spec.write_text(f"results: {results}\nplugins: ./broken.py\nmethods: [ls]\nbenchmarks: {{}}\n")
    assert main(["sweep", str(spec)]) == 2
    assert "line 2: plugins must be a list" in capsys.readouterr().err
    assert not results.exists()


def test_every_command_takes_plugin(tmp_path, capsys):
    """``--plugin`` on list, check, bench and report: a bad one is refused by each."""
    bad = tmp_path / "bad_plugin.py"
    bad.write_text(BAD["not a method"][0])
    results = tmp_path / "results"
    results.mkdir()
    for argv in (
        ["list", "methods"],
        ["check", "method", "ls"],
        ["check", "benchmark", "toy", "--fixture"],
        ["bench", "--methods", "ls"],
        ["report", str(results), "--out", str(tmp_path / "report")],
    ):
        _refused(capsys, [*argv, "--plugin", str(bad)], "is not a subclass of mtlbench.method")
    assert not (tmp_path / "report").exists()
