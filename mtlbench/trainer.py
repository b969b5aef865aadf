"""Runs one trial: seeding, the training loop, evaluation, model selection, timing, checkpoint
and resume, divergence detection, and the run record.

The trainer knows no method and no benchmark by name: the method declares what it needs
(``needs``, ``uses_features``, ``post_step_losses``) and :class:`GradientEngine` provides it;
the benchmark provides data, model, losses and metrics through its interface.

Model selection never reads the test set unless the protocol asks for the published, leaky rule
``last10_test_mean`` (labelled so in the record): the default picks the epoch with the best
validation Delta m% against the single-task reference.
"""

from __future__ import annotations

import math
import os
import socket
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from mtlbench import benchmark as benchmarks
from mtlbench.benchmark import Benchmark, Metric, Reference
from mtlbench.environment import describe, pick_device, rng_state, seed_everything, set_rng_state
from mtlbench.gradients import GradientEngine
from mtlbench.method import create as create_method
from mtlbench.metrics import delta_m_both, delta_m_metric_avg
from mtlbench.records import SCHEMA, write_record
from mtlbench.references import reference_for
from mtlbench.step import Diverged, TrainingStep
from mtlbench.trial import ResolvedTrial

CHECKPOINT_VERSION = 1


@dataclass
class TrainState:
    """Everything that a resumed trial needs besides the model, optimizer and method."""

    epoch: int = 0  # next epoch to run
    global_step: int = 0
    curves: dict[str, Any] = field(default_factory=dict)
    step_times: list[float] = field(default_factory=list)
    train_s: float = 0.0
    eval_s: float = 0.0


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_optimizer(
    protocol: benchmarks.Protocol, model: torch.nn.Module, groups: list[dict[str, Any]]
) -> torch.optim.Optimizer:
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


def selection_score(
    values: dict[str, float], metrics: list[Metric], reference: Reference | None
) -> float:
    """Validation Delta m% against the reference (lower is better). Without a reference, the
    mean of the metrics signed so that lower is better (the same order for like-scaled metrics)."""
    if reference is not None:
        return delta_m_metric_avg(values, reference.values, metrics)
    return statistics.fmean(
        -values[m.name] if m.higher_is_better else values[m.name] for m in metrics
    )


class Trial:
    """One resolved trial, run to a record. ``results_dir`` is where the record goes (and where
    STL references are looked up); ``checkpoint`` enables per-epoch checkpoints and resume."""

    def __init__(
        self,
        resolved: ResolvedTrial,
        results_dir: Path | None = None,
        *,
        sweep: str | None = None,
        device: str = "auto",
        checkpoint: Path | None = None,
        progress: bool = False,
        on_epoch: Callable[[int], None] | None = None,
    ) -> None:
        self.resolved = resolved
        self.results_dir = Path(results_dir) if results_dir is not None else None
        self.sweep = sweep
        self.device = pick_device(device)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.progress = progress
        self.on_epoch = on_epoch
        self.bench_cls = benchmarks.get(resolved.benchmark)

    # -- record -------------------------------------------------------------------------------
    def new_record(self) -> dict[str, Any]:
        config = self.resolved.to_dict()
        config["data_root"] = self.resolved.data_root
        config["device"] = str(self.device)
        return {
            "schema": SCHEMA,
            "trial_id": self.resolved.trial_id,
            "sweep": self.sweep,
            "status": "running",
            "config": config,
            "error": None,
            "diverged": None,
            "curves": {},
            "selection": None,
            "metrics": None,
            "delta_m": None,
            "timing": None,
            "memory": None,
            "diagnostics": None,
            "extra": None,
            "environment": describe(self.device),
            "started_at": utc_now(),
            "finished_at": None,
            "runner": {"host": socket.gethostname(), "pid": os.getpid()},
        }

    def write(self, record: dict[str, Any]) -> None:
        if self.results_dir is not None:
            write_record(self.results_dir, record)

    # -- run ----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train, evaluate and select; always returns (and writes) a record, never raises for a
        failure inside training: the record says ``failed`` (with the traceback) or
        ``diverged`` (with the step)."""
        record = self.new_record()
        self.write(record)
        try:
            self._train(record)
            record["status"] = "done"
        except Diverged as error:
            record["status"] = "diverged"
            record["diverged"] = {"epoch": error.epoch, "step": error.step, "losses": error.losses}
            record["error"] = {"type": "Diverged", "message": str(error), "traceback": None}
        except Exception as error:  # noqa: BLE001 - a failed trial must not stop a sweep
            record["status"] = "failed"
            record["error"] = {
                "type": type(error).__name__,
                "message": str(error),
                "traceback": traceback.format_exc(),
            }
        record["finished_at"] = utc_now()
        self.write(record)
        if record["status"] != "done" and self.checkpoint is not None:
            # A diverged or failed trial ends here; a later retry starts fresh.
            self.checkpoint.unlink(missing_ok=True)
        return record

    def _train(self, record: dict[str, Any]) -> None:
        r = self.resolved
        protocol = r.protocol
        seed_everything(r.seed)
        bench = self.bench_cls(protocol, r.data_root, r.seed)
        tasks = list(bench.tasks)
        task_index = tasks.index(r.task) if r.task is not None else None
        eval_metrics = list(bench.metrics if r.task is None else bench.task_metrics(r.task))
        trained_tasks = tasks if r.task is None else [r.task]

        model = bench.build_model().to(self.device)
        method_name = "ls" if r.mode == "stl" else r.method
        method = create_method(
            method_name, len(trained_tasks), feature_dim=bench.feature_dim, **r.hparams
        ).to(self.device)
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
        optimizer = build_optimizer(protocol, model, method.parameter_groups())
        scheduler = build_scheduler(protocol.scheduler, optimizer)
        reference = None
        if r.mode == "mtl":
            reference = reference_for(self.bench_cls, bench, self.results_dir, protocol.to_dict())
        elif (published := bench.reference()) is not None:
            reference = published

        state = TrainState(curves=self._empty_curves(trained_tasks))
        if self.checkpoint is not None and self.checkpoint.exists():
            state = self._resume(model, method, optimizer, scheduler)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

        epochs = range(state.epoch, protocol.epochs)
        if self.progress:
            from tqdm import tqdm

            epochs = tqdm(epochs, desc=r.trial_id, initial=state.epoch, total=protocol.epochs)
        for epoch in epochs:
            method.on_epoch_start(epoch)
            self._train_epoch(bench, model, method, engine, optimizer, state, epoch, task_index)
            if (epoch + 1) % protocol.eval_every == 0 or epoch + 1 == protocol.epochs:
                t0 = time.perf_counter()
                self._evaluate(bench, model, state, epoch)
                state.eval_s += time.perf_counter() - t0
                val = {k: v[-1] for k, v in state.curves["val"].items()}
                score = selection_score(val, eval_metrics, reference)
                state.curves["val_score"].append(score)
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(score)
            if scheduler is not None and not isinstance(
                scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau
            ):
                scheduler.step()
            state.epoch = epoch + 1
            if self.checkpoint is not None:
                self._save(model, method, optimizer, scheduler, state)
            if self.on_epoch is not None:
                self.on_epoch(epoch)

        self._finish(record, bench, model, method, state, eval_metrics, reference)

    @staticmethod
    def _empty_curves(tasks: list[str]) -> dict[str, Any]:
        return {
            "epoch": [],
            "lr": [],
            "train_loss": {t: [] for t in tasks},
            "weights": {t: [] for t in tasks},
            "val": {},
            "test": {},
            "val_score": [],
        }

    def _train_epoch(
        self,
        bench: Benchmark,
        model: torch.nn.Module,
        method: Any,
        engine: GradientEngine,
        optimizer: torch.optim.Optimizer,
        state: TrainState,
        epoch: int,
        task_index: int | None,
    ) -> None:
        protocol = self.resolved.protocol
        device = self.device
        model.train()
        k = method.n_tasks
        loss_sum = torch.zeros(k, dtype=torch.float64)
        weight_sum = torch.zeros(k, dtype=torch.float64)
        n = 0
        step_fn = TrainingStep(
            model,
            method,
            engine,
            optimizer,
            bench.task_losses,
            bench.model_input,
            clip_grad_norm=self.resolved.policies.clip_grad_norm,
            post_step_eval=self.resolved.policies.post_step_mode == "eval",
            post_step_next=self.resolved.policies.post_step_mode == "next_step",
            task_index=task_index,
        )
        t_epoch = time.perf_counter()
        for step, batch in enumerate(bench.batches("train", epoch)):
            if protocol.max_steps is not None and step >= protocol.max_steps:
                break
            _sync(device)
            t0 = time.perf_counter()
            losses, weights = step_fn(bench.to_device(batch, device), state.global_step, epoch)
            _sync(device)
            state.step_times.append(time.perf_counter() - t0)
            loss_sum += losses.detach().to("cpu", torch.float64)
            weight_sum += weights.to("cpu", torch.float64).reshape(-1)[:k]
            n += 1
            state.global_step += 1
        state.train_s += time.perf_counter() - t_epoch
        tasks = list(state.curves["train_loss"])
        for i, t in enumerate(tasks):
            state.curves["train_loss"][t].append(float(loss_sum[i] / max(n, 1)))
            state.curves["weights"][t].append(float(weight_sum[i] / max(n, 1)))
        state.curves["epoch"].append(epoch)
        state.curves["lr"].append(optimizer.param_groups[0]["lr"])

    @torch.no_grad()
    def _evaluate(
        self, bench: Benchmark, model: torch.nn.Module, state: TrainState, epoch: int
    ) -> None:
        model.eval()
        for split in ("val", "test"):
            evaluator = bench.evaluator()
            for step, batch in enumerate(bench.batches(split)):
                if (
                    self.resolved.protocol.max_steps is not None
                    and step >= self.resolved.protocol.max_steps
                ):
                    break
                batch = bench.to_device(batch, self.device)
                _, outputs = model(bench.model_input(batch))
                evaluator.update(outputs, batch)
            for key, value in evaluator.compute().items():
                state.curves[split].setdefault(key, []).append(float(value))
        model.train()

    def _finish(
        self,
        record: dict[str, Any],
        bench: Benchmark,
        model: torch.nn.Module,
        method: Any,
        state: TrainState,
        eval_metrics: list[Metric],
        reference: Reference | None,
    ) -> None:
        protocol = self.resolved.protocol
        curves = state.curves
        scores = curves["val_score"]
        if not scores:
            raise RuntimeError("no evaluation happened: check epochs and eval_every")
        names = [m.name for m in eval_metrics]
        rule = protocol.selection
        if rule == "last10_test_mean":
            window = min(10, len(scores))
            test = {k: statistics.fmean(v[-window:]) for k, v in curves["test"].items()}
            val = {k: statistics.fmean(v[-window:]) for k, v in curves["val"].items()}
            selected = len(scores) - 1
            note = (
                f"mean of the last {window} evaluations' TEST metrics (published rule; reads test)"
            )
        else:
            selected = (
                len(scores) - 1
                if rule == "last"
                else min(range(len(scores)), key=scores.__getitem__)
            )
            test = {k: v[selected] for k, v in curves["test"].items()}
            val = {k: v[selected] for k, v in curves["val"].items()}
            note = (
                "last evaluation"
                if rule == "last"
                else "best validation Delta m% against the reference"
                if reference is not None
                else "best validation mean of the metrics (no reference available yet)"
            )
        record["selection"] = {
            "rule": rule,
            "description": note,
            "epoch": curves["epoch"][selected],
            "score": scores[selected],
            "reference_source": reference.source if reference is not None else None,
        }
        keep = set(names)
        record["metrics"] = {
            "test": {k: v for k, v in test.items() if k in keep or self.resolved.task is None},
            "val": {k: v for k, v in val.items() if k in keep or self.resolved.task is None},
        }
        if reference is not None and all(n in reference.values for n in names):
            both = delta_m_both(test, reference.values, eval_metrics)
            record["delta_m"] = {
                **both,
                "reference": {
                    "values": {n: reference.values[n] for n in names},
                    "source": reference.source,
                    "details": reference.details,
                },
            }
        record["curves"] = curves
        times = sorted(state.step_times)
        q = (
            (lambda p: times[min(len(times) - 1, int(p * len(times)))])
            if times
            else (lambda p: None)
        )
        record["timing"] = {
            "train_s": state.train_s,
            "eval_s": state.eval_s,
            "steps": len(times),
            "step_median_s": statistics.median(times) if times else None,
            "step_p10_s": q(0.1),
            "step_p90_s": q(0.9),
            "synchronized": self.device.type == "cuda",
        }
        record["memory"] = peak_memory(self.device)
        record["diagnostics"] = {"solver_fallbacks": int(getattr(method, "fallbacks", 0))}
        record["extra"] = bench.record_extra(model) or None

    # -- checkpoints -------------------------------------------------------------------------
    def _save(self, model, method, optimizer, scheduler, state: TrainState) -> None:
        payload = {
            "version": CHECKPOINT_VERSION,
            "trial_id": self.resolved.trial_id,
            "model": model.state_dict(),
            "method": method.state_dict(),
            "fallbacks": int(getattr(method, "fallbacks", 0)),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "state": state.__dict__,
            "rng": rng_state(),
        }
        assert self.checkpoint is not None
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint.with_name(f".{self.checkpoint.name}.{os.getpid()}.tmp")
        torch.save(payload, tmp)
        os.replace(tmp, self.checkpoint)

    def _resume(self, model, method, optimizer, scheduler) -> TrainState:
        assert self.checkpoint is not None
        payload = torch.load(self.checkpoint, map_location=self.device, weights_only=False)
        if payload.get("trial_id") != self.resolved.trial_id:
            raise RuntimeError(f"checkpoint {self.checkpoint} belongs to another trial")
        model.load_state_dict(payload["model"])
        method.load_state_dict(payload["method"])
        method.fallbacks = int(payload.get("fallbacks", 0))
        optimizer.load_state_dict(payload["optimizer"])
        if scheduler is not None and payload["scheduler"] is not None:
            scheduler.load_state_dict(payload["scheduler"])
        set_rng_state(payload["rng"])
        return TrainState(**payload["state"])


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


def run_trial(
    resolved: ResolvedTrial, results_dir: Path | None = None, **options: Any
) -> dict[str, Any]:
    """Run one resolved trial and return its record (also written under ``results_dir``)."""
    return Trial(resolved, results_dir, **options).run()


def is_finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)
