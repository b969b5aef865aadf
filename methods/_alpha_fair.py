"""The alpha-fair weights ``G w = w^(-1/alpha)`` (FairGrad; Nash-MTL at ``alpha = 1``), by a damped
Newton method: shared maths of :mod:`mtlbench.methods.fairgrad` and
:mod:`mtlbench.methods.nash_mtl` (Ban & Ji, "Fair Resource Allocation in Multi-Task Learning",
ICML 2024; Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    curvature = float(x @ g @ x)
    if not curvature > 0.0:  # a non-negative combination of the gradients vanishes: stationary
        return FairSolution(None, 0, float("inf"), False)
    x *= (float((x ** (1.0 - p)).sum()) / curvature) ** (1.0 / (1.0 + p))

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
