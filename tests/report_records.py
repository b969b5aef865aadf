"""Records for the report tests, built as the trainer builds them: :func:`records.new_record`
(the ``running`` record with every key), then the keys the trainer fills when a run ends
(``selection``, ``metrics``, ``delta_m``, ``curves``, ``timing``, ``memory``, ``diagnostics``,
``extra``; or ``error`` / ``diverged``), and ``status`` / ``finished_at`` last."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

import tiny_benchmark  # noqa: F401  (registers the "_tiny" benchmark: mse_a, mse_b, ref 0.5)
from mtlbench import benchmark as benchmarks
from mtlbench.records import MetricInfo, Record, metric_info, new_record, write_record
from mtlbench.registry import ConfigError

POLICIES = {
    "head_grads": "weighted",
    "update_scale": "reference",
    "clip_grad_norm": None,
    "jacobian_mode": "batched",
    "jacobian_chunk": None,
    "grad_wrt": "parameters",
    "post_step_mode": "train",
}
PROTOCOL = {
    "epochs": 3,
    "batch_size": 16,
    "lr": 0.01,
    "optimizer": "adam",
    "weight_decay": 0.0,
    "scheduler": None,
    "selection": "best_val_delta_m",
    "max_steps": None,
    "eval_every": 1,
}


def info(**higher: bool) -> list[MetricInfo]:
    """``metric_info`` of metrics named ``<task>_<what>`` (task: the name up to the first _)."""
    return [
        MetricInfo(name=n, task=n.split("_")[0], higher_is_better=h, unit="")
        for n, h in higher.items()
    ]


def _registered_info(benchmark: str, task: str | None) -> list[MetricInfo] | None:
    """What the trainer stores for a registered benchmark; None for an unknown one."""
    try:
        cls = benchmarks.get(benchmark)
    except ConfigError:
        return None
    return metric_info([m for m in cls.metrics if task is None or m.task == task])


def record(
    benchmark: str,
    method: str,
    seed: int,
    test: dict[str, float] | None = None,
    *,
    status: str = "done",
    task: str | None = None,
    hparams: dict[str, Any] | None = None,
    protocol: dict[str, Any] | None = None,
    policies: dict[str, Any] | None = None,
    step_s: float = 0.01,
    train_s: float = 1.0,
    curves: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    delta_m: dict[str, Any] | None = None,
    diverged: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    metrics_info: list[MetricInfo] | None = None,
) -> Record:
    """One record of ``benchmark`` (``metrics_info`` default: the registered benchmark's, as
    the trainer writes it; an unknown benchmark needs it given, or has none)."""
    config = {
        "benchmark": benchmark,
        "method": method,
        "hparams": hparams or {},
        "seed": seed,
        "mode": "stl" if task else "mtl",
        "task": task,
        "protocol": {**PROTOCOL, **(protocol or {})},
        "policies": {**POLICIES, **(policies or {})},
        "data_root": None,
        "device": "cpu",
    }
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    rec = new_record(
        f"{benchmark}-{method}{'-' + task if task else ''}-s{seed}-{digest}",
        config,
        sweep="test",
        environment={"python": "3.11"},
        runner={"host": "test", "pid": 1},
        started_at="2025-01-01T00:00:00+00:00",
        metric_info=metrics_info or _registered_info(benchmark, task),
    )
    n_epochs = len(next(iter((curves or {}).get("train_loss", {}).values()), [])) or 3
    rec["curves"] = curves or {"epoch": list(range(n_epochs))}
    if status == "done":
        _finish(rec, test or {}, delta_m, step_s, train_s, extra)
    elif status == "diverged":
        rec["diverged"] = diverged
        rec["error"] = {"type": "Diverged", "message": "non-finite loss", "traceback": None}
    elif status == "failed":
        rec["error"] = error
    rec["status"] = status  # type: ignore[typeddict-item]
    rec["finished_at"] = "2025-01-01T00:01:00+00:00" if status != "running" else None
    return rec


def _finish(
    rec: Record,
    test: dict[str, float],
    delta_m: dict[str, Any] | None,
    step_s: float,
    train_s: float,
    extra: dict[str, Any] | None,
) -> None:
    rec["selection"] = {
        "rule": "best_val_delta_m",
        "description": "best validation Delta m% against the reference",
        "epoch": 2,
        "score": 0.0,
        "reference_source": None,
    }
    rec["metrics"] = {"test": dict(test), "val": dict(test)}
    rec["delta_m"] = delta_m  # type: ignore[typeddict-item]
    rec["timing"] = {
        "train_s": train_s,
        "eval_s": 0.1,
        "steps": 30,
        "step_median_s": step_s,
        "step_p10_s": step_s,
        "step_p90_s": step_s,
        "synchronized": False,
    }
    rec["memory"] = {"peak_bytes": 1000, "kind": "process_peak_rss"}
    rec["diagnostics"] = {"solver_fallbacks": 0}
    rec["extra"] = extra


def write_all(folder: Path, records: list[Record]) -> Path:
    for r in records:
        write_record(folder, r)
    return folder


def toy_records() -> list[Record]:
    """The toy from its five initial points, three methods, with trajectories and extra."""
    starts = [(-8.5, 7.5), (0.0, 0.0), (9.0, 9.0), (-7.5, -0.5), (9.0, -1.0)]
    records = []
    for m_i, method in enumerate(("ls", "mgda", "famo")):
        for s, point in enumerate(starts):
            t = np.linspace(0, 1, 20)
            l1 = list(0.5 - (1.5 - 0.2 * m_i) * t - 0.05 * s * t)
            l2 = list(5.0 - 20.0 * t + s * t)
            records.append(
                record(
                    "toy",
                    method,
                    0,
                    {"L1": l1[-1], "L2": l2[-1], "x1": 0.0, "x2": -8.0},
                    protocol={"start": s, "steps_per_epoch": 100, "epochs": 20, "scale": 0.1},
                    step_s=0.003 * (1 + m_i),
                    train_s=6.0 * (1 + m_i),
                    curves={
                        "epoch": list(range(20)),
                        "train_loss": {"L1": l1, "L2": l2},
                        "weights": {
                            "L1": [1.0 - 0.01 * i for i in range(20)],
                            "L2": [1.0 + 0.01 * i for i in range(20)],
                        },
                        "val": {"L1": l1, "L2": l2, "x1": [0.0] * 20, "x2": [-8.0] * 20},
                    },
                    extra={
                        "scale": 0.1,
                        "start_index": s,
                        "start_point": list(point),
                        "final_point": [0.0, -8.0],
                        "final_losses": {"L1": l1[-1], "L2": l2[-1]},
                        "total_steps": 2000,
                        "standard_steps": 50000,
                        "shortened": True,
                    },
                )
            )
    return records


TEN_K_METHODS = ("ls", "famo", "mgda", "uw", "dwa", "rlw", "nash_mtl", "fairgrad", "ldc_mtl", "si")


def ten_thousand_records(results: Path) -> dict[str, list[float]]:
    """10,000 records under ``results``: ``_tiny`` and two unregistered benchmarks (with STL
    records) x 10 methods x about 300 seeds (every 50th run failed), the rest toy runs.
    Returns the test ``mse_a`` values of ``_tiny``'s done LS runs, to check the numbers."""
    rng = np.random.default_rng(0)
    results.mkdir(parents=True, exist_ok=True)
    n = 0
    expected: dict[str, list[float]] = {"ls_mse_a": []}

    def dump(r: Record) -> None:
        nonlocal n
        # write_record fsyncs every file (about 4 ms each here): plain writes keep this short
        (results / f"{r['trial_id']}-{n}.json").write_text(json.dumps(r))
        n += 1

    def curves(tasks: list[str], epochs: int = 20) -> dict[str, Any]:
        return {
            "epoch": list(range(epochs)),
            "train_loss": {t: rng.random(epochs).tolist() for t in tasks},
            "weights": {t: rng.random(epochs).tolist() for t in tasks},
        }

    for bench in ("_tiny", "perf_a", "perf_b"):
        tasks = ["a", "b"] if bench == "_tiny" else ["left", "right"]
        names = ["mse_a", "mse_b"] if bench == "_tiny" else ["left_acc", "right_acc"]
        declared = None if bench == "_tiny" else info(left_acc=True, right_acc=True)
        for seed in range(300 if bench == "_tiny" else 310):
            for i, method in enumerate(TEN_K_METHODS):
                status = "done" if (seed + i) % 50 else "failed"
                values = dict(zip(names, rng.random(2) + 0.1, strict=True))
                dump(
                    record(
                        bench,
                        method,
                        seed,
                        values,
                        status=status,
                        curves=curves(tasks),
                        step_s=0.01 * (1 + i / 10),
                        hparams={"lr_mult": 1.0} if seed % 2 else {},
                        error={"type": "RuntimeError", "message": "boom", "traceback": ""},
                        metrics_info=declared,
                    )
                )
                if bench == "_tiny" and method == "ls" and status == "done" and seed % 2 == 0:
                    expected["ls_mse_a"].append(float(values["mse_a"]))
        if bench != "_tiny":
            for seed in range(5):
                for task, name in zip(tasks, names, strict=True):
                    own = info(**{name: True})
                    dump(record(bench, "stl", seed, {name: 0.9}, task=task, metrics_info=own))
    toy = toy_records()
    while n < 10_000:
        r = json.loads(json.dumps(toy[n % len(toy)]))
        r["config"]["seed"] = n
        r["trial_id"] = f"toy-{n}"
        dump(r)
    return expected
