"""ExcessMTL: multiplicative task weights driven by excess-risk estimates."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from mtlbench.method import Aggregate, JacobianMethod, Scale, all_finite, register
from mtlbench.registry import PositiveFloat


@register("excess_mtl")
class ExcessMTL(JacobianMethod):
    """ExcessMTL (He, Zhou, Zhang, Yun, Xu, Zeng, Chilimbi & Zhao, "Robust Multi-Task Learning
    with Excess Risks", ICML 2024, arXiv 2402.02009), as the official code
    (``yifei-he/ExcessMTL`` ``LibMTL/LibMTL/weighting/ExcessMTL.py``, identical to LibMTL's).

    The excess risk of task k is estimated by a second-order Taylor expansion with a diagonal
    (AdaGrad-style, accumulated squared gradients) curvature: at step ``t = 1, 2, ...``::

        S_k  <- S_k + g_k * g_k                       (elementwise; S = 0 at start)
        e_k   = sum_p g_kp^2 / sqrt(S_kp + 1e-7)      (g_k^T diag(S_k + 1e-7)^(-1/2) g_k)
        t = 1:  e0 = e                                (scale normalisation, kept)
        t > 1:  c_k <- c_k exp(eta e_k / e0_k),  c <- K c / sum c      (c = 1 at start)
        d     = sum_k c_k g_k

    ``eta = robust_step_size = 1e-2`` (the official and LibMTL default). The weights sum to K
    (``scale = "sum"``) and are applied to the losses, so the heads get them too (the default
    ``head_grads = "weighted"`` policy reproduces the reference). The multiplicative step is
    computed as ``K softmax(log c + eta e / e0)``, equal and safe from overflow.

    The reference stores ``e0`` on its first call (its flag is named ``first_epoch`` but is
    cleared after one step). A task whose first estimate is 0 (a zero gradient) would make every
    later ratio infinite there; here its ``e0`` is taken at its first non-zero estimate instead
    (ratio 0 until then). ``S`` (K x P, on J's device), ``e0``, ``c`` and ``t`` are buffers. With
    ``log_losses`` the rows are ``g_k / l_k``. A non-finite Jacobian leaves the state untouched,
    applies the current weights to J with its non-finite entries zeroed and is counted in
    ``fallbacks``.
    """

    summary: ClassVar[str] = "Weights the tasks by their estimated excess risks."
    paper: ClassVar[str] = (
        "He et al., Robust Multi-Task Learning with Excess Risks, ICML 2024 (arXiv 2402.02009)"
    )
    scale: ClassVar[Scale] = "sum"
    zero_at_zero: ClassVar[bool] = True  # a zero Jacobian gives a zero update

    def __init__(
        self, n_tasks: int, robust_step_size: PositiveFloat = 1e-2, log_losses: bool = False
    ) -> None:
        super().__init__(n_tasks, log_losses=log_losses)
        self.robust_step_size = robust_step_size
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("loss_weight", torch.ones(n_tasks))
        self.register_buffer("initial_risk", torch.zeros(n_tasks))
        # (K, P) once the first Jacobian is seen; (K, 0) before.
        self.register_buffer("grad_sq_sum", torch.zeros(n_tasks, 0))

    def excess_risks(self, rows: Tensor) -> Tensor:
        """Accumulate ``S`` and return the estimates ``e_k`` (K,): ``S += g * g`` in place (one
        pass over J), then ``e_k = g_k . (g_k / sqrt(S_k + 1e-7))`` row by row in one P-vector
        scratch: no K x P temporary (on a CPU, a fresh K x P allocation is page-faulted in at
        every step and costs more than the arithmetic)."""
        acc = self.grad_sq_sum = self.grad_sq_sum.to(rows)
        acc.addcmul_(rows, rows)
        risks = torch.empty(rows.shape[0], dtype=rows.dtype, device=rows.device)
        scratch = torch.empty_like(rows[0])
        for k, row in enumerate(rows):
            torch.add(acc[k], 1e-7, out=scratch).rsqrt_().mul_(row)
            risks[k] = torch.dot(scratch, row)
        return risks

    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Aggregate:
        scale = self.loss_transform(losses.detach()).to(jacobian)
        rows = jacobian * scale[:, None] if self.log_losses else jacobian.detach()
        if self.grad_sq_sum.shape != rows.shape:
            if int(self.step) != 0:
                raise ValueError(
                    f"ExcessMTL's gradient accumulator has shape {tuple(self.grad_sq_sum.shape)}, "
                    f"the Jacobian {tuple(rows.shape)}: the shared parameters changed"
                )
            self.grad_sq_sum = torch.zeros_like(rows)
            self.loss_weight = self.loss_weight.to(rows)
            self.initial_risk = self.initial_risk.to(rows)
        weight = self.loss_weight.to(rows)
        if not (all_finite(rows) and all_finite(scale)):
            self.fallback(weight)
            clean = torch.nan_to_num(rows, nan=0.0, posinf=0.0, neginf=0.0)
            scale = torch.nan_to_num(scale, nan=0.0, posinf=0.0, neginf=0.0)
            return Aggregate(
                update=weight @ clean, weights=weight * scale, head_weights=weight * scale
            )
        self.step += 1
        risk = self.excess_risks(rows)
        initial = self.initial_risk.to(rows)
        if int(self.step) > 1:
            ratio = torch.where(initial > 0, risk / initial, torch.zeros_like(risk))
            logits = weight.log() + self.robust_step_size * ratio
            weight = self.n_tasks * torch.softmax(logits, dim=0)
        self.initial_risk = torch.where(initial > 0, initial, risk).detach()
        self.loss_weight = weight.detach()
        coefficients = weight * scale
        return Aggregate(update=weight @ rows, weights=coefficients, head_weights=coefficients)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Shapes and dtypes follow the Jacobian, known after the first step: take the saved ones.
        for name in ("grad_sq_sum", "loss_weight", "initial_risk"):
            saved, current = state_dict.get(prefix + name), getattr(self, name)
            if saved is not None and (saved.shape, saved.dtype) != (current.shape, current.dtype):
                setattr(self, name, torch.zeros_like(saved, device=current.device))
        super()._load_from_state_dict(state_dict, prefix, *args)
