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
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("mtlbench: error:")
    return lines[0]


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
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, pattern):
    line = _one_line_error(
        run_cli(*args, "--out", str(tmp_path)) if args[0] == "run" else run_cli(*args, cwd=tmp_path)
    )
    assert re.search(pattern, line), line


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = _one_line_error(run_cli("run", "-b", "toy", "-m", "ls", "--out", str(blocker / "sub")))
    assert "cannot write to" in line


def test_malformed_sweep_file(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nbenchmarks: {toy: {protocol: [}\n")
    proc = run_cli("sweep", str(spec), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "malformed YAML" in proc.stderr


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
