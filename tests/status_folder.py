"""A results folder of many generated records, for the ``mtlbench status`` tests at scale.

Built with the records API (:func:`mtlbench.records.new_record`, :func:`record_path`): the
statuses cycle through done, failed and diverged over a grid of benchmarks x methods x seeds,
so every count of the summary is known from the arguments alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mtlbench.records import new_record, record_path

BENCHMARKS = ("toy", "multidigits", "celeba", "nyuv2")
METHODS = ("ls", "mgda", "famo", "ldc_mtl", "upgrad")
FINAL = ("done", "done", "done", "failed", "diverged")  # by seed % 5


def config(benchmark: str, method: str, seed: int) -> dict[str, Any]:
    return {
        "benchmark": benchmark,
        "method": method,
        "seed": seed,
        "mode": "mtl",
        "task": None,
        "hparams": {"lr": 0.001},
        "protocol": {"epochs": 10},
        "policies": {},
        "data_root": None,
        "device": "cpu",
    }


def trial_id(benchmark: str, method: str, seed: int) -> str:
    return f"{benchmark}-{method}-s{seed}-{seed:012x}"


def status_of(seed: int) -> str:
    return FINAL[seed % len(FINAL)]


def make_folder(results: Path, n: int) -> dict[tuple[str, str], dict[str, int]]:
    """``n`` records in ``results`` (n a multiple of 20: every benchmark x method gets n/20
    seeds); returns the expected counts by (benchmark, method) and status."""
    per_cell = n // (len(BENCHMARKS) * len(METHODS))
    assert per_cell * len(BENCHMARKS) * len(METHODS) == n
    results.mkdir(parents=True, exist_ok=True)
    expected: dict[tuple[str, str], dict[str, int]] = {}
    for benchmark in BENCHMARKS:
        for method in METHODS:
            cell = expected.setdefault((benchmark, method), {})
            for seed in range(per_cell):
                tid = trial_id(benchmark, method, seed)
                record = new_record(
                    tid,
                    config(benchmark, method, seed),
                    sweep="scale",
                    environment={},
                    runner={"host": "elsewhere.invalid", "pid": 1},
                    started_at="2026-01-01T00:00:00+00:00",
                )
                status = status_of(seed)
                record["status"] = status  # type: ignore[typeddict-item]
                if status == "done":
                    record["delta_m"] = {"metric_avg": 1.0}  # type: ignore[typeddict-item]
                    record["selection"] = {"epoch": 9}  # type: ignore[typeddict-item]
                elif status == "failed":
                    record["error"] = {"type": "RuntimeError", "message": "boom", "traceback": ""}
                else:
                    record["diverged"] = {"step": 3}  # type: ignore[typeddict-item]
                # not write_record: its fsync per file would make 10,000 records take a minute
                record_path(results, tid).write_text(json.dumps(record))
                cell[status] = cell.get(status, 0) + 1
    return expected
