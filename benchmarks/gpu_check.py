"""The GPU check (issue 22): one command, a few minutes on one GPU, one table.

    python benchmarks/gpu_check.py                        # on a machine with a CUDA device
    python benchmarks/gpu_check.py --device cpu --quick   # its plumbing, on the CPU

Rows of the table (docs/performance.md, "The GPU check"):

* ``bench``: LS, LDC-MTL, FAMO, MGDA and UPGrad on the bench's MLP trunk at K = 2, 10 and 40
  (:func:`mtlbench.bench.run_bench`: interleaved steps, CUDA-synchronized around each): the
  median step time and the peak CUDA memory of a step, each as a ratio to LS's.
* ``celeba K=40``: the CelebA trunk at K = 40, MGDA and UPGrad with the batched Jacobian and
  with the Gramian-only path (``jacobian_mode=gramian``), each relative to LS, and the Gramian
  path relative to the batched one.
* ``smoke``: one smoke epoch (``--smoke``: one epoch of two steps, then the evaluation) of LS
  and UPGrad on every built-in benchmark, on its fixture (``mtlbench data fixture``).
* ``record``: the fields of those run records that only CUDA fills: ``timing.synchronized``
  true, ``memory.kind`` ``cuda_allocated`` and a positive ``memory.peak_bytes``.

A row's last column says ``ok`` or what failed; the exit status is 1 when a row failed. Without
a CUDA device (and without ``--device cpu``) it prints one line and exits 0, so that CI can
call it on machines without a GPU.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

METHODS = ("ls", "ldc_mtl", "famo", "mgda", "upgrad")
GRAMIAN_METHODS = ("mgda", "upgrad")
SMOKE_METHODS = ("ls", "upgrad")
PARTS = ("bench", "gramian", "smoke")
Row = tuple[str, str, str, str, str]


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} × LS"


def _finite(*values: float | None) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def _bench(workload: str, tasks: list[int], methods: list[str], reps: int, **options: Any) -> list:
    """``mtlbench bench``'s rows for ``methods`` on ``workload``, quietly, batched Jacobians."""
    from mtlbench.bench import run_bench

    return run_bench(
        workload,
        tasks,
        methods,
        reps=reps,
        warmup=max(1, reps // 4),
        sequential=False,
        progress=lambda _: None,
        **options,
    )


def bench_rows(device: str, tasks: list[int], reps: int, batch: int | None) -> list[Row]:
    """The MLP trunk at each K: step time and peak memory of each method relative to LS."""
    rows = _bench("mlp", tasks, list(METHODS), reps, device=device, batch_size=batch)
    out = []
    for r in rows:
        memory_needed = r["device"].startswith("cuda")
        ok = _finite(r["ratio_to_ls"]) and (_finite(r["peak_ratio_to_ls"]) or not memory_needed)
        why = "ok" if ok else "no finite time or (on CUDA) no peak memory"
        item = f"{r['method']} K={r['K']}"
        out.append(("bench", item, _ratio(r["ratio_to_ls"]), _ratio(r["peak_ratio_to_ls"]), why))
    return out


def gramian_rows(device: str, k: int, reps: int, batch: int) -> list[Row]:
    """The CelebA trunk at K: the Gramian-only path against the batched Jacobian."""
    rows = _bench(
        "celeba", [k], list(GRAMIAN_METHODS), reps, device=device, gramian=True, batch_size=batch
    )
    by_label = {r["method"]: r for r in rows}
    out = []
    for name in GRAMIAN_METHODS:
        batched, gram = by_label.get(name), by_label.get(f"{name}@gramian")
        if batched is None or gram is None:
            out.append((f"celeba K={k}", name, "—", "—", "missing from the bench's rows"))
            continue
        for label, r in ((name, batched), (f"{name}@gramian", gram)):
            ok = _finite(r["ratio_to_ls"])
            out.append(
                (
                    f"celeba K={k}",
                    label,
                    _ratio(r["ratio_to_ls"]),
                    _ratio(r["peak_ratio_to_ls"]),
                    "ok" if ok else "no finite time",
                )
            )
        time_ratio = gram["step_median_s"] / batched["step_median_s"]
        peak = (
            gram["peak_bytes"] / batched["peak_bytes"]
            if gram["peak_bytes"] and batched["peak_bytes"]
            else None
        )
        memory = "—" if peak is None else f"{peak:.2f} × batched"
        what, ratio = f"{name}: gramian / batched", f"{time_ratio:.2f} × batched"
        out.append((f"celeba K={k}", what, ratio, memory, "ok"))
    return out


def smoke_records(device: str, folder: Path) -> list[tuple[str, str, dict[str, Any] | str]]:
    """One smoke epoch of each :data:`SMOKE_METHODS` on every built-in benchmark, on its
    fixture: (benchmark, method, record or the error's one line)."""
    from mtlbench.benchmark import get as benchmark
    from mtlbench.benchmark import names as benchmark_names
    from mtlbench.registry import ConfigError
    from mtlbench.trainer import run_trial
    from mtlbench.trial import TrialConfig, resolve

    out: list[tuple[str, str, dict[str, Any] | str]] = []
    for name in (n for n in benchmark_names() if not n.startswith("_")):
        root: Path | None = folder / "data" / name
        try:
            benchmark(name).write_fixture(root)
        except ConfigError:  # needs no data files (toy, multidigits)
            root = None
        for method in SMOKE_METHODS:
            config = TrialConfig(
                name, method, 0, {}, data_root=None if root is None else str(root), smoke=True
            )
            try:
                record = run_trial(
                    resolve(config), folder / "results", device=device, progress=False
                )
            except Exception as error:  # noqa: BLE001 - reported as the row's result
                traceback.print_exc()  # the whole story on stderr, one line in the table
                out.append((name, method, f"{type(error).__name__}: {error}"[:100]))
                continue
            out.append((name, method, record))
    return out


def smoke_rows(records: list[tuple[str, str, dict[str, Any] | str]]) -> list[Row]:
    """A row per smoke run: its training time and peak memory, ok when it finished."""
    out = []
    for name, method, record in records:
        if isinstance(record, str):
            out.append(("smoke", f"{name} {method}", "—", "—", record))
            continue
        timing = record.get("timing") or {}
        peak = (record.get("memory") or {}).get("peak_bytes")
        train = f"{timing['train_s']:.1f} s" if timing.get("train_s") is not None else "—"
        memory = "—" if not peak else f"{peak / 2**20:.0f} MiB"
        error = (record.get("error") or {}).get("message", "")
        result = "ok" if record["status"] == "done" else f"{record['status']}: {error}"[:100]
        out.append(("smoke", f"{name} {method}", train, memory, result))
    return out


def record_rows(records: list[tuple[str, str, dict[str, Any] | str]], cuda: bool) -> list[Row]:
    """The fields only CUDA fills, checked in every finished smoke record (on the CPU: the CPU's
    values, so that the plumbing is checked too)."""
    finished = [r for _, _, r in records if not isinstance(r, str) and r["status"] == "done"]
    want_kind = "cuda_allocated" if cuda else "process_peak_rss"
    checks = {
        f"timing.synchronized is {cuda}": lambda r: (
            (r.get("timing") or {}).get("synchronized") is cuda
        ),
        f"memory.kind is {want_kind}": lambda r: (r.get("memory") or {}).get("kind") == want_kind,
        "memory.peak_bytes > 0": lambda r: ((r.get("memory") or {}).get("peak_bytes") or 0) > 0,
    }
    out = []
    for label, check in checks.items():
        bad = sum(not check(r) for r in finished)
        result = "ok" if finished and not bad else f"{bad} of {len(finished)} records fail"
        out.append(("record", label, f"{len(finished)} records", "", result))
    return out


def environment(device: str) -> str:
    import torch

    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    return (
        f"{time.strftime('%Y-%m-%d')} · {name} · torch {torch.__version__} "
        f"(CUDA {torch.version.cuda or 'none'})"
    )


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:1, or cpu")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and few steps: a check of the plumbing"
    )
    parser.add_argument(
        "--only",
        default="bench,gramian,smoke",
        help="comma-separated parts: bench, gramian, smoke (smoke includes the record fields)",
    )
    args = parser.parse_args(argv)
    unknown = {p.strip() for p in args.only.split(",")} - set(PARTS)
    if unknown:
        names, valid = ", ".join(sorted(unknown)), ", ".join(PARTS)
        parser.error(f"--only: unknown part(s) {names}; valid: {valid}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch  # after the arguments: --help answers without it

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print(f"gpu check: no CUDA device (torch {torch.__version__}); nothing to check")
        return 0
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    start = time.perf_counter()
    rows: list[Row] = []
    if "bench" in parts:
        tasks, reps, batch = ([2, 10], 3, 32) if args.quick else ([2, 10, 40], 30, None)
        rows += bench_rows(args.device, tasks, reps, batch)
    if "gramian" in parts:
        reps, batch = (1, 2) if args.quick else (10, 256)
        rows += gramian_rows(args.device, 40, reps, batch)
    if "smoke" in parts:
        with tempfile.TemporaryDirectory(prefix="mtlbench-gpu-check-") as folder:
            records = smoke_records(args.device, Path(folder))
        rows += smoke_rows(records) + record_rows(records, cuda)
    from tabulate import tabulate

    print(f"gpu check: {environment(args.device)}; {time.perf_counter() - start:.0f} s")
    print(tabulate(rows, headers=["check", "what", "time", "peak memory", "result"]))
    failed = [r for r in rows if r[4] != "ok"]
    print(f"{len(rows) - len(failed)} of {len(rows)} rows ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
