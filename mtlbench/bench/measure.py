"""The bench's measurements: contenders (a method under one engine mode, or a peer library's
step for it), timed steps, the update error between Jacobian modes, the cost of a method's own
computation, and the extra peak memory of a step on the CPU."""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from mtlbench.bench.peers import peer_step
from mtlbench.bench.spec import Spec
from mtlbench.bench.workloads import WORKLOADS, Workload
from mtlbench.environment import synchronize
from mtlbench.gradients import GradientEngine, jacobian
from mtlbench.method import GradientMethod, GramianWeighting, Method
from mtlbench.plugins import Plugin, load
from mtlbench.step import TrainingStep


@dataclass
class Contender:
    spec: Spec
    step: Callable[[Any, int, int], Any]
    method: Method
    times: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def method_name(self) -> str:
        return self.spec.method

    @property
    def mode(self) -> str:
        return self.spec.mode


def make_contender(workload: Workload, spec: Spec, device: torch.device) -> Contender:
    """A fresh copy of the workload's model (seeded), its method and an Adam at lr 1e-4, driven
    by mtlbench's :class:`~mtlbench.step.TrainingStep` or by the peer's step."""
    torch.manual_seed(0)
    model = copy.deepcopy(workload.model).to(device)
    method = workload.method(spec.method).to(device)
    if spec.peer is not None:
        return Contender(spec, peer_step(workload, model, spec), method)
    mode = "batched" if spec.mode == "next_step" else spec.mode
    engine = GradientEngine(
        model.shared_parameters(),
        model.head_parameters(),
        mode=mode,  # type: ignore[arg-type]
        chunk_size=spec.chunk,
    )
    params = [{"params": list(model.parameters())}, *method.parameter_groups()]
    optimizer = torch.optim.Adam(params, lr=1e-4)
    step = TrainingStep(
        model,
        method,
        engine,
        optimizer,
        workload.task_losses,
        lambda b: b[0],
        post_step_next=spec.mode == "next_step",
    )
    return Contender(spec, step, method)


def timed_step(c: Contender, batch: Any, i: int, device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    t0 = time.perf_counter()
    c.step(batch, i, 0)
    synchronize(device)
    c.times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        c.peaks.append(torch.cuda.max_memory_allocated(device))


def update_error(workload: Workload, name: str, device: torch.device) -> float | None:
    """Relative error between the batched and the sequential Jacobian's updates."""
    torch.manual_seed(0)
    method = workload.method(name).to(device)
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
        fresh = workload.method(name).to(device)
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
    method = workload.method(name).to(device)
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
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
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
    workload_name: str, k: int, sizes: dict[str, int], spec: Spec, plugins: tuple[Plugin, ...]
) -> int | None:
    """Bytes by which this (fresh) process's resident memory peaks above its level before two
    training steps (``plugins`` imported first); None where /proc cannot reset the peak."""
    import ctypes

    load(plugins)
    torch.set_num_threads(1)
    workload = WORKLOADS[workload_name](k, **sizes)
    contender = make_contender(workload, spec, torch.device("cpu"))
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
    workload_name: str, k: int, sizes: dict[str, int], spec: Spec, plugins: tuple[Plugin, ...] = ()
) -> int | None:
    """Extra peak memory of a step on the CPU (Linux): the peak resident memory over two steps
    above the level before them, in a fresh process per contender (glibc keeps freed memory,
    so one process's figures cannot be split between methods). Includes the optimizer state
    and the buffers a method keeps; None where /proc cannot reset the peak."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_rss_growth, workload_name, k, sizes, spec, plugins).result()
