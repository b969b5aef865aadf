"""UPGrad: the mean of the task gradients, each projected onto the dual cone of all of them."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from mtlbench.method import GramianWeighting, Scale, register
from mtlbench.methods._dual_cone import dual_cone_weights
from mtlbench.registry import NonNegativeFloat


@register("upgrad")
class UPGrad(GramianWeighting):
    """UPGrad (Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv
    2406.16232; TorchJD ``aggregation/_upgrad.py`` and LibMTL ``weighting/UPGrad.py``).

    Each task gradient ``g_i`` is projected onto the dual cone of all the task gradients,
    ``pi(g_i) = argmin {|x - g_i| : g_k . x >= 0 for all k}``, and the update is the mean of the
    projections (``scale = "mean"``)::

        d = (1/K) sum_i pi(g_i) = J^T w,     w = (1/K) sum_i v_i,
        v_i = argmin_{v >= e_i} v^T G v      (Proposition 1; see :func:`dual_cone_weights`)

    Since every ``pi(g_i)`` lies in the convex dual cone, so does their mean: ``g_k . d >= 0`` for
    every task (``non_conflicting``). As TorchJD, the QPs are solved on the normalised Gramian
    ``G / tr(G)``, replaced by 0 when ``tr(G) < norm_eps`` (then ``w = 1/K``: with tiny
    gradients, below ``norm_eps = 1e-4`` in squared Frobenius norm, UPGrad is the plain mean;
    this is TorchJD's behaviour, kept for fidelity), plus ``reg_eps I``.

    Differences from TorchJD: TorchJD solves each QP with ``quadprog``, which needs a positive
    definite matrix, hence its ``reg_eps = 1e-4``; that regularisation lets the update conflict
    with a task by up to ``reg_eps`` (relative). Our solver (an exact NNLS on a square-root
    factor of ``G``) handles singular Gramians, so ``reg_eps`` defaults to 0 (measured against a
    small regularisation in docs/methods.md, "Precision": with the update formed in float64, the
    unregularised projection is permutation-invariant to 5e-11) and the
    no-conflict guarantee holds to rounding; set ``reg_eps = 1e-4`` to reproduce TorchJD's
    numbers. A non-finite Gramian or a failed solve reuses the last weights (``1/K`` at first)
    and is counted in ``fallbacks``.
    """

    summary: ClassVar[str] = "Projects each task gradient onto the gradients' dual cone."
    paper: ClassVar[str] = (
        "Quinton & Rey, Jacobian Descent for Multi-Objective Optimization (arXiv 2406.16232)"
    )
    scale: ClassVar[Scale] = "mean"
    linear_under_scaling: ClassVar[bool] = True
    non_conflicting: ClassVar[bool] = True

    def __init__(
        self,
        n_tasks: int,
        norm_eps: NonNegativeFloat = 1e-4,
        reg_eps: NonNegativeFloat = 0.0,
        log_losses: bool = False,
    ) -> None:
        super().__init__(n_tasks, log_losses=log_losses)
        if norm_eps < 0 or reg_eps < 0:
            raise ValueError("norm_eps and reg_eps must be non-negative")
        self.norm_eps = norm_eps
        self.reg_eps = reg_eps
        self.register_buffer(
            "last_weights", torch.full((n_tasks,), 1.0 / n_tasks, dtype=torch.float64)
        )

    def weights(self, gramian: Tensor, losses: Tensor) -> Tensor:
        g = gramian.detach().cpu().double().numpy()
        k = g.shape[0]
        if not np.isfinite(g).all():
            return self.fallback(self.last_weights.clone()).to(gramian)
        trace = float(np.trace(g))
        g = np.zeros_like(g) if trace < self.norm_eps else g / trace
        g = g + self.reg_eps * np.eye(k)
        try:
            v = dual_cone_weights(g, np.eye(k) / k)
        except (RuntimeError, ValueError, np.linalg.LinAlgError):
            return self.fallback(self.last_weights.clone()).to(gramian)
        w = torch.from_numpy(v.sum(axis=0))
        if not bool(torch.isfinite(w).all()):
            return self.fallback(self.last_weights.clone()).to(gramian)
        self.last_weights.copy_(w.to(self.last_weights))
        return w.to(gramian)
