"""GradVac: gradient vaccine, pairwise corrections towards EMA targets of the gradient cosines."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from mtlbench.method import GramianWeighting, Scale, register
from mtlbench.registry import UnitInterval
from mtlbench.space import Choice

_EPS = 1e-8  # LibMTL's guard in the cosine and in the correction's denominator


@register("gradvac")
class GradVac(GramianWeighting):
    """GradVac (Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine: Investigating and Improving
    Multi-task Optimization in Massively Multilingual Models", ICLR 2021, arXiv 2010.05874), as
    LibMTL ``weighting/GradVac.py`` (no official code; ``SamsungLabs/MTL`` copies LibMTL).

    For each task ``i`` (a copy ``p_i = g_i``), for the other tasks ``j`` in a random order::

        rho_ij = p_i . g_j / (|p_i| |g_j| + 1e-8)
        if rho_ij < phi_ij:
            p_i += g_j |p_i| (phi_ij sqrt(1 - rho_ij^2) - rho_ij sqrt(1 - phi_ij^2))
                       / (|g_j| sqrt(1 - phi_ij^2) + 1e-8)
        phi_ij <- (1 - beta) phi_ij + beta rho_ij          (phi = 0 at start)

    and the update is ``sum_i p_i`` (``scale = "sum"``). With ``phi = 0`` a conflicting pair is
    made orthogonal, as PCGrad; later the target is the EMA ``phi`` of the observed cosines.

    Every quantity is an inner product of task gradients, so the method runs on the Gramian:
    ``p_i = sum_m C_im g_m`` with ``p_i . g_j = (C G)_ij`` and ``|p_i|^2 = (C G C^T)_ii``; the
    task weights are the column sums of ``C`` (``update = w^T J``), and the K sequential passes
    over the partners are vectorised over ``i`` (each ``i`` has its own order). That also makes
    GradVac usable with representation gradients.

    ``beta = 0.5`` is LibMTL's ``GradVac_beta`` default. LibMTL's ``group_type`` 1 and 2 (one
    target per layer or per parameter tensor) are not available: methods see the Jacobian of all
    shared parameters without their boundaries; ours is its ``group_type = 0`` ("whole_model",
    its default). The order of the partners is drawn from torch's global generator
    (``stochastic``). ``phi`` is a buffer. A non-finite Gramian reuses the last weights (ones at
    first) without touching ``phi`` and is counted in ``fallbacks``.

    Search space: ``beta`` (the EMA of the target cosine): the paper's 1e-2 (UNVERIFIED) and
    LibMTL's 0.5, with 0.1 between.
    """

    summary: ClassVar[str] = "Pulls task gradient pairs towards a target cosine similarity."
    search_space = {"beta": Choice(0.01, 0.1, 0.5)}

    paper: ClassVar[str] = (
        "Wang et al., Gradient Vaccine: Investigating and Improving Multi-task Optimization in "
        "Massively Multilingual Models, ICLR 2021 (arXiv 2010.05874)"
    )
    scale: ClassVar[Scale] = "sum"
    stochastic: ClassVar[bool] = True
    # Not scale_equivariant: LibMTL's absolute guards (+1e-8 in the cosine and the correction's
    # denominator) move the update of small gradients (|J| ~ 1e-3) by about 1e-4 relative.
    scale_equivariant: ClassVar[bool] = False

    def __init__(self, n_tasks: int, beta: UnitInterval = 0.5, log_losses: bool = False) -> None:
        super().__init__(n_tasks, log_losses=log_losses)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        self.beta = beta
        self.register_buffer("targets", torch.zeros(n_tasks, n_tasks, dtype=torch.float64))
        self.register_buffer("last_weights", torch.ones(n_tasks, dtype=torch.float64))

    def partner_order(self) -> Tensor:
        """(K, K-1): row ``i`` lists the other tasks in a random order (torch's global RNG)."""
        k = self.n_tasks
        keys = torch.rand(k, k)
        keys.fill_diagonal_(2.0)  # each task last in its own row, then dropped
        return keys.argsort(dim=1)[:, : k - 1]

    def weights(self, gramian: Tensor, losses: Tensor) -> Tensor:
        order = self.partner_order().numpy()
        g = gramian.detach().cpu().double().numpy()
        if not np.isfinite(g).all():
            return self.fallback(self.last_weights.clone()).to(gramian)
        coef, targets = gradvac_pass(g, order, self.targets.detach().cpu().numpy(), self.beta)
        weights = torch.from_numpy(coef.sum(axis=0))
        if not bool(torch.isfinite(weights).all()):
            return self.fallback(self.last_weights.clone()).to(gramian)
        self.targets.copy_(torch.from_numpy(targets))
        self.last_weights.copy_(weights)
        return weights.to(gramian)


def gradvac_pass(
    g: np.ndarray, order: np.ndarray, targets: np.ndarray, beta: float
) -> tuple[np.ndarray, np.ndarray]:
    """One GradVac step on the Gramian ``g``: the coefficients ``C`` (``p_i = sum_m C_im g_m``)
    and the updated cosine targets. ``order[i]`` lists the partners of task ``i`` in turn.

    ``C G`` and ``|p_i|^2`` are updated incrementally (a correction ``p_i += c g_j`` adds
    ``c G_j`` to row ``i`` of ``C G`` and ``2 c p_i . g_j + c^2 G_jj`` to ``|p_i|^2``), so a step
    costs O(K^3) in all.
    """
    k = g.shape[0]
    targets = targets.copy()
    coef = np.eye(k)
    cg = g.copy()  # C G
    p_sq = np.clip(np.diag(g).copy(), 0.0, None)  # |p_i|^2
    g_norms = np.sqrt(np.clip(np.diag(g), 0.0, None))
    rows = np.arange(k)
    for step in range(k - 1):
        j = order[:, step]
        p_dot_g = cg[rows, j]
        p_norm = np.sqrt(np.clip(p_sq, 0.0, None))
        g_norm = g_norms[j]
        rho = p_dot_g / (p_norm * g_norm + _EPS)
        phi = targets[rows, j]
        sin_rho = np.sqrt(np.clip(1.0 - rho * rho, 0.0, None))
        sin_phi = np.sqrt(np.clip(1.0 - phi * phi, 0.0, None))
        c = p_norm * (phi * sin_rho - rho * sin_phi) / (g_norm * sin_phi + _EPS)
        c = np.where(rho < phi, c, 0.0)
        coef[rows, j] += c
        p_sq = p_sq + 2.0 * c * p_dot_g + c * c * g[j, j]
        cg += c[:, None] * g[j, :]
        targets[rows, j] = (1.0 - beta) * phi + beta * rho
    return coef, targets
