"""The command line: bad input gives one clear line and exit code 2, never a traceback; the
README's Python code blocks run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mtlbench.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mtlbench.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    return _check_one_line(proc.returncode, proc.stderr)


def _check_one_line(status: int, stderr: str) -> str:
    assert status == 2, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("mtlbench: error:")
    return lines[0]


def _main_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The one error line of ``main(args)`` run in this process (``main`` turns every
    configuration error into that line and status 2; the console script adds nothing but
    Ctrl-C, and :func:`test_the_console_script_prints_one_line_and_exits_2` checks it once
    in a fresh process)."""
    capsys.readouterr()
    status = main(list(args))
    return _check_one_line(status, capsys.readouterr().err)


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["run", "-b", "toy", "-m", "mgdaa"], r"unknown method 'mgdaa'.*Did you mean 'mgda'"),
        (["run", "-b", "toyy", "-m", "ls"], r"unknown benchmark 'toyy'.*Did you mean 'toy'"),
        (["run", "-b", "toy", "-m", "ldc_mtl", "--set", "lamd=0.1"], r"Did you mean 'lamb'"),
        (
            ["run", "-b", "toy", "-m", "ldc_mtl", "--set", "lamb=big"],
            r"ldc_mtl.lamb: expected float",
        ),
        (["run", "-b", "toy", "-m", "ls", "--set", "epochs"], r"--set expects key=value"),
        (["sweep", "does-not-exist.yaml"], r"cannot read sweep spec"),
        (["report", "no-such-results"], r"."),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, args, pattern):
    monkeypatch.chdir(tmp_path)
    line = _main_error(capsys, *args, *(["--out", str(tmp_path)] if args[0] == "run" else []))
    assert re.search(pattern, line), line
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_the_console_script_prints_one_line_and_exits_2(tmp_path):
    """The same, end to end: a fresh interpreter, the module's entry point, the real stderr."""
    line = _one_line_error(run_cli("run", "-b", "toy", "-m", "mgdaa", "--out", str(tmp_path)))
    assert re.search(r"unknown method 'mgdaa'.*Did you mean 'mgda'", line), line


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = _main_error(capsys, "run", "-b", "toy", "-m", "ls", "--out", str(blocker / "sub"))
    assert "cannot write to" in line


def test_malformed_sweep_file(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nbenchmarks: {toy: {protocol: [}\n")
    line = _main_error(capsys, "sweep", str(spec))
    assert "malformed YAML" in line


def test_list_methods_and_benchmarks(capsys):
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    for name in ("ls", "ldc_mtl", "famo", "mgda", "db_mtl"):
        assert re.search(rf"^{name}\s+O\((1|K)\)", out, re.M), name
    assert main(["list", "benchmarks"]) == 0
    out = capsys.readouterr().out
    assert "toy" in out and "multidigits" in out


def test_run_writes_a_record_and_prints_the_result(tmp_path, capsys):
    code = main(
        [
            "run",
            "-b",
            "toy",
            "-m",
            "ldc_mtl",
            "--set",
            "epochs=2",
            "--set",
            "steps_per_epoch=20",
            "--out",
            str(tmp_path),
            "-q",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("done") and "record:" in out
    assert len(list(tmp_path.glob("*.json"))) == 1


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 3
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for block in blocks:
        proc = subprocess.run(
            [sys.executable, "-c", block],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr


def test_readme_has_exactly_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up")[1].split("##")[0]
    commands = re.findall(r"```bash\n(.*?)```", setup, re.S)[0].strip().splitlines()
    assert len(commands) == 2
    assert "pip install torch==2.13.0 -e '.[dev]'" in commands[0]
    assert commands[1].endswith("sweeps/quickstart.yaml")
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[0] in ci  # CI installs exactly as a newcomer does
    test_cmd = re.findall(r"## Test\n\n```bash\n(.*?)\n```", text, re.S)[0]
    assert test_cmd.replace(".venv/bin/python -m pytest -q", "") == ""
    assert ".venv/bin/python -m pytest -q" in ci


# -- frictions of a first session (issue 15) --------------------------------------------------


def test_list_methods_fits_the_terminal_one_sentence_each():
    from mtlbench.method import METHODS, names

    proc = subprocess.run(
        [sys.executable, "-m", "mtlbench.cli", "list", "methods"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, COLUMNS="72"),
    )
    assert proc.returncode == 0, proc.stderr
    assert max(len(line) for line in proc.stdout.splitlines()) <= 72
    assert "::" not in proc.stdout
    for name in names():
        summary = METHODS.get(name).summary
        assert summary.endswith(".") and ". " not in summary and len(summary) <= 70, name
        assert re.search(rf"^{name}\s+O\((1|K)\)", proc.stdout, re.M), name
    words = " ".join(proc.stdout.split())  # the summaries wrap, but every word is there
    assert all(" ".join(METHODS.get(n).summary.split()) in words for n in names())


def test_list_methods_long_has_papers_and_full_text(capsys):
    from mtlbench.method import METHODS

    assert main(["list", "methods", "--long"]) == 0
    out = capsys.readouterr().out
    mgda = out.split("\nmgda  (")[1].split("\nmoco  (")[0]
    assert METHODS.get("mgda").paper in mgda and "min-norm" in mgda
    assert "::\n" not in out


def test_out_under_proc_says_not_writable(capsys):
    if not Path("/proc").is_dir():
        pytest.skip("no /proc on this system")
    line = _main_error(capsys, "run", "-b", "toy", "-m", "ls", "--out", "/proc/mtlbench/x")
    assert "cannot write to /proc/mtlbench/x: /proc is not writable" in line


def test_dry_run_tells_trials_apart_in_the_order_they_run(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        f"results: {tmp_path / 'results'}\n"
        "methods: {ls: {}, ldc_mtl: {lamb: [0.01, 0.1]}}\n"
        "benchmarks:\n"
        "  toy: {grid: {start: [0, 3]}}\n"
        "  multidigits: {stl: true, methods: [ls]}\n"
    )
    monkeypatch.setattr("mtlbench.cli.EXTENSIONS", [])
    assert main(["sweep", str(spec), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("sweep s: 9 of 9 trials to run")
    assert lines[1] == "stage 1 of 2: 2 single-task references"
    assert [line.split()[1:] for line in lines[2:4]] == [
        ["multidigits", "stl", "left", "seed=0"],
        ["multidigits", "stl", "right", "seed=0"],
    ]
    assert lines[4] == "stage 2 of 2: 7 multi-task trials"
    labels = [" ".join(line.split()[1:]) for line in lines[5:]]
    assert labels[:2] == ["toy ls seed=0 start=0", "toy ls seed=0 start=3"]
    assert "toy ldc_mtl seed=0 lamb=0.1 start=3" in labels
    assert "multidigits ls seed=0" in labels
    assert len(set(labels)) == len(labels) == 7  # no two trials look alike
    assert not (tmp_path / "results").exists()


def test_run_without_stl_records_says_why_there_is_no_delta_m(tmp_path, capsys):
    args = ["--set", "epochs=1", "--set", "steps_per_epoch=5", "--out", str(tmp_path), "-q"]
    assert main(["run", "-b", "toy", "-m", "ls", *args]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("done (epoch")
    assert out[1].startswith("no Δm%: toy has no published single-task reference")
    assert f"mtlbench run -b toy -m stl --task TASK --out {tmp_path}" in out[1]
    assert out[2].startswith("record:")


def test_readme_tour_puts_mtlbench_on_the_path_first():
    text = (ROOT / "README.md").read_text()
    tour = text.split("## A short tour")[1]
    activate = tour.index("source .venv/bin/activate")
    first_bare = re.search(r"^mtlbench ", tour, re.M)
    assert first_bare is not None and activate < first_bare.start()
    setup = text.split("## Set up")[1].split("## Test")[0]
    assert "CPU time" in setup and "wall time" in setup  # what the quickstart costs
