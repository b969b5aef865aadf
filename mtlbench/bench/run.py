"""One bench run: every contender steps on the same batch, interleaved round-robin, and the
results become one row per contender and K (the columns of the CSV)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch

from mtlbench.bench.measure import (
    Contender,
    cpu_step_memory,
    make_contender,
    solver_time,
    timed_step,
    update_error,
)
from mtlbench.bench.peers import peer_modes, require, update_difference
from mtlbench.bench.spec import Spec
from mtlbench.bench.workloads import WORKLOADS, Workload
from mtlbench.environment import pick_device
from mtlbench.method import METHODS, GramianWeighting, names
from mtlbench.plugins import Plugin, active, describe, load, owner, provenance
from mtlbench.registry import ConfigError, unknown


def contender_specs(
    methods: Sequence[str],
    *,
    sequential: bool,
    gramian: bool,
    peers: Sequence[str],
    chunk: int | None,
    next_step: bool = False,
) -> list[Spec]:
    """LS first, then per method: mtlbench's batched step, its sequential and Gramian-only
    variants where asked and where they apply, and the peers' steps for the same method."""
    specs = []
    for name in ["ls", *[m for m in methods if m != "ls"]]:
        cls = METHODS.get(name)
        specs.append(Spec(name, "batched", chunk))
        if sequential and cls.needs != "losses":
            specs.append(Spec(name, "sequential"))
        if gramian and issubclass(cls, GramianWeighting):
            specs.append(Spec(name, "gramian"))
        if next_step and cls.post_step_losses:
            specs.append(Spec(name, "next_step"))
        for peer in peers:
            specs += [Spec(name, mode, None, peer) for mode in peer_modes(peer, name)]
    return specs


def interleave(
    contenders: list[Contender], batch: Any, reps: int, warmup: int, device: torch.device
) -> None:
    """``warmup + reps`` rounds over all contenders; the warm-up rounds are dropped."""
    for i in range(warmup + reps):
        # Round-robin, starting one contender later each round, so that no method always
        # runs right after the same neighbour (cache state, allocator, CPU frequency).
        shift = i % len(contenders)
        for c in contenders[shift:] + contenders[:shift]:
            timed_step(c, batch, i, device)
            if i < warmup:
                c.times.clear()
                c.peaks.clear()


def _row(workload: Workload, c: Contender, ls: Contender, device: torch.device) -> dict[str, Any]:
    median = statistics.median(c.times)
    q = statistics.quantiles(c.times, n=4, method="inclusive") if len(c.times) > 1 else [median] * 3
    peak = max(c.peaks) if c.peaks else None
    ls_peak = max(ls.peaks) if ls.peaks else None
    own = c.spec.peer is None and c.mode == "batched"
    timed = solver_time(workload, c.method_name, device) if own else None
    solve, weights = timed if timed is not None else (None, None)
    return {
        "workload": workload.name,
        "K": workload.n_tasks,
        "method": c.label,
        "mode": c.mode,
        "cost": type(c.method).cost,
        "device": str(device),
        "batch_size": int(workload.batch[0].shape[0]),
        "threads": torch.get_num_threads(),
        "reps": len(c.times),
        "step_median_s": median,
        "step_p25_s": q[0],
        "step_p75_s": q[2],
        "ratio_to_ls": median / statistics.median(ls.times),
        "step_min_s": min(c.times),
        "ratio_min_to_ls": min(c.times) / min(ls.times),
        "speedup_vs_sequential": None,
        "peak_bytes": peak,
        "peak_ratio_to_ls": (peak / ls_peak) if peak and ls_peak else None,
        "solver_s": solve,
        "solver_share": (solve / median) if solve is not None else None,
        "weights_s": weights,
        "weights_share": (weights / median) if weights is not None else None,
        "update_rel_err": None,
        "peer": c.spec.peer,
        "ratio_to_peer": None,
        "peer_update_rel_diff": None,
    }


def _compare(
    rows: list[dict[str, Any]],
    contenders: list[Contender],
    workload: Workload,
    device: torch.device,
) -> None:
    """Fill the columns that relate two contenders of one method: the batched speed-up over
    the sequential Jacobian and their update error; the ratio to the peer's Jacobian step
    (``mtl_backward``) and the relative difference of the peer's first update from ours."""
    by_label = {r["method"]: r for r in rows}
    for c in contenders:
        row = by_label[c.label]
        batched = by_label[c.method_name]
        if c.spec.peer is None and c.mode == "sequential":
            batched["speedup_vs_sequential"] = row["step_median_s"] / batched["step_median_s"]
            batched["update_rel_err"] = update_error(workload, c.method_name, device)
        if c.spec.peer is not None:
            row["peer_update_rel_diff"] = update_difference(workload, c.spec, device)
        peer = by_label.get(Spec(c.method_name, "mtl_backward", None, "torchjd").label)
        if peer is not None:
            row["ratio_to_peer"] = row["step_median_s"] / peer["step_median_s"]


def _check(
    workload_name: str, methods: Sequence[str], reps: int, warmup: int, chunk: int | None
) -> None:
    if workload_name not in WORKLOADS:
        raise unknown("workload", workload_name, WORKLOADS)
    for m in methods:
        if m not in names():
            raise unknown("method", m, names())
    if reps < 1 or warmup < 0:
        raise ConfigError(f"--reps must be >= 1 and --warmup >= 0, got {reps} and {warmup}")
    if chunk is not None and chunk < 1:
        raise ConfigError(f"--jacobian-chunk must be >= 1, got {chunk}")


def _plugin(method: str, given: Sequence[Plugin]) -> str | None:
    """The plug-in whose code defines ``method`` (``module (dist version, sha256 ...)``)."""
    found = owner(METHODS.get(method).__module__, active(given))
    return describe(provenance([found])[0]) if found is not None else None


def run_bench(
    workload_name: str,
    tasks: Sequence[int],
    methods: Sequence[str],
    *,
    reps: int = 10,
    warmup: int = 3,
    device: str = "auto",
    sequential: bool = True,
    gramian: bool = False,
    next_step: bool = False,
    peers: Sequence[str] = (),
    batch_size: int | None = None,
    jacobian_chunk: int | None = None,
    memory: bool = False,
    progress: Callable[[str], None] = print,
    plugins: Sequence[Plugin] = (),
) -> list[dict[str, Any]]:
    """Bench ``methods`` (LS always first) on ``workload_name`` for each K in ``tasks``.

    Returns one row per contender and K (the columns of the CSV); ``batch_size`` None keeps the
    workload's default (256); ``jacobian_chunk`` is the batched engine's tasks per vmapped pass
    (None: all K at once). ``gramian`` adds each Gramian method's Gramian-only engine path
    (``jacobian_mode=gramian``); ``next_step`` each post-step-loss method (FAMO) fed the next
    step's losses instead of a post-step forward (``post_step_mode=next_step``); ``peers``
    (``"torchjd"``) adds that library's steps for the methods it shares
    (:mod:`mtlbench.bench.peers`). ``memory`` on the CPU: measure each contender's extra peak
    memory in a fresh process (:func:`cpu_step_memory`); on CUDA it is always measured
    in-process. ``plugins``: the given plug-ins (imported, also in the memory processes); each
    row's ``plugin`` names the one whose method it is (module, version, digest)."""
    load(plugins)
    _check(workload_name, methods, reps, warmup, jacobian_chunk)
    if peers:
        for peer in peers:
            require(peer)
    sizes = {} if batch_size is None else {"batch_size": batch_size}
    dev = pick_device(device)
    specs = contender_specs(
        methods,
        sequential=sequential,
        gramian=gramian,
        peers=peers,
        chunk=jacobian_chunk,
        next_step=next_step,
    )
    rows: list[dict[str, Any]] = []
    for k in tasks:
        workload = WORKLOADS[workload_name](k, **sizes)
        batch = tuple(t.to(dev) for t in workload.batch)
        contenders = [make_contender(workload, s, dev) for s in specs]
        interleave(contenders, batch, reps, warmup, dev)
        if memory and dev.type == "cpu":
            for c in contenders:
                extra = cpu_step_memory(workload_name, k, sizes, c.spec, tuple(plugins))
                c.peaks[:] = [] if extra is None else [extra]
        block = [_row(workload, c, contenders[0], dev) for c in contenders]
        for row, c in zip(block, contenders, strict=True):
            row["plugin"] = _plugin(c.spec.method, plugins)
        _compare(block, contenders, workload, dev)
        rows += block
        progress(f"{workload_name} K={k}: done ({len(contenders)} contenders)")
    return rows
