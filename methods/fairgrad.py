"""FairGrad: alpha-fair task weights, the solution of ``G w = w^(-1/alpha)``.

The Newton solver :func:`alpha_fair_weights` lives in :mod:`mtlbench.methods._alpha_fair`, shared
with Nash-MTL (``alpha = 1``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from mtlbench.method import GramianWeighting, Scale, register
from mtlbench.methods._alpha_fair import alpha_fair_weights
from mtlbench.registry import PositiveFloat, PositiveInt
from mtlbench.space import Choice


@register("fairgrad")
class FairGrad(GramianWeighting):
    """FairGrad (Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024,
    arXiv 2402.15638; code ``OptMN-Lab/fairgrad`` ``methods/weight_methods.py::FairGrad`` and
    LibMTL ``weighting/FairGrad.py``).

    The alpha-fair allocation of the update ``d = sum_k w_k g_k`` gives the weights that solve,
    with ``G = J J^T``::

        G w = w^(-1/alpha)        (elementwise, w > 0)

    ``alpha = 1`` is proportional fairness, Nash-MTL's bargaining solution; ``alpha -> inf``
    approaches max-min fairness. The reference solves it with ``scipy.optimize.least_squares``
    on the residual ``G w - w^(-1/alpha)`` from ``w = 1/K`` with bounds ``(0, inf)``; we solve the
    same equation exactly with the Newton method of :func:`alpha_fair_weights` (it is the
    stationarity condition of a strictly convex function), stopping on a relative residual of
    ``1e-8`` instead of ``least_squares``'s default tolerances.

    Defaults: ``alpha = 2``, the value of every ``run.sh`` in the official repository; the
    parser default of that repository and LibMTL's ``FairGrad_alpha`` is 1.0 (which is the
    Nash-MTL fixed point). The official code multiplies the update by K "to match the sum loss"
    (``reference_scale = "sum"``); LibMTL does not. It trains the task heads on the unweighted
    losses (the trainer's ``head_grads = "unit"`` policy); our default ``"weighted"`` policy gives
    them ``w``.

    When no solution exists (a zero task gradient, or a Pareto-stationary point where a
    non-negative combination of the gradients vanishes) or the solve fails (non-finite Gramian,
    no convergence in ``max_iter`` Newton steps), the last weights (uniform ``1/K`` at first) are
    used and counted in ``fallbacks``.

    Search space: ``alpha``, 2 (every official ``run.sh``) and 1 (its parser default and LibMTL's,
    Nash-MTL's solution), with 0.5 and 5 on either side (ours).
    """

    summary: ClassVar[str] = "Shares the improvement among the tasks by alpha-fairness."
    search_space = {"alpha": Choice(0.5, 1.0, 2.0, 5.0)}

    paper: ClassVar[str] = (
        "Ban & Ji, Fair Resource Allocation in Multi-Task Learning, ICML 2024 (arXiv 2402.15638)"
    )
    scale: ClassVar[Scale] = "mean"
    reference_scale: ClassVar[Scale | None] = "sum"
    # d . g_k = (G w)_k = w_k^(-1/alpha) > 0 at the solution, but not declared: no solution
    # exists at a Pareto-stationary input or with a zero task gradient, where the last weights
    # are reused (the reference's behaviour), and those may conflict (conformance kit).
    non_conflicting: ClassVar[bool] = False

    def __init__(
        self,
        n_tasks: int,
        alpha: PositiveFloat = 2.0,
        max_iter: PositiveInt = 50,
        log_losses: bool = False,
    ) -> None:
        super().__init__(n_tasks, log_losses=log_losses)
        if alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        self.alpha = alpha
        self.max_iter = max_iter
        self.register_buffer(
            "last_weights", torch.full((n_tasks,), 1.0 / n_tasks, dtype=torch.float64)
        )

    def weights(self, gramian: Tensor, losses: Tensor) -> Tensor:
        sol = alpha_fair_weights(gramian.detach().cpu().double().numpy(), self.alpha, self.max_iter)
        if sol.weights is None or not sol.converged:
            return self.fallback(self.last_weights.clone()).to(gramian)
        w = torch.from_numpy(sol.weights).to(self.last_weights)
        self.last_weights.copy_(w)
        return w.to(gramian)
