"""The shape of the ``mtlbench`` package (issue 12): no import cycle among its modules, heavy
dependencies (submitit, matplotlib, seaborn) only where they are used, small modules and
functions."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import tiny_benchmark  # noqa: F401  (registers the "_tiny" benchmark)

PACKAGE = Path(__file__).resolve().parents[1] / "mtlbench"
MAX_MODULE_LINES = 500  # docs/design.md: the limits, and the exceptions
MAX_FUNCTION_LINES = 100


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path) -> set[str]:
    """The mtlbench modules ``path`` imports when it is imported (function bodies aside)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mtlbench"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("mtlbench")}
    return out


def test_no_import_cycle_in_the_package():
    graph = {_module(p): _top_level_imports(p) for p in PACKAGE.rglob("*.py")}
    done: set[str] = set()

    def visit(module: str, stack: tuple[str, ...]) -> None:
        assert module not in stack, " -> ".join((*stack, module))
        if module in done:
            return
        for dep in graph.get(module, ()):
            visit(dep, (*stack, module))
        done.add(module)

    for module in graph:
        visit(module, ())


CHECK = """
import sys, tiny_benchmark
from mtlbench.cli import main
code = main({argv!r})
assert code == 0, code
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("HEAVY", heavy)
"""


@pytest.mark.parametrize("command", ["list", "report", "status"])
def test_list_report_and_status_do_not_import_submitit(tmp_path, command):
    """Only Slurm sweeps load submitit; `list` loads no plotting library either."""
    results = tmp_path / "results"
    if command != "list":
        from mtlbench.trainer import run_trial
        from mtlbench.trial import TrialConfig, resolve

        run_trial(resolve(TrialConfig("_tiny", "ls", 0, {"epochs": 1})), results, device="cpu")
    argv = {
        "list": ["list", "methods"],
        "report": ["report", str(results), "--out", str(tmp_path / "report")],
        "status": ["status", str(results)],
    }[command]
    heavy = ("submitit", "matplotlib", "seaborn") if command == "list" else ("submitit",)
    tests = Path(__file__).resolve().parent
    proc = subprocess.run(
        [sys.executable, "-c", CHECK.format(argv=argv, heavy=heavy)],
        capture_output=True,
        text=True,
        cwd=tests,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


def test_modules_and_functions_stay_small():
    for path in PACKAGE.rglob("*.py"):
        lines = path.read_text().splitlines()
        assert len(lines) <= MAX_MODULE_LINES, f"{path}: {len(lines)} lines"
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= MAX_FUNCTION_LINES, f"{path}:{node.lineno} {node.name}: {length}"
