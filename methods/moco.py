"""MoCo: stochastic MGDA with tracked (bias-corrected) task gradients."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from mtlbench.method import Aggregate, JacobianMethod, Scale, all_finite, register
from mtlbench.methods._min_norm import project_to_simplex
from mtlbench.registry import NonNegativeFloat

Simplex = Literal["softmax", "projection"]


@register("moco")
class MoCo(JacobianMethod):
    """MoCo (Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, "Mitigating Gradient Bias in
    Multi-objective Learning: A Provably Convergent Approach", ICLR 2023, arXiv 2210.12624), as
    LibMTL ``weighting/MoCo.py`` ("based on the author's sharing code").

    At step ``t = 1, 2, ...`` with task gradients ``g_k`` (rows of J), losses ``l_k`` and
    ``D_k = l_k - l*_k`` (``l*`` the ``min_losses``, 0 by default, as FAMO's ``D``)::

        h_k    = D_k g_k / (|g_k| + 1e-8)                         (normalised, loss-scaled)
        y_k   <- y_k - beta_t (y_k - h_k),     beta_t  = beta / t^beta_sigma     (y = 0 at start)
        lambda <- softmax(lambda - gamma_t (Y Y^T + rho I) lambda),  gamma_t = gamma / t^gamma_sigma
        d      = Y^T lambda                                        (lambda = 1/K at start)

    ``Y`` tracks the task gradients (the paper's bias correction), ``lambda`` takes one
    stochastic MGDA step per training step. Defaults are LibMTL's: ``beta = 0.5``,
    ``beta_sigma = 0.5``, ``gamma = 0.1``, ``gamma_sigma = 0.5``, ``rho = 0``.

    LibMTL maps the step back to the simplex with a softmax of the updated vector (taken as
    logits), ``simplex = "softmax"`` (default); ``simplex = "projection"`` uses the Euclidean
    projection onto the simplex of the paper's projected-gradient update (our reading of its
    Algorithm 1, not checked against the text). ``d`` is a convex combination of the tracked
    gradients (``scale = "mean"``); the reported weights are ``lambda`` and the heads get
    ``lambda`` too (LibMTL trains them on the unweighted losses: the ``head_grads = "unit"``
    policy).

    With ``log_losses`` the rows are ``g_k / D_k`` (the gradients of ``log D_k``) before the
    normalisation (which then cancels), ``D_k`` stays the shifted raw loss and the head weights
    are ``lambda_k / D_k``. ``y`` (K x P, on J's device), ``lambda`` and ``t`` are buffers. A
    non-finite Jacobian or losses leave the state untouched, return the last tracked direction
    ``Y^T lambda`` (zero before the first step) and are counted in ``fallbacks``.

    ``min_losses`` (``l*``) is our addition, as FAMO's ``l*``; 0 is exactly LibMTL. ``h_k``
    assumes ``l_k > 0``: a negative loss turns the tracked gradient uphill, as on the toy problem
    (losses down to about -20), where MoCo without the shift climbs until the losses reach 0.
    """

    summary: ClassVar[str] = "MGDA on tracked task gradients, correcting its stochastic bias."
    paper: ClassVar[str] = (
        "Fernando et al., Mitigating Gradient Bias in Multi-objective Learning: A Provably "
        "Convergent Approach, ICLR 2023 (arXiv 2210.12624)"
    )
    scale: ClassVar[Scale] = "mean"
    zero_at_zero: ClassVar[bool] = True  # a zero Jacobian gives a zero update

    def __init__(
        self,
        n_tasks: int,
        beta: NonNegativeFloat = 0.5,
        beta_sigma: NonNegativeFloat = 0.5,
        gamma: NonNegativeFloat = 0.1,
        gamma_sigma: NonNegativeFloat = 0.5,
        rho: NonNegativeFloat = 0.0,
        simplex: Simplex = "softmax",
        log_losses: bool = False,
        min_losses: list[float] | None = None,
    ) -> None:
        super().__init__(n_tasks, log_losses=log_losses)
        self.register_min_losses(min_losses)
        self.beta, self.beta_sigma = beta, beta_sigma
        self.gamma, self.gamma_sigma = gamma, gamma_sigma
        self.rho = rho
        self.simplex = simplex
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("lambd", torch.full((n_tasks,), 1.0 / n_tasks, dtype=torch.float64))
        # (K, P) once the first Jacobian is seen; (K, 0) before.
        self.register_buffer("y", torch.zeros(n_tasks, 0))

    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Aggregate:
        losses = losses.detach().to(jacobian) - self.min_losses.to(jacobian)
        if self.y.shape != jacobian.shape:
            if int(self.step) != 0:
                raise ValueError(
                    f"MoCo's tracked gradients have shape {tuple(self.y.shape)}, the Jacobian "
                    f"{tuple(jacobian.shape)}: the shared parameters changed during training"
                )
            self.y = torch.zeros_like(jacobian)
        y = self.y.to(jacobian)
        lambd = self.lambd.to(jacobian)
        scale = self.loss_transform(losses).to(jacobian)
        if not (all_finite(jacobian) and all_finite(losses)):
            self.fallback(lambd)
            return Aggregate(update=lambd @ y, weights=lambd, head_weights=lambd)
        self.step += 1
        t = float(self.step)
        # h_k = D_k r_k / (|r_k| + 1e-8) with r_k = scale_k g_k: the row norms of J (one read),
        # then y <- (1 - beta_t) y + beta_t h in place (the one pass over J, no K x P temporary).
        factor = scale * losses / (scale.abs() * torch.linalg.vector_norm(jacobian, dim=1) + 1e-8)
        beta = self.beta / t**self.beta_sigma
        self.y = y  # the buffer, on J's device and dtype
        y.mul_(1.0 - beta).addcmul_(jacobian.detach(), (beta * factor)[:, None])
        # (Y Y^T + rho I) lambda, as Y (Y^T lambda): O(K P) instead of O(K^2 P).
        direction = y @ (y.T @ lambd) + self.rho * lambd
        step = lambd - (self.gamma / t**self.gamma_sigma) * direction
        if self.simplex == "softmax":
            lambd = torch.softmax(step, dim=0)
        else:
            projected = project_to_simplex(step.detach().cpu().double().numpy())
            lambd = torch.from_numpy(projected).to(y)
        self.lambd = lambd.detach()
        return Aggregate(update=lambd @ y, weights=lambd, head_weights=lambd * scale)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Shapes and dtypes follow the Jacobian, known after the first step: take the saved ones.
        for name in ("y", "lambd"):
            saved, current = state_dict.get(prefix + name), getattr(self, name)
            if saved is not None and (saved.shape, saved.dtype) != (current.shape, current.dtype):
                setattr(self, name, torch.zeros_like(saved, device=current.device))
        super()._load_from_state_dict(state_dict, prefix, *args)
