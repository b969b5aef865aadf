"""The commands typed many times a day answer without importing torch (issue 22, "A CLI that
answers at once"): ``--help``, ``status`` and ``list``. Checked by what a fresh process has in
``sys.modules`` after the command, never by a clock (the latencies are in docs/performance.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import tiny_benchmark  # noqa: F401  (registers the "_tiny" benchmark)
from mtlbench.trainer import run_trial
from mtlbench.trial import TrialConfig, resolve

TESTS = Path(__file__).resolve().parent
HEAVY = ("torch", "numpy", "pandas", "scipy", "mtlbench.method", "mtlbench.benchmark")

PROBE = """
import contextlib, io, sys
from mtlbench.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main({argv!r})
    except SystemExit as stop:  # --help
        code = stop.code
assert code == 0, code
assert out.getvalue().strip(), "the command printed nothing"
print("HEAVY", sorted(m for m in {heavy!r} if m in sys.modules))
"""


def _probe(argv: list[str], cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MTLBENCH_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)],
        capture_output=True,
        text=True,
        cwd=TESTS,
        env=env,
        timeout=600,
    )


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory) -> Path:
    """A manifest cache filled by one cold ``list`` (which imports the implementations)."""
    cache = tmp_path_factory.mktemp("cache")
    cold = _probe(["list", "methods"], cache)
    assert cold.returncode == 0, cold.stderr
    assert "'torch'" in cold.stdout  # the cold run had to import them: the cache was empty
    assert list(cache.glob("manifest-*.json"))
    return cache


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A results folder holding one finished trial's record."""
    folder = tmp_path_factory.mktemp("results")
    run_trial(resolve(TrialConfig("_tiny", "ls", 0, {"epochs": 1})), folder, device="cpu")
    return folder


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["list", "methods"], ["list", "benchmarks"], ["list", "methods", "--long"]],
)
def test_help_and_list_do_not_import_torch(argv, warm_cache):
    proc = _probe(argv, warm_cache)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout


def test_status_does_not_import_torch(results, warm_cache):
    proc = _probe(["status", str(results)], warm_cache)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout


def test_the_probe_sees_torch_where_a_command_needs_it(warm_cache):
    """The probe sees imports: ``list --space`` reads the methods' classes, so it has torch."""
    proc = _probe(["list", "methods", "--space"], warm_cache)
    assert proc.returncode == 0, proc.stderr
    assert "'torch'" in proc.stdout
