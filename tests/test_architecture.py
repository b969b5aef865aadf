"""The shape of the ``mtlbench`` package (issues 12 and 22): no import cycle among its modules,
imports inside functions included; heavy dependencies (submitit, matplotlib, seaborn) only
where they are used; small modules and functions, in ``methods/`` and ``datasets/`` too."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tiny_benchmark  # noqa: F401  (registers the "_tiny" benchmark)

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mtlbench"
# the packages of mtlbench and where they live (pyproject.toml: [tool.setuptools.package-dir])
ROOTS = {
    "mtlbench": PACKAGE,
    "mtlbench.methods": REPO / "methods",
    "mtlbench.datasets": REPO / "datasets",
}
MAX_MODULE_LINES = 500  # docs/design.md: the limits, and the exceptions
MAX_FUNCTION_LINES = 100
# The one exception to "every import counts": an import inside a function that defers a heavy
# optional dependency says so on its line (docs/design.md, "Layers").
OPTIONAL = re.compile(r"#\s*optional heavy dependency:\s*\S")


def modules(roots: dict[str, Path]) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` file under ``roots`` (package name -> folder)."""
    out = {}
    for package, folder in roots.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            out[".".join((package, *parts))] = path
    return out


def _named(name: str, known: dict[str, Path]) -> str | None:
    """The module an import names: the longest known prefix of ``name``."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str, path: Path, known: dict[str, Path]) -> dict[str, int]:
    """Every module of ``known`` that ``module`` imports -> the line of the first such import:
    module level, inside functions and under ``TYPE_CHECKING`` alike (a hidden import is still
    an edge), relative imports resolved; imports marked :data:`OPTIONAL` left out."""
    lines = path.read_text().splitlines()
    is_package = path.name == "__init__.py"
    out: dict[str, int] = {}
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    parent = parent.rpartition(".")[0]
                base = f"{parent}.{base}" if base else parent
            names = [f"{base}.{a.name}" for a in node.names]  # a submodule, or a name in base
        else:
            continue
        text = "\n".join(lines[node.lineno - 1 : node.end_lineno])
        if OPTIONAL.search(text):
            continue
        for name in names:
            target = _named(name, known)
            if target is not None and target != module:
                out.setdefault(target, node.lineno)
    return out


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (as a closed path) through each strongly connected component of ``graph``
    that has one (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, {}))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return [_closed_path(graph, set(c)) for c in components]


def _closed_path(graph: dict[str, dict[str, int]], component: set[str]) -> list[str]:
    """A shortest cycle through the first module (by name) of a strongly connected component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph.get(node, {})):
                if child == start:
                    return [*paths[node], start]
                if child in component and child not in paths:
                    paths[child] = [*paths[node], child]
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle in {component}")  # a component of two or more has one


def import_graph(roots: dict[str, Path]) -> dict[str, dict[str, int]]:
    known = modules(roots)
    return {m: imports(m, p, known) for m, p in known.items()}


def describe(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    return (
        " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False))
        + f" -> {cycle[-1]}"
    )


def test_no_import_cycle_in_the_package():
    """Every import of every module (function-level ones and ``TYPE_CHECKING`` ones included)
    reads one way: spec -> plan -> run -> record -> report (docs/design.md, "Layers")."""
    graph = import_graph(ROOTS)
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(describe(graph, c) for c in found)


def test_the_cycle_check_sees_imports_inside_functions(tmp_path):
    """The walk finds a cycle hidden in a function body, resolves relative imports, and leaves
    out only an import marked as deferring a heavy optional dependency."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from pkg.high import g\n    return g\n")
    (pkg / "high.py").write_text("from . import low\n\n\ndef g():\n    return low\n")
    graph = import_graph({"pkg": pkg})
    assert graph["pkg.high"] == {"pkg.low": 1} and graph["pkg.low"] == {"pkg.high": 2}
    assert cycles(graph) == [["pkg.high", "pkg.low", "pkg.high"]]
    (pkg / "low.py").write_text(
        "def f():\n    from pkg.high import g  # optional heavy dependency: plotting\n"
    )
    assert cycles(import_graph({"pkg": pkg})) == []


def test_optional_imports_are_deferred():
    """The marker is for an import inside a function (a module-level import defers nothing)."""
    for path in modules(ROOTS).values():
        lines = path.read_text().splitlines()
        for node in ast.parse("\n".join(lines)).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                text = "\n".join(lines[node.lineno - 1 : node.end_lineno])
                assert not OPTIONAL.search(text), f"{path}:{node.lineno}: module-level import"


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
    for path in modules(ROOTS).values():
        lines = path.read_text().splitlines()
        assert len(lines) <= MAX_MODULE_LINES, f"{path}: {len(lines)} lines"
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= MAX_FUNCTION_LINES, f"{path}:{node.lineno} {node.name}: {length}"
