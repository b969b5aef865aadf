"""PCD: follow the primary task's gradient, guaranteeing each other task a fraction of progress."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from scipy.optimize import nnls
from torch import Tensor

from mtlbench.method import GramianWeighting, Scale, register
from mtlbench.registry import NonNegativeFloat, UnitInterval

_DEPENDENCE = 1e-9  # eigenvalues of the normalised Gramian below this (relative) count as zero


def pcd_multipliers(gramian: np.ndarray, taus: np.ndarray) -> np.ndarray | None:
    """The multipliers ``mu`` (K - 1 values, ``>= 0``) of PCD's quadratic program, or ``None``
    when its constraints cannot all hold::

        min_d 1/2 |d - g_1|^2   s.t.   g_j . d >= tau_j |g_j|^2  (j >= 2),    d = g_1 + sum mu_j g_j

    In the coordinates ``L`` of the gradients (``G = L L^T`` from the eigendecomposition, so a
    singular ``G`` is fine) and with ``d = g_1 + z``, this is the least-distance problem
    ``min |z|  s.t.  E z >= h``, ``E`` the secondary rows of ``L``, ``h = tau diag(G_s) - G_s1``,
    solved exactly by Lawson & Hanson's LDP algorithm ("Solving Least Squares Problems", 1974,
    ch. 23): ``u = argmin_{u >= 0} |[E^T; h^T] u - e_{r+1}|`` by NNLS, residual ``q``; ``q = 0``
    means infeasible, otherwise ``z = E^T mu`` with ``mu = u / (1 - h . u)``.
    """
    lam, vec = np.linalg.eigh((gramian + gramian.T) / 2.0)
    keep = lam > _DEPENDENCE * max(lam.max(), 0.0)
    factor = vec[:, keep] * np.sqrt(lam[keep])  # L, K x r
    e = factor[1:]
    h = taus * np.diag(gramian)[1:] - gramian[1:, 0]
    if (h <= 0).all():  # g_1 satisfies every constraint
        return np.zeros(len(h))
    a = np.vstack([e.T, h[None, :]])
    target = np.zeros(a.shape[0])
    target[-1] = 1.0
    u, _ = nnls(a, target)
    slack = 1.0 - h @ u
    if slack <= 1e-12:  # the residual vanishes: no d satisfies the constraints
        return None
    return u / slack


@register("pcd")
class PCD(GramianWeighting):
    """PCD, priority-constrained descent ("Not All Objectives Are Born Equal: Priority-Constrained
    Descent for Hierarchical Multi-Objective Optimization", TMLR 2026, openreview HT01yGHLEt,
    arXiv 2606.29521, as TorchJD cites it; reference code
    ``DaraVaram/priority-constrained-descent``), as TorchJD 0.18 ``aggregation.PCD``.

    **Task 1 is the primary objective** (the benchmark's first task); the others are secondary.
    With ``g~_i = s_i g_i`` the gradients normalised by ``s_i = 1 / sqrt(v^_i + eps)``, ``v^_i``
    the bias-corrected EMA (decay ``beta``) of ``|g_i|^2`` over the steps::

        d~ = argmin_d 1/2 |d - g~_1|^2   s.t.   g~_j . d >= tau |g~_j|^2   (j = 2..K)
        d  = (|g_1| / |d~|) d~

    so each secondary task gets at least the fraction ``tau`` of the first-order progress of a
    step along its own normalised gradient, and the update follows the primary gradient as
    closely as that allows, at its norm. ``d~ = g~_1 + sum_j mu_j g~_j`` with the KKT multipliers
    ``mu >= 0``: weights ``w = [1, mu] * s * |g_1| / |d~|`` on the raw gradients
    (``scale = "mean"``: ``w = e_1`` without conflict). Special cases as TorchJD: ``g_1 = 0`` or
    ``d~ = 0`` (to rounding) give ``d = 0``; infeasible constraints (possible for K >= 3) are
    dropped, ``d = g_1``. Defaults are TorchJD's (``tau = 0.02``, ``beta = 0.999``,
    ``eps = 1e-8``); the EMA and its step count are buffers.

    The quadratic program is solved exactly, as a least-distance problem by NNLS
    (:func:`pcd_multipliers`), where TorchJD runs Goldfarb-Idnani's dual active-set method and
    the paper's code enumerates active sets: the same minimiser ``d~``; with dependent active
    gradients ``mu`` is not unique and the weights may differ while ``d`` agrees. A non-finite
    Gramian (TorchJD returns NaN) leaves the EMA unchanged and reuses the last weights (``e_1``
    at first), counted in ``fallbacks``. Not permutation-equivariant, by design
    (``ordered_tasks``).
    """

    summary: ClassVar[str] = "Task 0 as primary objective, the others as constraints (PCD)."
    paper: ClassVar[str] = (
        "Not All Objectives Are Born Equal: Priority-Constrained Descent for Hierarchical "
        "Multi-Objective Optimization, TMLR 2026 (arXiv 2606.29521; openreview HT01yGHLEt)"
    )
    scale: ClassVar[Scale] = "mean"
    # Not scale_equivariant: the normalisation 1 / sqrt(v^ + eps) with an absolute eps (1e-8, as
    # Adam's) moves the update of small gradients (|J| ~ 1e-3) by about 1e-5 relative.
    scale_equivariant: ClassVar[bool] = False
    ordered_tasks: ClassVar[bool] = True

    def __init__(
        self,
        n_tasks: int,
        tau: UnitInterval = 0.02,
        beta: UnitInterval = 0.999,
        eps: NonNegativeFloat = 1e-8,
        log_losses: bool = False,
    ) -> None:
        super().__init__(n_tasks, log_losses=log_losses)
        if not (0.0 <= tau <= 1.0 and 0.0 <= beta < 1.0 and eps >= 0.0):
            raise ValueError(f"need 0 <= tau <= 1, 0 <= beta < 1, eps >= 0: {tau}, {beta}, {eps}")
        self.tau, self.beta, self.eps = tau, beta, eps
        self.register_buffer("sq_norm_ema", torch.zeros(n_tasks, dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        last = torch.zeros(n_tasks, dtype=torch.float64)
        last[0] = 1.0
        self.register_buffer("last_weights", last)

    def _scales(self, sq_norms: Tensor) -> Tensor:
        """Update the EMA of the squared norms; return ``s = 1 / sqrt(v^ + eps)`` (0 where
        ``v^ + eps = 0``: a gradient that was always zero)."""
        self.steps += 1
        ema = self.beta * self.sq_norm_ema.cpu() + (1.0 - self.beta) * sq_norms
        self.sq_norm_ema.copy_(ema.to(self.sq_norm_ema))
        denom = (ema / (1.0 - self.beta ** int(self.steps)) + self.eps).sqrt()
        return torch.where(denom > 0, 1.0 / denom.clamp_min(1e-300), torch.zeros_like(denom))

    def weights(self, gramian: Tensor, losses: Tensor) -> Tensor:
        g = gramian.detach().cpu().double()
        if not bool(torch.isfinite(g).all()):
            return self.fallback(self.last_weights.cpu().clone()).to(gramian)
        g = (g + g.T) / 2.0
        sq_norms = g.diagonal().clone()
        scales = self._scales(sq_norms)
        w = torch.zeros_like(scales)
        if sq_norms[0] > 0:
            normalised = g * scales[:, None] * scales[None, :]
            taus = np.full(self.n_tasks - 1, self.tau)
            mu = pcd_multipliers(normalised.numpy(), taus)
            v = torch.zeros_like(scales)
            v[0] = 1.0
            if mu is not None:
                v[1:] = torch.from_numpy(mu)
            sq_direction = v @ normalised @ v
            magnitude = (v.abs() @ normalised.diagonal().clamp_min(0.0).sqrt()) ** 2
            if sq_direction > 10.0 * torch.finfo(torch.float64).eps * magnitude:
                w = v * scales * (sq_norms[0] / sq_direction).sqrt()
        self.last_weights.copy_(w.to(self.last_weights))
        return w.to(gramian)
