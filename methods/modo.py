"""MoDo: stochastic MGDA with one projected-gradient step on the simplex weights per step."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from mtlbench.method import GramianWeighting, Scale, register
from mtlbench.methods._min_norm import project_to_simplex
from mtlbench.registry import NonNegativeFloat, PositiveFloat
from mtlbench.space import Choice


@register("modo")
class MoDo(GramianWeighting):
    """MoDo, multi-objective gradient with double sampling (Chen, Fernando, Ying & Chen,
    "Three-Way Trade-Off in Multi-Objective Learning: Optimization, Generalization and
    Conflict-Avoidance", NeurIPS 2023 / JMLR 2024, arXiv 2305.20057, Eq. 2.9), as TorchJD 0.18
    ``aggregation.MoDoWeighting`` and LibMTL ``weighting/MoDo.py`` (from the official
    ``heshandevaka/Trade-Off-MOL``).

    The simplex weights ``lambda`` (``1/K`` at start) are kept from step to step; each step
    takes one projected-gradient step on ``1/2 |J^T lambda|^2 + rho/2 |lambda|^2`` and the update
    uses the new weights::

        lambda <- Proj_simplex(lambda - gamma (G lambda + rho lambda)),     d = J^T lambda

    ``d`` is a convex combination (``scale = "mean"``). Defaults are TorchJD's, ``gamma = 0.1``,
    ``rho = 0.1``; LibMTL's are ``gamma = 1e-3`` (``--MoDo_gamma``), ``rho = 0.1``.

    **Gradient samples.** The paper takes ``G = J_1 J_2^T`` from two independent mini-batches
    (an unbiased estimate of the Gramian; LibMTL and ``three_grads`` also a third for ``d``).
    The engine gives one Jacobian per step, so here ``G = J J^T`` of the step's batch: the
    single-sample variant that TorchJD warns loses the convergence guarantee, as SDMGrad here.
    The heads get ``lambda`` under the default ``head_grads = "weighted"`` (TorchJD's example
    back-propagates ``lambda . l``); LibMTL trains them on the unweighted losses (``unit``).

    ``lambda`` is a buffer (float64). A non-finite Gramian (or step) keeps it, returns it and is
    counted in ``fallbacks``.

    Search space: ``gamma`` (the weights' step), LibMTL's 1e-3 and TorchJD's 0.1, with 0.01 between.
    """

    summary: ClassVar[str] = "One projected step per batch on the simplex weights (MoDo)."
    search_space = {"gamma": Choice(0.001, 0.01, 0.1)}

    paper: ClassVar[str] = (
        "Chen, Fernando, Ying & Chen, Three-Way Trade-Off in Multi-Objective Learning: "
        "Optimization, Generalization and Conflict-Avoidance, NeurIPS 2023 (arXiv 2305.20057)"
    )
    scale: ClassVar[Scale] = "mean"

    def __init__(
        self,
        n_tasks: int,
        gamma: PositiveFloat = 0.1,
        rho: NonNegativeFloat = 0.1,
        log_losses: bool = False,
    ) -> None:
        super().__init__(n_tasks, log_losses=log_losses)
        if gamma <= 0 or rho < 0:
            raise ValueError(f"need gamma > 0 and rho >= 0, got gamma={gamma}, rho={rho}")
        self.gamma = gamma
        self.rho = rho
        self.register_buffer("lambd", torch.full((n_tasks,), 1.0 / n_tasks, dtype=torch.float64))

    def weights(self, gramian: Tensor, losses: Tensor) -> Tensor:
        lambd = self.lambd.cpu()
        g = gramian.detach().cpu().double()
        if not bool(torch.isfinite(g).all()):
            return self.fallback(lambd.clone()).to(gramian)
        step = lambd - self.gamma * (g @ lambd + self.rho * lambd)
        try:
            lambd = torch.from_numpy(project_to_simplex(step.numpy()))
        except ValueError:  # the step overflowed
            return self.fallback(lambd.clone()).to(gramian)
        self.lambd.copy_(lambd.to(self.lambd))
        return lambd.to(gramian)
