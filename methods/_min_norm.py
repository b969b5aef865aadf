"""The min-norm point of the convex hull of K task gradients, from their K x K Gramian.

Solves ``min_{w in simplex} w^T G w`` with ``G = J J^T`` (so ``d = J^T w`` is the shortest vector
in the convex hull of the rows of ``J``). Shared by MGDA and by any method that needs the same
sub-problem (MoCo, CAGrad variants, ...); it sees only the Gramian, in float64 on the CPU.

The algorithm is the one of the code "based on the official implementation" of Sener & Koltun,
"Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018 (arXiv 1810.04650),
``MinNormSolver.find_min_norm_element`` as copied into nash-mtl, FAMO and LDC-MTL
(methods.md §6.2), re-written here on the Gramian:

1. start from the best pair ``(i, j)``: the closed form of the 2-task problem (below) for every
   pair, keep the smallest ``|c g_i + (1 - c) g_j|^2`` (first one on ties, in ``(i, j)`` order);
2. projected-gradient iterations: from ``w``, move along ``-(G w)`` minus its mean up to the first
   simplex boundary the move meets, project onto the simplex, then do an exact line search on the
   segment between ``w`` and that point (the 2-task closed form again); stop when the line
   search moves ``w`` by less than ``tol = 1e-5`` in L1, or after ``max_iter = 250`` iterations.

The 2-task closed form (Sener & Koltun, Algorithm 1; the CAGrad toy's ``mgd``)::

    c* = clip((g22 - g12) / (g11 + g22 - 2 g12), 0, 1)
    |c* g1 + (1 - c*) g2|^2 = g22 + c* (g12 - g22)

Differences from the reference code, all deliberate:

* The reference returns ``0.999`` / ``0.001`` instead of ``1`` / ``0`` when the minimum of a
  segment is at an end; we return the exact end, so that the line search is exact and the
  2-task solution is the true minimiser (the weights differ by at most 1e-3).
* The reference starts its pair search from a bound of ``1e8`` and crashes when every pairwise
  cost exceeds it (very large gradients); we start from infinity.
* The reference never increments its iteration counter, so ``MAX_ITER`` is never reached; we
  stop after ``max_iter`` iterations and report ``converged=False`` (the iterate is feasible).
* ``G`` is symmetrised, ``(G + G^T) / 2``, against rounding in ``J J^T``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

MAX_ITER = 250
STOP_CRIT = 1e-5
_STEP_FLOOR = 1e-7  # boundary distances below this are ignored (as in the reference)


@dataclass(frozen=True)
class MinNormResult:
    """``weights`` (K, float64, on the simplex), ``norm2 = w^T G w``, iterations and convergence."""

    weights: Tensor
    norm2: float
    iterations: int
    converged: bool


def min_norm_2(g11: float, g12: float, g22: float) -> tuple[float, float]:
    """``(c, cost)`` minimising ``|c x1 + (1 - c) x2|^2`` over ``c in [0, 1]``, given the inner
    products ``g11 = <x1, x1>``, ``g12 = <x1, x2>``, ``g22 = <x2, x2>``."""
    if g12 >= g11:
        return 1.0, g11
    if g12 >= g22:
        return 0.0, g22
    c = (g22 - g12) / (g11 + g22 - 2.0 * g12)
    return c, g22 + c * (g12 - g22)


def project_to_simplex(y: np.ndarray) -> np.ndarray:
    """Euclidean projection of ``y`` onto ``{w : w >= 0, sum w = 1}`` (sort-based, exact)."""
    if not np.isfinite(y).all():
        raise ValueError("cannot project a non-finite point onto the simplex")
    u = np.sort(y)[::-1]
    cumulative = np.cumsum(u) - 1.0
    ranks = np.arange(1, y.size + 1)
    positive = u - cumulative / ranks > 0
    rho = int(np.nonzero(positive)[0][-1])
    threshold = cumulative[rho] / (rho + 1)
    return np.maximum(y - threshold, 0.0)


def _best_pair(gram: np.ndarray) -> tuple[np.ndarray, float]:
    k = gram.shape[0]
    best, best_cost = (0, 1, 1.0), np.inf
    for i in range(k):
        for j in range(i + 1, k):
            c, cost = min_norm_2(gram[i, i], gram[i, j], gram[j, j])
            if cost < best_cost:
                best, best_cost = (i, j, c), cost
    i, j, c = best
    w = np.zeros(k)
    w[i], w[j] = c, 1.0 - c
    return w, float(best_cost)


def _next_point(w: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Move ``w`` along ``direction`` (made to sum to 0) up to the first boundary, then project."""
    step_dir = direction - direction.mean()
    neg, pos = step_dir < 0, step_dir > 0
    to_zero = -w[neg] / step_dir[neg]
    to_one = (1.0 - w[pos]) / step_dir[pos]
    to_zero = to_zero[to_zero > _STEP_FLOOR]
    to_one = to_one[to_one > _STEP_FLOOR]
    # As the reference: the step is the nearest boundary; 1 only when no coordinate heads to 0.
    t = float(to_zero.min()) if to_zero.size else 1.0
    if to_one.size:
        t = min(t, float(to_one.min()))
    return project_to_simplex(w + t * step_dir)


def min_norm_element(
    gramian: Tensor | np.ndarray, max_iter: int = MAX_ITER, tol: float = STOP_CRIT
) -> MinNormResult:
    """The min-norm convex combination of the vectors whose Gramian is ``gramian`` (K x K).

    Raises ``ValueError`` for a non-square or non-finite Gramian, or when the iterations overflow
    (entries near the float64 limit); callers decide the fallback.
    """
    gram = np.asarray(
        gramian.detach().cpu().double().numpy() if isinstance(gramian, Tensor) else gramian,
        dtype=np.float64,
    )
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] == 0:
        raise ValueError(f"expected a non-empty square Gramian, got shape {gram.shape}")
    if not np.isfinite(gram).all():
        raise ValueError("the Gramian has non-finite entries")
    with np.errstate(over="ignore", invalid="ignore"):
        result = _solve((gram + gram.T) / 2.0, max_iter, tol)
    if not (torch.isfinite(result.weights).all() and np.isfinite(result.norm2)):
        raise ValueError("the min-norm iterations overflowed")
    return result


def _solve(gram: np.ndarray, max_iter: int, tol: float) -> MinNormResult:
    k = gram.shape[0]
    if k == 1:
        return MinNormResult(torch.ones(1, dtype=torch.float64), float(gram[0, 0]), 0, True)
    w, cost = _best_pair(gram)
    if k == 2:
        return MinNormResult(torch.from_numpy(w), cost, 0, True)
    for it in range(1, max_iter + 1):
        candidate = _next_point(w, -(gram @ w))
        gw = gram @ w
        c, cost = min_norm_2(
            float(w @ gw), float(w @ gram @ candidate), float(candidate @ gram @ candidate)
        )
        new_w = c * w + (1.0 - c) * candidate
        if np.abs(new_w - w).sum() < tol:
            return MinNormResult(torch.from_numpy(w), float(w @ gw), it, True)
        w = new_w
    return MinNormResult(torch.from_numpy(w), float(w @ gram @ w), max_iter, False)
