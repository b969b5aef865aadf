"""benchmarks/gpu_check.py (issue 22, "A GPU check"): without a CUDA device it says so in one
line and exits 0, so that CI can call it; its record check accepts exactly what a CUDA run
writes. The CUDA run itself needs a GPU (docs/performance.md, "The GPU check")."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_prints_one_line_and_exits_0():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no device, even on a machine with one
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    assert lines[0].startswith("gpu check: no CUDA device"), lines[0]


def _record(synchronized: bool, kind: str, peak: int | None) -> dict:
    return {
        "status": "done",
        "timing": {"train_s": 1.5, "synchronized": synchronized},
        "memory": {"kind": kind, "peak_bytes": peak},
    }


def test_the_record_check_wants_the_fields_only_cuda_fills():
    gpu_check = _script()
    cuda = _record(True, "cuda_allocated", 2**20)
    rows = gpu_check.record_rows([("toy", "ls", cuda), ("yeast", "ls", cuda)], cuda=True)
    assert [r[4] for r in rows] == ["ok", "ok", "ok"]
    cpu_like = _record(False, "process_peak_rss", 0)
    rows = gpu_check.record_rows([("toy", "ls", cuda), ("yeast", "ls", cpu_like)], cuda=True)
    assert [r[4] for r in rows] == ["1 of 2 records fail"] * 3
    rows = gpu_check.record_rows([("toy", "ls", "RuntimeError: CUDA error")], cuda=True)
    assert all(r[4] == "0 of 0 records fail" for r in rows)  # no finished record proves nothing


def test_a_failed_smoke_run_is_a_failed_row():
    gpu_check = _script()
    failed = {**_record(True, "cuda_allocated", 1), "status": "failed"}
    failed["error"] = {"message": "out of memory"}
    rows = gpu_check.smoke_rows(
        [("toy", "ls", _record(True, "cuda_allocated", 3 * 2**20)), ("celeba", "upgrad", failed)]
    )
    assert rows[0] == ("smoke", "toy ls", "1.5 s", "3 MiB", "ok")
    assert rows[1][4] == "failed: out of memory"
