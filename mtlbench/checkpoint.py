"""Per-epoch checkpoints: what a killed, preempted or requeued trial resumes from.

A checkpoint holds the model, the method (its parameters and state: UW's log-variances, FAMO's
logits, DB-MTL's EMA...), the optimizer, the scheduler, the RNG states and the
:class:`TrainState`. It is written atomically after every epoch and removed when the trial ends
in ``failed`` or ``diverged`` (a retry starts fresh).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mtlbench.environment import rng_state, set_rng_state

VERSION = 1


@dataclass
class TrainState:
    """Everything that a resumed trial needs besides the model, optimizer and method."""

    epoch: int = 0  # next epoch to run
    global_step: int = 0
    curves: dict[str, Any] = field(default_factory=dict)
    step_times: list[float] = field(default_factory=list)
    train_s: float = 0.0
    eval_s: float = 0.0


class Checkpoint:
    """The checkpoint file of one trial (``path``), refusing another trial's file."""

    def __init__(self, path: str | Path, trial_id: str) -> None:
        self.path = Path(path)
        self.trial_id = trial_id

    def exists(self) -> bool:
        return self.path.exists()

    def save(
        self,
        model: torch.nn.Module,
        method: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        state: TrainState,
    ) -> None:
        """Write atomically (temporary file, rename): a kill mid-write keeps the last one."""
        payload = {
            "version": VERSION,
            "trial_id": self.trial_id,
            "model": model.state_dict(),
            "method": method.state_dict(),
            "fallbacks": int(getattr(method, "fallbacks", 0)),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "state": asdict(state),
            "rng": rng_state(),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        torch.save(payload, tmp)
        os.replace(tmp, self.path)

    def load(
        self,
        model: torch.nn.Module,
        method: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        device: torch.device,
    ) -> TrainState:
        """Restore everything in place and return the state to continue from."""
        payload = torch.load(self.path, map_location=device, weights_only=False)
        if payload.get("trial_id") != self.trial_id:
            raise RuntimeError(f"checkpoint {self.path} belongs to another trial")
        model.load_state_dict(payload["model"])
        method.load_state_dict(payload["method"])
        method.fallbacks = int(payload.get("fallbacks", 0))
        optimizer.load_state_dict(payload["optimizer"])
        if scheduler is not None and payload["scheduler"] is not None:
            scheduler.load_state_dict(payload["scheduler"])
        set_rng_state(payload["rng"])
        return TrainState(**payload["state"])

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
