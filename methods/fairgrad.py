"""FairGrad: alpha-fair task weights, the solution of ``G w = w^(-1/alpha)``.

Also home of :func:`alpha_fair_weights`, the Newton solver that Nash-MTL (``alpha = 1``) reuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from mtlbench.method import GramianWeighting, Scale, register
from mtlbench.registry import PositiveFloat, PositiveInt
from mtlbench.space import Choice

# A task whose squared gradient norm is below this fraction of the largest one counts as a zero
# gradient: G w = w^(-p) then has no solution (its weight would be infinite).
_ZERO_TASK = 1e-24
_ARMIJO = 1e-4  # sufficient-decrease constant of the backtracking line search
_TO_BOUNDARY = 0.95  # never step more than this fraction of the way to w_k = 0
_FULL_STEP = 1e-6  # Newton decrement (squared) below which the full step is taken


@dataclass(frozen=True)
class FairSolution:
    """``weights`` (None when the problem has no solution), iterations, the final relative
    residual ``max_k |w_k^p (G w)_k - 1|`` and whether it met the tolerance."""

    weights: np.ndarray | None
    iterations: int
    residual: float
    converged: bool


def _barrier(x: np.ndarray, p: float) -> float:
    """``sum_k phi(x_k)`` with ``phi' = x^(-p)``: ``log x`` for ``p = 1``, else
    ``x^(1-p) / (1-p)``."""
    if p == 1.0:
        return float(np.log(x).sum())
    return float((x ** (1.0 - p)).sum() / (1.0 - p))


def alpha_fair_weights(
    gramian: np.ndarray, alpha: float, max_iter: int = 50, tol: float = 1e-8
) -> FairSolution:
    """Solve ``G w = w^(-1/alpha)`` (elementwise, ``w > 0``) by a damped Newton method.

    With ``p = 1/alpha`` the equation is the stationarity condition of the strictly convex

        f(w) = 1/2 w^T G w - sum_k phi(w_k),    phi(w) = log w (p = 1), w^(1-p)/(1-p) (p != 1)

    (Hessian ``G + p diag(w^(-p-1))``, positive definite for ``w > 0``), so the solution is
    unique when it exists. It exists unless some non-negative, non-zero ``v`` has ``G v = 0`` (a
    zero task gradient, or a non-negative combination of the gradients that cancels: a Pareto
    stationary point); then ``f`` is unbounded below: ``weights`` is None for a zero gradient
    (or a non-finite ``G``), and otherwise the iterates run off and ``converged`` is False.

    The problem is solved on ``G / |G|_F`` and the weights rescaled by ``|G|_F^(-1/(1+p))``,
    which is exact: if ``(G/c) x = x^(-p)`` then ``w = c^(-1/(1+p)) x`` solves ``G w = w^(-p)``.
    The start is the solution for orthogonal gradients, ``x_k = G_kk^(-1/(1+p))``, rescaled to
    the best multiple of itself. Each step solves the Newton system in the variables scaled by
    ``D = diag(x^((1+p)/2))``, i.e. ``(D G D + p I) s = -D grad f``, which is well conditioned
    whatever the spread of the gradient norms; the step ``x + D s`` is cut to stay inside
    ``x > 0`` and backtracked until ``f`` decreases enough (Armijo). Stops when the relative
    residual ``max_k |x_k^p (G x)_k - 1|`` is below ``tol``.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    p = 1.0 / alpha
    gram = np.asarray(gramian, dtype=np.float64)
    k = gram.shape[0]
    if gram.shape != (k, k) or k == 0 or not np.isfinite(gram).all():
        return FairSolution(None, 0, float("inf"), False)
    gram = (gram + gram.T) / 2.0
    scale = float(np.linalg.norm(gram))
    diag = gram.diagonal()
    if scale == 0.0 or (diag <= _ZERO_TASK * diag.max()).any():
        return FairSolution(None, 0, float("inf"), False)
    g = gram / scale
    x = np.diag(g) ** (-1.0 / (1.0 + p))
    # Best multiple t x: t^(1+p) = sum x^(1-p) / x^T G x.
    x *= (float((x ** (1.0 - p)).sum()) / float(x @ g @ x)) ** (1.0 / (1.0 + p))

    def objective(y: np.ndarray) -> float:
        return 0.5 * float(y @ g @ y) - _barrier(y, p)

    gx = g @ x
    fx = objective(x)
    residual = float(np.abs(x**p * gx - 1.0).max())
    it = 0
    while residual > tol and it < max_iter:
        it += 1
        d = x ** ((1.0 + p) / 2.0)
        grad = gx - x ** (-p)
        hess = d[:, None] * g * d[None, :] + p * np.eye(k)
        try:
            s = np.linalg.solve(hess, -d * grad)
        except np.linalg.LinAlgError:
            break
        step = d * s
        decrement = -float(grad @ step)  # Newton decrement squared, >= 0
        ratio = step / x
        t = 1.0
        if (ratio < 0).any():
            t = min(1.0, _TO_BOUNDARY / float(-ratio.min()))
        while True:
            candidate = x + t * step
            f_candidate = objective(candidate)
            # Near the solution (small decrement) f cannot resolve the decrease in floating
            # point: take the (boundary-cut) Newton step as it is.
            if decrement < _FULL_STEP or f_candidate <= fx - _ARMIJO * t * decrement:
                break
            if t < 1e-12:
                break
            t *= 0.5
        if not np.isfinite(f_candidate) or t < 1e-12:
            break
        x, fx = candidate, f_candidate
        gx = g @ x
        residual = float(np.abs(x**p * gx - 1.0).max())
    if not np.isfinite(x).all():
        return FairSolution(None, it, float("inf"), False)
    w = x * scale ** (-1.0 / (1.0 + p))
    return FairSolution(w, it, residual, residual <= tol)


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
    # d . g_k = (G w)_k = w_k^(-1/alpha) > 0 at the solution (not for fallback weights).
    non_conflicting: ClassVar[bool] = True

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
