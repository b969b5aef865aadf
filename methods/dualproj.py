"""DualProj: the mean of the task gradients, projected onto the dual cone of all of them."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from mtlbench.method import GramianWeighting, Scale, register
from mtlbench.methods._dual_cone import dual_cone_weights
from mtlbench.registry import NonNegativeFloat


@register("dualproj")
class DualProj(GramianWeighting):
    """DualProj (Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv
    2406.16232; TorchJD 0.18 ``aggregation.DualProj``): the preference-weighted combination of
    the task gradients, ``J^T u`` (``u = 1/K``, the mean, by default), projected onto the dual
    cone ``{x : g_k . x >= 0 for all k}``. This is Equation 11 of Lopez-Paz & Ranzato, "Gradient
    Episodic Memory for Continual Learning" (NeurIPS 2017), applied to the mean gradient::

        d = argmin {|x - J^T u| : J x >= 0} = J^T w,      w = argmin_{v >= u} v^T G v

    (Proposition 1 of Quinton & Rey; solved as UPGrad's projections, by an exact NNLS on a
    square-root factor of ``G``, :func:`mtlbench.methods._dual_cone.dual_cone_weights`). UPGrad
    projects each gradient and averages; DualProj averages and projects once, so it is cheaper
    (one QP) but not invariant to the tasks' relative scales. ``d`` lies in the dual cone: it
    conflicts with no task gradient (``non_conflicting``). The weights sum to at least ``sum u``
    (``scale = "mean"``).

    As TorchJD, the QP is solved on ``G / tr(G)``, replaced by 0 when ``tr(G) < norm_eps`` (the
    plain mean then), plus ``reg_eps I``. TorchJD's ``quadprog`` needs a positive definite matrix,
    hence its ``reg_eps = 1e-4``, which lets the update conflict with a task by up to that amount
    (relative); our solver handles singular Gramians, so ``reg_eps`` defaults to 0. Set
    ``reg_eps = 1e-4`` to reproduce TorchJD's numbers. ``pref_vector`` (K non-negative values)
    replaces ``u``, as TorchJD's. A non-finite Gramian or a failed solve reuse the last weights
    (``u`` at first), counted in ``fallbacks``.
    """

    summary: ClassVar[str] = "Projects the mean gradient onto the dual cone of the task gradients."
    paper: ClassVar[str] = (
        "Quinton & Rey, Jacobian Descent for Multi-Objective Optimization (arXiv 2406.16232); "
        "Lopez-Paz & Ranzato, Gradient Episodic Memory for Continual Learning, NeurIPS 2017"
    )
    scale: ClassVar[Scale] = "mean"
    non_conflicting: ClassVar[bool] = True

    def __init__(
        self,
        n_tasks: int,
        norm_eps: NonNegativeFloat = 1e-4,
        reg_eps: NonNegativeFloat = 0.0,
        pref_vector: list[float] | None = None,
        log_losses: bool = False,
    ) -> None:
        super().__init__(n_tasks, log_losses=log_losses)
        if norm_eps < 0 or reg_eps < 0:
            raise ValueError("norm_eps and reg_eps must be non-negative")
        pref = [1.0 / n_tasks] * n_tasks if pref_vector is None else list(pref_vector)
        if len(pref) != n_tasks or min(pref) < 0:
            raise ValueError(f"pref_vector needs {n_tasks} non-negative values, got {pref}")
        self.norm_eps = norm_eps
        self.reg_eps = reg_eps
        self.register_buffer("pref", torch.tensor(pref, dtype=torch.float64), persistent=False)
        self.register_buffer("last_weights", self.pref.clone())

    def weights(self, gramian: Tensor, losses: Tensor) -> Tensor:
        g = gramian.detach().cpu().double().numpy()
        if not np.isfinite(g).all():
            return self.fallback(self.last_weights.clone()).to(gramian)
        trace = float(np.trace(g))
        g = np.zeros_like(g) if trace < self.norm_eps else g / trace
        g = g + self.reg_eps * np.eye(g.shape[0])
        try:
            w = torch.from_numpy(dual_cone_weights(g, self.pref.cpu().numpy()))
        except (RuntimeError, ValueError, np.linalg.LinAlgError):
            return self.fallback(self.last_weights.clone()).to(gramian)
        if not bool(torch.isfinite(w).all()):
            return self.fallback(self.last_weights.clone()).to(gramian)
        self.last_weights.copy_(w.to(self.last_weights))
        return w.to(gramian)
