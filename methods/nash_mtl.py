"""Nash-MTL: the Nash bargaining solution of the tasks, ``G alpha = 1 / alpha``."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from mtlbench.method import GramianWeighting, Scale, register
from mtlbench.methods._alpha_fair import alpha_fair_weights
from mtlbench.registry import PositiveInt
from mtlbench.space import Choice


@register("nash_mtl")
class NashMTL(GramianWeighting):
    """Nash-MTL (Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022,
    arXiv 2202.01017; code ``AvivNavon/nash-mtl`` ``methods/weight_methods.py::NashMTL``, copied
    into FAMO and LibMTL ``weighting/Nash_MTL.py``).

    The bargaining solution ``d = sum_k alpha_k g_k`` maximises ``sum_k log(d . g_k)`` in a ball;
    its weights solve, with ``G = J J^T``::

        G alpha = 1 / alpha        (elementwise, alpha > 0)

    so ``d . g_k = 1 / alpha_k`` and ``|d|^2 = alpha^T G alpha = K``: the update has norm
    ``sqrt(K)`` whatever the scale of the gradients, and large gradients get small weights (the
    tiny weights at large losses of nash-mtl issue 13).

    **Solver.** The reference runs up to ``optim_niter = 20`` CCCP steps, each a convex problem
    solved by cvxpy/ECOS, on ``G / |G|_F``; the factor ``|G|_F`` re-enters its constraint
    ``alpha_k (G alpha)_k >= 1``, so its fixed point is that of the *raw* Gramian, as here (we
    checked with cvxpy 1.9 / ECOS: on random 2- to 5-task Gramians one CCCP step from
    ``alpha = 1`` lands within about ``1e-6`` (relative) of the solution below). Its stop test
    ``|G alpha - 1/alpha| < 1e-3`` compares the normalised ``G`` with raw-scale weights and only
    fires when ``|G|_F`` is close to 1; the other test, a change of ``alpha`` below ``1e-6``,
    ends the loop. We solve the same equation without cvxpy: it is the stationarity condition
    of the strictly convex ``1/2 alpha^T G alpha - sum_k log alpha_k``, minimised by a damped
    Newton method (:func:`mtlbench.methods._alpha_fair.alpha_fair_weights`, FairGrad's equation at
    its ``alpha = 1``) on the Frobenius-normalised Gramian, to a relative residual
    ``max_k |alpha_k (G alpha)_k - 1|`` of ``1e-8``, in at most ``optim_niter`` Newton steps
    (typically 5 to 13 at K = 40). The reference warm-starts from the previous weights; we start
    from the solution for orthogonal gradients, so the weights are a function of ``G`` alone.

    **Robustness** (nash-mtl issue 15: cvxpy raises "Parameter value must be real" on NaN/inf).
    No solution exists when a task gradient is zero or a non-negative combination of the
    gradients vanishes (a Pareto-stationary point); the reference's ECOS solve then fails and it
    silently keeps its previous weights. Here a non-finite Gramian, a problem without solution
    or a solve that does not converge reuses the last weights (ones at first, the reference's
    start) and is counted in ``fallbacks``.

    ``update_weights_every > 1`` reuses the last weights between solves, as the reference. With
    our engine the Jacobian is still computed every step, so the reference's saving of the
    per-task backward passes is not reproduced. The weights multiply the gradients as they are
    (``scale = "sum"``, no rescaling in the reference); the reference trains the heads with the
    same weights (the default ``head_grads = "weighted"``) and clips the shared gradient to norm
    ``max_norm = 1`` after backward: that is the trainer's ``clip_grad_norm`` policy, not a
    hyper-parameter here.

    Search space: ``update_weights_every``, 1 (every step, the default) and the slower schedules of
    the paper's Nash-MTL-50 / -100 variants (MT10; from memory: UNVERIFIED), with 5 between.
    """

    summary: ClassVar[str] = "The Nash bargaining solution among the task gradients."
    search_space = {"update_weights_every": Choice(1, 5, 50, 100)}

    paper: ClassVar[str] = (
        "Navon et al., Multi-Task Learning as a Bargaining Game, ICML 2022 (arXiv 2202.01017)"
    )
    scale: ClassVar[Scale] = "sum"
    # d . g_k = (G alpha)_k = 1 / alpha_k > 0 at the solution, but not declared: no solution
    # exists at a Pareto-stationary input or with a zero task gradient, where the last weights
    # are reused (the reference's behaviour), and those may conflict (conformance kit).
    non_conflicting: ClassVar[bool] = False

    def __init__(
        self,
        n_tasks: int,
        update_weights_every: PositiveInt = 1,
        optim_niter: PositiveInt = 20,
        log_losses: bool = False,
    ) -> None:
        super().__init__(n_tasks, log_losses=log_losses)
        if update_weights_every < 1:
            raise ValueError(f"update_weights_every must be >= 1, got {update_weights_every}")
        if optim_niter < 1:
            raise ValueError(f"optim_niter must be >= 1, got {optim_niter}")
        self.update_weights_every = update_weights_every
        self.optim_niter = optim_niter
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("last_weights", torch.ones(n_tasks, dtype=torch.float64))

    def weights(self, gramian: Tensor, losses: Tensor) -> Tensor:
        solve = int(self.step) % self.update_weights_every == 0
        self.step += 1
        if not solve:
            return self.last_weights.clone().to(gramian)
        sol = alpha_fair_weights(gramian.detach().cpu().double().numpy(), 1.0, self.optim_niter)
        if sol.weights is None or not sol.converged:
            return self.fallback(self.last_weights.clone()).to(gramian)
        w = torch.from_numpy(sol.weights).to(self.last_weights)
        self.last_weights.copy_(w)
        return w.to(gramian)
