"""Runs one trial to a record: :func:`build_run` sets it up, :func:`fit` trains and evaluates,
:func:`mtlbench.selection.select_epoch` picks the reported evaluation, :func:`run_trial` ties
them together and writes the record.

The trainer knows no method and no benchmark by name: the method declares what it needs
(``needs``, ``uses_features``, ``post_step_losses``) and :class:`GradientEngine` provides it;
the benchmark provides data, model, losses, metrics and its valid domain through its interface.

A trial ends ``done``, ``failed`` (an exception, with the traceback) or ``diverged`` (a
non-finite loss or metric, or a model that left the benchmark's valid domain, with the epoch
and step). It never raises for a failure inside training, so a sweep goes on.
"""

from __future__ import annotations

import math
import os
import socket
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from mtlbench import benchmark as benchmarks
from mtlbench.benchmark import Benchmark, Metric, Reference
from mtlbench.checkpoint import Checkpoint, TrainState
from mtlbench.environment import describe, pick_device, seed_everything, synchronize
from mtlbench.gradients import GradientEngine
from mtlbench.method import Method
from mtlbench.method import create as create_method
from mtlbench.metrics import delta_m_both
from mtlbench.plugins import Plugin, active, load, provenance
from mtlbench.records import (
    DeltaM,
    Record,
    Timing,
    convergence,
    metric_info,
    new_record,
    read_record,
    record_path,
    write_record,
)
from mtlbench.references import reference_for
from mtlbench.selection import select_epoch, selection_score
from mtlbench.step import Diverged, TrainingStep
from mtlbench.trial import ResolvedTrial


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def build_optimizer(
    protocol: benchmarks.Protocol, model: torch.nn.Module, groups: list[dict[str, Any]]
) -> torch.optim.Optimizer:
    """The protocol's optimizer over the model's trainable parameters plus the method's own
    parameter groups (:meth:`Method.parameter_groups`)."""
    params = [{"params": [p for p in model.parameters() if p.requires_grad]}, *groups]
    if protocol.optimizer == "adam":
        return torch.optim.Adam(params, lr=protocol.lr, weight_decay=protocol.weight_decay)
    return torch.optim.SGD(params, lr=protocol.lr, weight_decay=protocol.weight_decay, momentum=0.9)


def build_scheduler(spec: str | None, optimizer: torch.optim.Optimizer) -> Any:
    """``step:STEP:GAMMA`` (StepLR per epoch) or ``plateau:FACTOR:PATIENCE:MIN_LR``."""
    if not spec:
        return None
    kind, *args = spec.split(":")
    try:
        if kind == "step":
            return torch.optim.lr_scheduler.StepLR(optimizer, int(args[0]), float(args[1]))
        if kind == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode="min",
                factor=float(args[0]),
                patience=int(args[1]),
                min_lr=float(args[2]),
            )
    except (IndexError, ValueError):
        pass
    from mtlbench.registry import ConfigError

    raise ConfigError(
        f"scheduler {spec!r} not understood: use step:STEP:GAMMA or plateau:FACTOR:PATIENCE:MIN_LR"
    )


@dataclass
class Run:
    """Everything one trial trains with, built from its resolved config by :func:`build_run`."""

    resolved: ResolvedTrial
    device: torch.device
    bench: Benchmark
    model: torch.nn.Module
    method: Method
    engine: GradientEngine
    optimizer: torch.optim.Optimizer
    scheduler: Any
    reference: Reference | None  # for validation-based selection
    eval_metrics: list[Metric]
    trained_tasks: list[str]
    task_index: int | None  # the trained task in STL mode

    @property
    def plateau(self) -> bool:
        return isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)

    def training_step(self) -> TrainingStep:
        policies = self.resolved.policies
        return TrainingStep(
            self.model,
            self.method,
            self.engine,
            self.optimizer,
            self.bench.task_losses,
            self.bench.model_input,
            clip_grad_norm=policies.clip_grad_norm,
            post_step_eval=policies.post_step_mode == "eval",
            post_step_next=policies.post_step_mode == "next_step",
            task_index=self.task_index,
        )


def build_run(
    resolved: ResolvedTrial, results_dir: Path | None = None, device: str | torch.device = "auto"
) -> Run:
    """Seed, build the benchmark, model, method, engine, optimizer and scheduler, and find the
    reference (published, or the STL records in ``results_dir``) that selection uses."""
    r = resolved
    device = pick_device(device) if isinstance(device, str) else device
    seed_everything(r.seed)
    bench_cls = benchmarks.get(r.benchmark)
    bench = bench_cls(r.protocol, r.data_root, r.seed)
    tasks = list(bench.tasks)
    trained = tasks if r.task is None else [r.task]
    model = bench.build_model().to(device)
    method = create_method(
        "ls" if r.mode == "stl" else r.method,
        len(trained),
        feature_dim=bench.feature_dim,
        **r.hparams,
    ).to(device)
    engine = GradientEngine(
        model.shared_parameters(),
        model.head_parameters(),
        mode=r.policies.jacobian_mode,
        wrt=r.policies.grad_wrt,
        head_grads=r.policies.head_grads,
        update_scale=r.policies.update_scale,
        chunk_size=r.policies.jacobian_chunk,
    )
    engine.check(method)
    optimizer = build_optimizer(r.protocol, model, method.parameter_groups())
    if r.mode == "mtl":
        reference = reference_for(bench_cls, bench, results_dir, r.protocol.to_dict())
    else:
        reference = bench.reference()
    return Run(
        resolved=r,
        device=device,
        bench=bench,
        model=model,
        method=method,
        engine=engine,
        optimizer=optimizer,
        scheduler=build_scheduler(r.protocol.scheduler, optimizer),
        reference=reference,
        eval_metrics=[m for m in bench.metrics if r.task is None or m.task == r.task],
        trained_tasks=trained,
        task_index=tasks.index(r.task) if r.task is not None else None,
    )


def empty_curves(tasks: list[str]) -> dict[str, Any]:
    return {
        "epoch": [],
        "lr": [],
        "train_loss": {t: [] for t in tasks},
        "weights": {t: [] for t in tasks},
        "val": {},
        "test": {},
        "val_score": [],
    }


def fit(
    run: Run,
    state: TrainState,
    *,
    checkpoint: Checkpoint | None = None,
    progress: bool = False,
    on_epoch: Callable[[int], None] | None = None,
) -> TrainState:
    """Train from ``state.epoch`` to the protocol's last epoch, evaluating every
    ``eval_every`` epochs (and at the end), checkpointing after every epoch. Raises
    :class:`Diverged` on a non-finite loss or metric, or when the model leaves the benchmark's
    valid domain."""
    protocol = run.resolved.protocol
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    epochs: Any = range(state.epoch, protocol.epochs)
    if progress:
        from tqdm import tqdm

        epochs = tqdm(
            epochs, desc=run.resolved.trial_id, initial=state.epoch, total=protocol.epochs
        )
    step_fn = run.training_step()
    for epoch in epochs:
        if stale(state.curves["val_score"]) >= (protocol.patience or math.inf):
            break  # early stopping (also when a run that stopped is resumed)
        run.method.on_epoch_start(epoch)
        train_epoch(run, step_fn, state, epoch)
        if (epoch + 1) % protocol.eval_every == 0 or epoch + 1 == protocol.epochs:
            t0 = time.perf_counter()
            evaluate(run, state)
            state.eval_s += time.perf_counter() - t0
            check_domain(run, state, epoch)
            val = {k: v[-1] for k, v in state.curves["val"].items()}
            score = selection_score(val, run.eval_metrics, run.reference)
            state.curves["val_score"].append(score)
            if run.plateau:
                run.scheduler.step(score)
        if run.scheduler is not None and not run.plateau:
            run.scheduler.step()
        state.epoch = epoch + 1
        if checkpoint is not None:
            checkpoint.save(run.model, run.method, run.optimizer, run.scheduler, state)
        if on_epoch is not None:
            on_epoch(epoch)
    return state


def stale(scores: list[float]) -> int:
    """Evaluations since the best (lowest) validation score; 0 without any."""
    if not scores:
        return 0
    best = min(range(len(scores)), key=scores.__getitem__)
    return len(scores) - 1 - best


def train_epoch(run: Run, step_fn: TrainingStep, state: TrainState, epoch: int) -> None:
    """One epoch of training steps; appends the epoch's mean losses and weights to the curves."""
    max_steps = run.resolved.protocol.max_steps
    run.model.train()
    k = run.method.n_tasks
    loss_sum = torch.zeros(k, dtype=torch.float64)
    weight_sum = torch.zeros(k, dtype=torch.float64)
    n = 0
    t_epoch = time.perf_counter()
    for step, batch in enumerate(run.bench.batches("train", epoch)):
        if max_steps is not None and step >= max_steps:
            break
        synchronize(run.device)
        t0 = time.perf_counter()
        losses, weights = step_fn(run.bench.to_device(batch, run.device), state.global_step, epoch)
        synchronize(run.device)
        state.step_times.append(time.perf_counter() - t0)
        loss_sum += losses.detach().to("cpu", torch.float64)
        weight_sum += weights.to("cpu", torch.float64).reshape(-1)[:k]
        n += 1
        state.global_step += 1
    state.train_s += time.perf_counter() - t_epoch
    for i, t in enumerate(state.curves["train_loss"]):
        state.curves["train_loss"][t].append(float(loss_sum[i] / max(n, 1)))
        state.curves["weights"][t].append(float(weight_sum[i] / max(n, 1)))
    state.curves["epoch"].append(epoch)
    state.curves["lr"].append(run.optimizer.param_groups[0]["lr"])


@torch.no_grad()
def evaluate(run: Run, state: TrainState) -> None:
    """Validation and test metrics of the current model, appended to the curves."""
    max_steps = run.resolved.protocol.max_steps
    run.model.eval()
    for split in ("val", "test"):
        evaluator = run.bench.evaluator()
        for step, batch in enumerate(run.bench.batches(split)):
            if max_steps is not None and step >= max_steps:
                break
            batch = run.bench.to_device(batch, run.device)
            _, outputs = run.model(run.bench.model_input(batch))
            evaluator.update(outputs, batch)
        for key, value in evaluator.compute().items():
            state.curves[split].setdefault(key, []).append(float(value))
    run.model.train()


def check_domain(run: Run, state: TrainState, epoch: int) -> None:
    """Raise :class:`Diverged` when the last evaluation has a non-finite metric or the model
    has left the benchmark's valid domain (:meth:`Benchmark.out_of_domain`)."""
    last = {
        f"{split}/{k}": v[-1] for split in ("val", "test") for k, v in state.curves[split].items()
    }
    bad = sorted(k for k, v in last.items() if not torch.isfinite(torch.tensor(v)))
    why = f"non-finite metric(s) {', '.join(bad)}" if bad else run.bench.out_of_domain(run.model)
    if why:
        losses = [v[-1] for v in state.curves["train_loss"].values() if v]
        raise Diverged(epoch, state.global_step, losses, why)


def select_and_score(run: Run, state: TrainState) -> dict[str, Any]:
    """The record's ``selection``, ``metrics`` and ``delta_m`` entries."""
    r = run.resolved
    names = [m.name for m in run.eval_metrics]
    chosen = select_epoch(
        state.curves, r.protocol.selection, has_reference=run.reference is not None
    )
    keep = set(names)
    best_val_epoch, at_end = convergence(state.curves, r.protocol.epochs)
    out: dict[str, Any] = {
        "selection": {
            "rule": r.protocol.selection,
            "description": chosen.description,
            "epoch": state.curves["epoch"][chosen.index],
            "score": state.curves["val_score"][chosen.index],
            "reference_source": run.reference.source if run.reference is not None else None,
            "best_val_epoch": best_val_epoch,
            "selected_at_end": at_end,
            "epochs_run": state.epoch,  # below protocol.epochs: stopped early (patience)
        },
        "metrics": {
            split: {k: v for k, v in values.items() if k in keep or r.task is None}
            for split, values in (("test", chosen.test), ("val", chosen.val))
        },
        "delta_m": None,
    }
    ref = run.reference
    if ref is not None and all(n in ref.values for n in names):
        out["delta_m"] = DeltaM(
            **delta_m_both(chosen.test, ref.values, run.eval_metrics),  # type: ignore[typeddict-item]
            reference={
                "values": {n: ref.values[n] for n in names},
                "source": ref.source,
                "details": ref.details,
            },
        )
    return out


def timing(state: TrainState, synchronized: bool) -> Timing:
    """Train and evaluation wall time, and the per-step median and spread (p10, p90)."""
    times = sorted(state.step_times)

    def quantile(p: float) -> float | None:
        return times[min(len(times) - 1, int(p * len(times)))] if times else None

    return Timing(
        train_s=state.train_s,
        eval_s=state.eval_s,
        steps=len(times),
        step_median_s=statistics.median(times) if times else None,
        step_p10_s=quantile(0.1),
        step_p90_s=quantile(0.9),
        synchronized=synchronized,
    )


def peak_memory(device: torch.device) -> dict[str, Any]:
    """Peak memory: CUDA allocations on GPU; the process's peak RSS on CPU (coarser, and shared
    by all trials of an in-process sweep)."""
    if device.type == "cuda":
        return {
            "peak_bytes": int(torch.cuda.max_memory_allocated(device)),
            "kind": "cuda_allocated",
        }
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    except (ImportError, OSError):
        rss = None
    return {"peak_bytes": rss, "kind": "process_peak_rss"}


def _start_record(
    resolved: ResolvedTrial, sweep: str | None, device: torch.device, given: Sequence[Plugin]
) -> Record:
    """A fresh ``running`` record of ``resolved``; its ``plugins``: the installed and ``given``
    plug-ins (:func:`mtlbench.plugins.provenance`)."""
    load(given)
    config: dict[str, Any] = resolved.to_dict()
    config["data_root"] = resolved.data_root
    config["device"] = str(device)
    bench_cls = benchmarks.get(resolved.benchmark)
    return new_record(
        resolved.trial_id,
        config,  # type: ignore[arg-type]
        sweep=sweep,
        environment=describe(device),
        runner={"host": socket.gethostname(), "pid": os.getpid()},
        started_at=utc_now(),
        plugins=provenance(active(given)),
        metric_info=metric_info(
            [m for m in bench_cls.metrics if resolved.task is None or m.task == resolved.task]
        ),
    )


def _mark_resumed(record: Record, earlier: Record | None) -> None:
    """A trial resumed from its checkpoint keeps its first ``started_at`` and its earlier
    resumes, and lists this one (the epoch it continues from is filled in after loading)."""
    if earlier is not None:
        record["started_at"] = earlier["started_at"]
        record["resumes"] = list(earlier.get("resumes") or [])
    record["resumes"].append({"at": utc_now(), **record["runner"], "epoch": None})


def _earlier_record(results_dir: Path | None, trial_id: str) -> Record | None:
    if results_dir is None or not record_path(results_dir, trial_id).exists():
        return None
    try:
        return read_record(record_path(results_dir, trial_id))
    except ValueError:
        return None


def run_trial(
    resolved: ResolvedTrial,
    results_dir: Path | None = None,
    *,
    sweep: str | None = None,
    device: str = "auto",
    checkpoint: Path | None = None,
    progress: bool = False,
    on_epoch: Callable[[int], None] | None = None,
    plugins: Sequence[Plugin] = (),
) -> Record:
    """Run one resolved trial and return its record, also written to ``results_dir`` (where the
    STL references are looked up) when given. ``checkpoint`` enables per-epoch checkpoints and
    resume; ``plugins``: the given plug-ins (imported here; named in the record with the installed
    ones). Never raises for a failure inside training: the record says ``failed`` (with the
    traceback) or ``diverged`` (with the epoch and step)."""
    results_dir = Path(results_dir) if results_dir is not None else None
    ckpt = Checkpoint(checkpoint, resolved.trial_id) if checkpoint is not None else None
    dev = pick_device(device)
    record = _start_record(resolved, sweep, dev, plugins)
    resuming = ckpt is not None and ckpt.exists()
    if resuming:
        _mark_resumed(record, _earlier_record(results_dir, resolved.trial_id))
    write = (lambda: write_record(results_dir, record)) if results_dir is not None else None
    if write:
        write()
    try:
        run = build_run(resolved, results_dir, dev)
        state = TrainState(curves=empty_curves(run.trained_tasks))
        if resuming:
            assert ckpt is not None
            state = ckpt.load(run.model, run.method, run.optimizer, run.scheduler, dev)
            record["resumes"][-1]["epoch"] = state.epoch
        fit(run, state, checkpoint=ckpt, progress=progress, on_epoch=on_epoch)
        record.update(select_and_score(run, state))  # type: ignore[typeddict-item]
        record["curves"] = state.curves
        record["timing"] = timing(state, synchronized=dev.type == "cuda")
        record["memory"] = peak_memory(dev)  # type: ignore[typeddict-item]
        record["diagnostics"] = {"solver_fallbacks": int(getattr(run.method, "fallbacks", 0))}
        record["extra"] = run.bench.record_extra(run.model) or None
        record["status"] = "done"
    except Diverged as error:
        record["status"] = "diverged"
        record["diverged"] = error.as_dict()
        record["error"] = {"type": "Diverged", "message": str(error), "traceback": None}
    except Exception as error:  # noqa: BLE001 - a failed trial must not stop a sweep
        record["status"] = "failed"
        record["error"] = {
            "type": type(error).__name__,
            "message": str(error),
            "traceback": traceback.format_exc(),
        }
    record["finished_at"] = utc_now()
    if write:
        write()
    if record["status"] != "done" and ckpt is not None:
        ckpt.discard()  # a diverged or failed trial ends here; a later retry starts fresh
    return record
