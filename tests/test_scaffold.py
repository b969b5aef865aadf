"""``mtlbench new method|benchmark NAME`` (issue 19, item 5): the package it writes, installed
with ``pip install -e`` into a temporary folder (never into the venv), works at once: its name
is listed, the conformance kit passes, a run records it, and its own tests pass; an edit of the
installed source takes effect without reinstalling. Bad names and folders are one line, exit 2,
nothing written."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mtlbench.cli import main
from mtlbench.scaffold import TEMPLATES, WIDTH, class_name, reflow

ROOT = Path(__file__).resolve().parents[1]

# A fresh Python that sees the editable install: its .pth files run through site.addsitedir,
# exactly as in a site-packages folder (PYTHONPATH alone would skip them).
PRELUDE = "import site, sys; site.addsitedir(sys.argv.pop(1)); "
CLI = PRELUDE + "from mtlbench.cli import console; console()"
PYTEST = PRELUDE + "import pytest; sys.exit(pytest.main(sys.argv[1:]))"


def _install_editable(package: Path, target: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--no-cache-dir", "--disable-pip-version-check", "--target", str(target),
         "-e", str(package)],
        check=True,
    )  # fmt: skip
    return target


def _python(code: str, site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, str(site), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "MTLBENCH_CACHE": str(cwd / "cache")},
        timeout=900,  # a guard against a hang only (a loaded machine takes a minute)
    )


def _new(kind: str, name: str, folder: Path) -> Path:
    assert main(["new", kind, name, "--dir", str(folder)]) == 0
    return folder


@pytest.mark.slow
def test_a_new_method_installed_editable_works_at_once(tmp_path, capsys):
    package = _new("method", "scaffolded_ratio", tmp_path / "pkg")
    assert "pip install -e" in capsys.readouterr().out
    assert sorted(str(p.relative_to(package)) for p in package.rglob("*") if p.is_file()) == [
        "README.md",
        "mtlbench_scaffolded_ratio/__init__.py",
        "mtlbench_scaffolded_ratio/scaffolded_ratio.py",
        "pyproject.toml",
        "tests/test_scaffolded_ratio.py",
    ]
    site = _install_editable(package, tmp_path / "site")

    listed = _python(CLI, site, "list", "methods", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "scaffolded_ratio" in listed.stdout

    checked = _python(CLI, site, "check", "method", "scaffolded_ratio", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "method scaffolded_ratio: conforms" in checked.stdout
    assert "mtlbench-scaffolded-ratio 0.1.0" in checked.stdout  # the plug-in line

    run = _python(
        CLI, site, "run", "-b", "multidigits", "-m", "scaffolded_ratio", "--smoke", "-q",
        "--out", str(tmp_path / "results"), cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    (record_path,) = (tmp_path / "results").glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "done"
    (plugin,) = [p for p in record["plugins"] if p["module"].startswith("mtlbench_scaffolded")]
    assert (plugin["distribution"], plugin["version"]) == ("mtlbench-scaffolded-ratio", "0.1.0")

    tests = _python(PYTEST, site, "-q", "-p", "no:cacheprovider", str(package), cwd=tmp_path)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout

    # editable: the installed method is the folder's source, read afresh by the next command
    module = package / "mtlbench_scaffolded_ratio" / "scaffolded_ratio.py"
    source = module.read_text()
    update = "weights = ((current / self.first_losses) ** self.alpha).to(losses)"
    assert update in source
    module.write_text(source.replace(update, update + ' * float("nan")'))
    broken = _python(CLI, site, "check", "method", "scaffolded_ratio", cwd=tmp_path)
    assert broken.returncode == 1 and "problem(s)" in broken.stdout


@pytest.mark.slow
def test_a_new_benchmark_installed_editable_works_at_once(tmp_path):
    package = _new("benchmark", "scaffolded_data", tmp_path / "pkg")
    site = _install_editable(package, tmp_path / "site")

    listed = _python(CLI, site, "list", "benchmarks", cwd=tmp_path)
    assert listed.returncode == 0 and "scaffolded_data" in listed.stdout, listed.stderr

    checked = _python(CLI, site, "check", "benchmark", "scaffolded_data", "--fixture", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "benchmark scaffolded_data: conforms" in checked.stdout
    assert "a sweep adds `stl: true`" in checked.stdout  # no published reference: named

    data = tmp_path / "empty-data"
    missing = _python(
        CLI, site, "run", "-b", "scaffolded_data", "-m", "ls", "--smoke", "-q",
        "--data-root", str(data), "--out", str(tmp_path / "results"), cwd=tmp_path,
    )  # fmt: skip
    assert missing.returncode != 0
    assert f"{data / 'scaffolded_data.npz'} is missing" in missing.stdout + missing.stderr

    tests = _python(PYTEST, site, "-q", "-p", "no:cacheprovider", str(package), cwd=tmp_path)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "3 passed" in tests.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["new", "method", "ls"], "the method name 'ls' is taken"),
        (["new", "benchmark", "multidigits"], "the benchmark name 'multidigits' is taken"),
        (["new", "method", "My-Method"], "is not a method name"),
        (["new", "method", "2fast"], "is not a method name"),
    ],
)
def test_a_bad_name_is_one_line_and_nothing_is_written(argv, message, tmp_path, capsys):
    assert main([*argv, "--dir", str(tmp_path / "pkg")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "pkg").exists()


def test_a_used_folder_or_mtlbench_own_tree_is_refused(tmp_path, capsys):
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    assert main(["new", "method", "fresh_name", "--dir", str(used)]) == 2
    assert "is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in used.iterdir()] == ["notes.txt"]

    inside = ROOT / "build" / "scaffold-refused"
    assert main(["new", "method", "fresh_name", "--dir", str(inside)]) == 2
    assert "inside mtlbench's own source tree" in capsys.readouterr().err
    assert not inside.exists()


def test_an_empty_folder_is_used(tmp_path):
    (tmp_path / "pkg").mkdir()
    assert main(["new", "method", "fresh_name", "--dir", str(tmp_path / "pkg")]) == 0
    assert (tmp_path / "pkg" / "mtlbench_fresh_name" / "fresh_name.py").is_file()


def test_class_names_never_shadow_what_the_module_imports():
    assert class_name("my_method", "method") == "MyMethod"
    assert class_name("objective", "method") == "ObjectiveMethod"  # imports Objective
    assert class_name("benchmark", "benchmark") == "BenchmarkBenchmark"
    assert class_name("sines", "benchmark") == "Sines"


@pytest.mark.parametrize("kind", ["method", "benchmark"])
def test_a_long_name_keeps_the_lines_within_100_columns(kind, tmp_path):
    """A name of 44-47 characters lengthens every line it lands on; the prose is re-wrapped
    and the code is written so that the name sits alone. Left over 100 columns: only what
    cannot be broken (the import of the module, the TOML entry point, a single dotted path)."""
    name = f"a_rather_long_{kind}_name_from_a_real_lab_v2"
    package = _new(kind, name, tmp_path / "pkg")
    for path in sorted(package.rglob("*")):
        if path.suffix not in {".py", ".toml"}:
            continue
        text = path.read_text()
        if path.suffix == ".py":
            ast.parse(text)  # still Python
        for line in text.splitlines():
            if len(line) > WIDTH:
                unbreakable = (
                    line.startswith("import ")
                    or line.startswith(f"{name} = ")
                    or " " not in line.strip()
                )
                assert unbreakable, f"{path.name}: {line!r}"


def test_reflow_rewraps_only_paragraphs_with_a_long_line():
    short = "# one two\n# three\nx = 1  # a code line is never touched, however long it is\n"
    assert reflow(short, width=20) == (
        "# one two\n# three\nx = 1  # a code line is never touched, however long it is\n"
    )
    literal = "# see ``a b c`` here\n"
    assert reflow(literal, width=12) == "# see\n# ``a b c``\n# here\n"  # the span stays whole
    long = '"""one two three four five six\nseven eight.\n\n    literal block stays\n"""\n'
    assert reflow(long, width=16) == (
        '"""one two three\nfour five six\nseven eight.\n\n    literal block stays\n"""\n'
    )


def test_templates_render_unchanged_for_a_short_name():
    """The templates are written to 100 columns: for a short name, reflow changes nothing."""
    for template in sorted(TEMPLATES.rglob("*.tmpl")):
        if template.name.endswith(".md.tmpl"):
            continue  # Markdown is not re-wrapped (a long line renders the same)
        text = template.read_text().replace("{{package}}", "mtlbench_mine")
        text = text.replace("{{name}}", "mine")
        assert reflow(text) == text, template.name
