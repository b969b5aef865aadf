"""One training step, shared by the trainer and the performance bench so that both time exactly
the same work: forward, task losses, the method's backward through the gradient engine,
optional clipping, the optimizer step, and the post-step losses of methods that ask for them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mtlbench.gradients import GradientEngine
from mtlbench.method import Method, StepContext


class Diverged(Exception):
    """A loss became NaN or infinite (or, with ``reason``, a metric did, or the model left the
    benchmark's valid domain)."""

    def __init__(
        self, epoch: int, step: int, losses: list[float], reason: str | None = None
    ) -> None:
        self.reason = reason or "non-finite loss"
        super().__init__(f"{self.reason} at epoch {epoch}, step {step}: losses {losses}")
        self.epoch, self.step, self.losses = epoch, step, losses

    def as_dict(self) -> dict[str, Any]:
        """The record's ``diverged`` entry."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "losses": self.losses,
            "reason": self.reason,
        }


@dataclass
class TrainingStep:
    """``step(batch, global_step, epoch) -> (losses, weights)``, both detached.

    ``task_index`` trains a single task (STL mode): the loss vector is cut to that task.
    ``post_step_eval`` runs the extra forward of post-step-loss methods in eval mode instead of
    the reference code's train mode (policy ``post_step_mode``). ``post_step_next`` runs no
    extra forward: :meth:`Method.after_step` gets the next step's losses (of the next batch)
    before that step's backward, as FAMO's toy loop does (``post_step_mode = "next_step"``; on
    a deterministic problem without data, such as the toy, these are the same values).
    """

    model: nn.Module
    method: Method
    engine: GradientEngine
    optimizer: torch.optim.Optimizer
    task_losses: Callable[[list[Tensor], Any], Tensor]
    model_input: Callable[[Any], Any]
    clip_grad_norm: float | None = None
    post_step_eval: bool = False
    task_index: int | None = None
    post_step_next: bool = False
    # post_step_next: after_step is owed the next step's losses.
    _pending: bool = field(default=False, init=False, repr=False)

    def losses(self, batch: Any) -> tuple[Tensor, Tensor]:
        rep, outputs = self.model(self.model_input(batch))
        losses = self.task_losses(outputs, batch)
        if self.task_index is not None:
            losses = losses[self.task_index : self.task_index + 1]
        return rep, losses

    def __call__(self, batch: Any, global_step: int, epoch: int) -> tuple[Tensor, Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        rep, losses = self.losses(batch)
        if not bool(torch.isfinite(losses).all()):
            raise Diverged(epoch, global_step, losses.detach().cpu().tolist())
        method = self.method
        if self._pending:
            method.after_step(losses.detach())
            self._pending = False
        ctx = StepContext(
            step=global_step, epoch=epoch, features=rep if method.uses_features else None
        )
        result = self.engine.backward(method, losses, ctx, representation=rep)
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        self.optimizer.step()
        if method.post_step_losses and self.post_step_next:
            self._pending = True
        elif method.post_step_losses:
            with torch.no_grad():
                if self.post_step_eval:
                    self.model.eval()
                _, new_losses = self.losses(batch)
                self.model.train()
            method.after_step(new_losses.detach())
        return losses.detach(), result.weights
