"""``mtlbench bench``: per-step time and peak memory of every method relative to LS.

Every method gets its own copy of the same model, and all of them step on the same batches,
interleaved in one process (round-robin over methods, each round starting one method later),
after warm-up, so that machine noise hits all methods alike; times are CUDA-synchronized on GPU.
Reported: the median, quartiles and minimum of the per-step time, the ratios of medians and of
minima to LS, the peak memory of a step relative to LS (on CUDA; on the CPU with ``memory``,
a process per method), the cost of the method's own computation on a fixed Jacobian
(``aggregate``, and for Gramian methods the K x K solve alone), and for O(K) methods the same
step with the ``sequential`` Jacobian (K backward passes) and the relative error between the
two updates. The CSV goes by default to
``results/bench/bench-<workload>.csv``, where ``mtlbench report results`` finds it.

Workloads: ``mlp`` (an MLP trunk with K linear heads; K up to 1,000), ``celeba`` (the CelebA
CNN trunk at 64 x 64 with K heads), ``multidigits`` (the MultiDigits model and batch, K = 2).
See docs/performance.md.
"""

from __future__ import annotations

import argparse
import copy
import csv
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mtlbench.benchmark import MultiTaskModel
from mtlbench.environment import pick_device
from mtlbench.gradients import GradientEngine, jacobian
from mtlbench.method import GradientMethod, GramianWeighting, Method, create, names
from mtlbench.registry import ConfigError, unknown
from mtlbench.step import TrainingStep


@dataclass
class Workload:
    """A model with K heads, one batch, and the per-task losses of that batch."""

    name: str
    n_tasks: int
    model: MultiTaskModel
    batch: tuple[Tensor, Tensor]
    task_losses: Callable[[list[Tensor], Any], Tensor]
    feature_dim: int


def _mse_losses(outputs: list[Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
    return ((torch.cat(outputs, dim=1) - batch[1]) ** 2).mean(0)


def _bce_losses(outputs: list[Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
    logits = torch.cat(outputs, dim=1)
    return nn.functional.binary_cross_entropy_with_logits(logits, batch[1], reduction="none").mean(
        0
    )


def mlp_workload(k: int, batch_size: int = 256, width: int = 512) -> Workload:
    """A 2-layer MLP trunk with K linear regression heads, stored as one ``Linear(width, K)``
    (the same maps as K ``Linear(width, 1)``): with K = 1,000 separate modules, Python overhead
    per head (forward calls, Adam's per-tensor loop) would dominate LS's step and dilute every
    ratio, instead of showing what the method itself adds."""
    encoder = nn.Sequential(nn.Linear(128, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
    heads = [nn.Linear(width, k)]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 128, generator=g)
    y = torch.randn(batch_size, k, generator=g)
    return Workload("mlp", k, MultiTaskModel(encoder, heads), (x, y), _mse_losses, width)


def celeba_workload(k: int, batch_size: int = 256) -> Workload:
    """FAMO's CelebA CNN trunk (protocols.md section 4.3) at 64 x 64 with K logit heads."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    encoder = nn.Sequential(
        *block(3, 64),
        nn.MaxPool2d(2),
        *block(64, 128),
        *block(128, 128),
        nn.MaxPool2d(2),
        *block(128, 256),
        *block(256, 256),
        nn.MaxPool2d(2),
        *block(256, 512),
        *block(512, 512),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(512, 512, bias=False),
        nn.BatchNorm1d(512),
        nn.ReLU(),
        nn.Linear(512, 512, bias=False),
        nn.BatchNorm1d(512),
        nn.ReLU(),
    )
    heads = [nn.Linear(512, 1) for _ in range(k)]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, 3, 64, 64, generator=g)
    y = (torch.rand(batch_size, k, generator=g) > 0.5).float()
    return Workload("celeba", k, MultiTaskModel(encoder, heads), (x, y), _bce_losses, 512)


def multidigits_workload(k: int = 2, batch_size: int = 256) -> Workload:
    from mtlbench import benchmark as benchmarks

    if k != 2:
        raise ConfigError(f"the multidigits workload has 2 tasks, not K={k}: use --tasks 2")
    cls = benchmarks.get("multidigits")
    bench = cls(cls.default_protocol().replace(batch_size=batch_size), None, 0)
    batch = next(iter(bench.batches("train", 0)))
    return Workload(
        "multidigits", 2, bench.build_model(), batch, bench.task_losses, cls.feature_dim or 64
    )


WORKLOADS: dict[str, Callable[..., Workload]] = {
    "mlp": mlp_workload,
    "celeba": celeba_workload,
    "multidigits": multidigits_workload,
}


@dataclass
class Contender:
    label: str
    method_name: str
    mode: str
    step: TrainingStep
    method: Method
    times: list[float]
    peaks: list[int]


def _make(
    workload: Workload, name: str, mode: str, device: torch.device, chunk: int | None = None
) -> Contender:
    torch.manual_seed(0)
    model = copy.deepcopy(workload.model).to(device)
    method = create(name, workload.n_tasks, feature_dim=workload.feature_dim).to(device)
    engine = GradientEngine(
        model.shared_parameters(), model.head_parameters(), mode=mode, chunk_size=chunk
    )
    params = [{"params": list(model.parameters())}, *method.parameter_groups()]
    optimizer = torch.optim.Adam(params, lr=1e-4)
    step = TrainingStep(model, method, engine, optimizer, workload.task_losses, lambda b: b[0])
    label = name if mode == "batched" else f"{name}@sequential"
    return Contender(label, name, mode, step, method, [], [])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_step(c: Contender, batch: Any, i: int, device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    c.step(batch, i, 0)
    _sync(device)
    c.times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        c.peaks.append(torch.cuda.max_memory_allocated(device))


def update_error(workload: Workload, name: str, device: torch.device) -> float | None:
    """Relative error between the batched and the sequential Jacobian's updates."""
    torch.manual_seed(0)
    method = create(name, workload.n_tasks, feature_dim=workload.feature_dim).to(device)
    if not isinstance(method, GradientMethod):
        return None
    model = copy.deepcopy(workload.model).to(device)
    batch = tuple(t.to(device) for t in workload.batch)
    updates = []
    for mode in ("batched", "sequential"):
        _, outputs = model(batch[0])
        losses = workload.task_losses(outputs, batch)
        jac = jacobian(losses, model.shared_parameters(), mode)  # type: ignore[arg-type]
        torch.manual_seed(1)
        fresh = create(name, workload.n_tasks, feature_dim=workload.feature_dim).to(device)
        updates.append(fresh.aggregate(jac, losses.detach()).update)
    a, b = updates
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def solver_time(
    workload: Workload, name: str, device: torch.device, reps: int = 5
) -> tuple[float, float | None] | None:
    """Median times of the method's own computation on a fixed Jacobian: ``aggregate`` (for
    Gramian methods: the Gramian ``J J^T``, the solve and ``w^T J``), and for Gramian methods the
    solve alone (``gramian_weights`` on the K x K float64 Gramian). None for loss weighting.

    The same method object is called ``reps + 1`` times (the first call discarded), as in
    training, where consecutive Gramians are close; a solver that warm-starts from its last
    weights may therefore look cheaper here than on a first step."""
    method = create(name, workload.n_tasks, feature_dim=workload.feature_dim).to(device)
    if not isinstance(method, GradientMethod):
        return None
    model = copy.deepcopy(workload.model).to(device)
    batch = tuple(t.to(device) for t in workload.batch)
    _, outputs = model(batch[0])
    losses = workload.task_losses(outputs, batch)
    jac = jacobian(losses, model.shared_parameters()).detach()  # type: ignore[arg-type]
    losses = losses.detach()

    def median_time(fn: Callable[[], Any]) -> float:
        times = []
        for _ in range(reps + 1):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
        return statistics.median(times[1:])

    aggregate = median_time(lambda: method.aggregate(jac, losses))
    if not isinstance(method, GramianWeighting):
        return aggregate, None
    gram = (jac @ jac.T).to("cpu", torch.float64)
    losses64 = losses.to("cpu", torch.float64)
    return aggregate, median_time(lambda: method.gramian_weights(gram, losses64))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def _rss_growth(
    workload_name: str, k: int, sizes: dict[str, int], name: str, mode: str, chunk: int | None
) -> int | None:
    """Bytes by which this (fresh) process's resident memory peaks above its level before two
    training steps; None where Linux's /proc cannot reset the peak."""
    import ctypes

    torch.set_num_threads(1)
    workload = WORKLOADS[workload_name](k, **sizes)
    contender = _make(workload, name, mode, torch.device("cpu"), chunk)
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so that RSS = live data
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current RSS
        before = _status_kib("VmRSS")
    except OSError:
        return None
    for i in range(2):
        contender.step(workload.batch, i, 0)
    return (_status_kib("VmHWM") - before) * 1024


def cpu_step_memory(
    workload_name: str, k: int, sizes: dict[str, int], name: str, mode: str, chunk: int | None
) -> int | None:
    """Extra peak memory of a step on the CPU (Linux): the peak resident memory over two steps
    above the level before them, in a fresh process per contender (glibc keeps freed memory,
    so one process's figures cannot be split between methods). Includes the optimizer state
    and the buffers a method keeps; None where /proc cannot reset the peak."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_rss_growth, workload_name, k, sizes, name, mode, chunk).result()


def run_bench(
    workload_name: str,
    tasks: Sequence[int],
    methods: Sequence[str],
    *,
    reps: int = 10,
    warmup: int = 3,
    device: str = "auto",
    sequential: bool = True,
    batch_size: int | None = None,
    jacobian_chunk: int | None = None,
    memory: bool = False,
    progress: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Bench ``methods`` (LS always first) on ``workload_name`` for each K in ``tasks``.

    Returns one row per contender and K (the columns of the CSV); ``batch_size`` None keeps the
    workload's default (256); ``jacobian_chunk`` is the batched engine's tasks per vmapped pass
    (None: all K at once). ``memory`` on the CPU: measure each contender's extra peak memory
    in a fresh process (:func:`cpu_step_memory`); on CUDA it is always measured in-process."""
    if workload_name not in WORKLOADS:
        raise unknown("workload", workload_name, WORKLOADS)
    for m in methods:
        if m not in names():
            raise unknown("method", m, names())
    if reps < 1 or warmup < 0:
        raise ConfigError(f"--reps must be >= 1 and --warmup >= 0, got {reps} and {warmup}")
    if jacobian_chunk is not None and jacobian_chunk < 1:
        raise ConfigError(f"--jacobian-chunk must be >= 1, got {jacobian_chunk}")
    sizes = {} if batch_size is None else {"batch_size": batch_size}
    dev = pick_device(device)
    methods = ["ls", *[m for m in methods if m != "ls"]]
    rows: list[dict[str, Any]] = []
    for k in tasks:
        workload = WORKLOADS[workload_name](k, **sizes)
        batch = tuple(t.to(dev) for t in workload.batch)
        contenders = []
        for name in methods:
            contenders.append(_make(workload, name, "batched", dev, jacobian_chunk))
            if sequential and contenders[-1].method.needs != "losses":
                contenders.append(_make(workload, name, "sequential", dev))
        for i in range(warmup + reps):
            # Round-robin, starting one contender later each round, so that no method always
            # runs right after the same neighbour (cache state, allocator, CPU frequency).
            shift = i % len(contenders)
            for c in contenders[shift:] + contenders[:shift]:
                _timed_step(c, batch, i, dev)
                if i < warmup:
                    c.times.clear()
                    c.peaks.clear()
        if memory and dev.type == "cpu":
            for c in contenders:
                extra = cpu_step_memory(
                    workload_name, k, sizes, c.method_name, c.mode, jacobian_chunk
                )
                c.peaks[:] = [] if extra is None else [extra]
        ls = contenders[0]
        ls_median = statistics.median(ls.times)
        ls_min = min(ls.times)
        ls_peak = max(ls.peaks) if ls.peaks else None
        for c in contenders:
            median = statistics.median(c.times)
            q = (
                statistics.quantiles(c.times, n=4, method="inclusive")
                if len(c.times) > 1
                else [median] * 3
            )
            peak = max(c.peaks) if c.peaks else None
            batched = next(x for x in contenders if x.method_name == c.method_name)
            timed = solver_time(workload, c.method_name, dev) if c.mode == "batched" else None
            solve, weights = timed if timed is not None else (None, None)
            rows.append(
                {
                    "workload": workload_name,
                    "K": k,
                    "method": c.label,
                    "mode": c.mode,
                    "cost": type(c.method).cost,
                    "device": str(dev),
                    "batch_size": int(workload.batch[0].shape[0]),
                    "threads": torch.get_num_threads(),
                    "reps": reps,
                    "step_median_s": median,
                    "step_p25_s": q[0],
                    "step_p75_s": q[2],
                    "ratio_to_ls": median / ls_median,
                    "step_min_s": min(c.times),
                    "ratio_min_to_ls": min(c.times) / ls_min,
                    "speedup_vs_sequential": None,
                    "peak_bytes": peak,
                    "peak_ratio_to_ls": (peak / ls_peak) if peak and ls_peak else None,
                    "solver_s": solve,
                    "solver_share": (solve / median) if solve is not None else None,
                    "weights_s": weights,
                    "weights_share": (weights / median) if weights is not None else None,
                    "update_rel_err": None,
                }
            )
            if c.mode == "sequential":
                batched_row = next(r for r in rows if r["method"] == batched.label and r["K"] == k)
                batched_row["speedup_vs_sequential"] = median / batched_row["step_median_s"]
                batched_row["update_rel_err"] = update_error(workload, c.method_name, dev)
        progress(f"{workload_name} K={k}: done ({len(contenders)} contenders)")
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    def f(x: Any, spec: str) -> str:
        return "—" if x is None else format(x, spec)

    table = [
        (
            r["workload"],
            r["K"],
            r["method"],
            r["cost"],
            f(r["step_median_s"] * 1e3, ".2f"),
            f(r["ratio_to_ls"], ".3f"),
            f(r["ratio_min_to_ls"], ".3f"),
            f(r["speedup_vs_sequential"], ".2f"),
            f(r["solver_share"], ".1%"),
            f(r["weights_share"], ".1%"),
            f(r["peak_ratio_to_ls"], ".2f"),
            f(r["update_rel_err"], ".1e"),
        )
        for r in rows
    ]
    return tabulate(
        table,
        headers=[
            "workload",
            "K",
            "method",
            "cost",
            "ms/step",
            "× LS",
            "× LS (min)",
            "batched speed-up",
            "solver share",
            "solve (G) share",
            "peak mem × LS",
            "batched vs seq err",
        ],
    )


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def default_out(workload: str) -> Path:
    """Where ``mtlbench bench`` writes by default: ``results/bench/bench-<workload>.csv``, one file
    per workload, so that the runs of several workloads sit side by side and ``mtlbench report
    results`` (which reads every ``bench*.csv`` under the results folder) draws all of them."""
    return Path("results") / "bench" / f"bench-{workload}.csv"


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        tasks = (
            [int(t) for t in args.tasks.split(",")]
            if args.tasks
            else ([2] if args.workload == "multidigits" else [2, 4, 10, 20, 40])
        )
    except ValueError:
        raise ConfigError(f"--tasks expects comma-separated integers, got {args.tasks!r}") from None
    if any(k < 1 for k in tasks):
        raise ConfigError(f"--tasks must be positive, got {args.tasks!r}")
    if args.methods:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    else:
        methods = names()
    if args.cost:
        import mtlbench.methods  # noqa: F401  (registers the built-in methods)
        from mtlbench.method import METHODS

        methods = [m for m in methods if m in names() and METHODS.get(m).cost == args.cost]
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run_bench(
        args.workload,
        tasks,
        methods,
        reps=args.reps,
        warmup=args.warmup,
        device=args.device,
        sequential=not args.no_sequential,
        batch_size=args.batch_size,
        jacobian_chunk=args.jacobian_chunk,
        memory=args.memory,
    )
    print(format_table(rows))
    out = Path(args.out) if args.out else default_out(args.workload)
    write_csv(rows, out)
    print(f"saved: {out}")
    return 0


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="per-step time and memory of methods relative to LS")
    p.add_argument("--workload", default="mlp", help="mlp, celeba or multidigits")
    p.add_argument("--tasks", help="comma-separated K values (default 2,4,10,20,40)")
    p.add_argument("--methods", help="comma-separated methods (default: all; LS is always run)")
    p.add_argument("--cost", choices=["O(1)", "O(K)"], help="only the methods of this cost")
    p.add_argument("--reps", type=int, default=10, help="timed steps per method (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--batch-size", type=int, help="batch size (default 256)")
    p.add_argument(
        "--jacobian-chunk", type=int, help="tasks per vmapped backward (default: all K at once)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--memory",
        action="store_true",
        help="on the CPU, also measure each method's extra peak memory (a process each)",
    )
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--no-sequential", action="store_true", help="skip the K-backward comparison")
    p.add_argument(
        "--out", help="CSV path (default results/bench/bench-<workload>.csv, read by the report)"
    )
    p.set_defaults(handler=cmd_bench)


__all__ = ["ConfigError", "add_command", "run_bench"]
