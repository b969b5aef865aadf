"""The min-norm point of the convex hull of K task gradients, from their K x K Gramian.

Solves ``min_{w in simplex} w^T G w`` with ``G = J J^T`` (so ``d = J^T w`` is the shortest vector
in the convex hull of the rows of ``J``: MGDA's common descent direction; Sener & Koltun,
"Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018, arXiv 1810.04650). It sees
only the Gramian, in float64 on the CPU. Used by MGDA; :func:`project_to_simplex` also by MoCo
and SDMGrad.

* K = 2: the closed form (Sener & Koltun, Algorithm 1; the CAGrad toy's ``mgd``)::

      c* = clip((g22 - g12) / (g11 + g22 - 2 g12), 0, 1)
      |c* g1 + (1 - c*) g2|^2 = g22 + c* (g12 - g22)

* K >= 3: exactly, as a least-distance problem solved by non-negative least squares (Lawson &
  Hanson, "Solving Least Squares Problems", 1974, ch. 23). With a square-root factor ``R`` of
  the Gramian (``G = R^T R``; its columns ``r_k`` stand for the task gradients), the min-norm
  point of the hull is ``d* = x / |x|^2`` with ``x`` the shortest vector such that
  ``r_k . x >= 1`` for every k; by the KKT conditions ``x = sum_k mu_k r_k`` with ``mu >= 0``
  and ``|x|^2 = sum_k mu_k``, so ``w = mu / sum(mu)``. Lawson & Hanson's dual is the NNLS
  problem::

      u = argmin_{u >= 0} | [R; 1^T] u - e_{K+1} |^2,      mu = u / (1 - sum(u)),   w = u / sum(u)

  solved by ``scipy.optimize.nnls`` (the Lawson-Hanson active-set method, exact up to
  rounding). When the origin lies in the hull (a Pareto-stationary point) the residual is 0,
  ``sum(u) = 1`` and ``w = u`` gives ``d* = 0``. ``G`` is symmetrised and divided by its trace
  first, which leaves ``w`` unchanged.

**Why not the reference's iterations.** The code "based on the official implementation"
(``MinNormSolver.find_min_norm_element``, copied into nash-mtl, FAMO and LDC-MTL; methods.md
§6.2) starts from the best pair, then takes projected-gradient steps to the nearest simplex
boundary with a line search, and stops when a step moves ``w`` by less than ``1e-5`` in L1; it
never increments its iteration counter, so its ``MAX_ITER = 250`` is never reached. Measured on
27 random conflicting Jacobians with spread gradient norms (K = 2..10), against an exact QP
(quadprog) and TorchJD 0.18's Frank-Wolfe run to convergence, which agree: the reference's stop
test fires early on 3 of them (cosine 0.25-0.35 to the min-norm direction), and the earlier port
of it here, capped at 250 iterations, ended short on 16 (cosine 0.55-0.999997); 7 of those
updates conflicted with a task (cosine down to -0.32), against MGDA's promise. The exact solve
has no such failure (``tests/test_oracle_torchjd.py``, ``tests/test_methods_core.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import nnls
from torch import Tensor


@dataclass(frozen=True)
class MinNormResult:
    """``weights`` (K, float64, on the simplex), ``norm2 = w^T G w``, the solver's iterations
    (0 for the closed forms) and whether it converged."""

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


def min_norm_element(gramian: Tensor | np.ndarray) -> MinNormResult:
    """The min-norm convex combination of the vectors whose Gramian is ``gramian`` (K x K).

    Raises ``ValueError`` for a non-square or non-finite Gramian, or when the solve fails or
    overflows (entries near the float64 limit); callers decide the fallback.
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
        result = _solve((gram + gram.T) / 2.0)
    if not (torch.isfinite(result.weights).all() and np.isfinite(result.norm2)):
        raise ValueError("the min-norm solve overflowed")
    return result


def _solve(gram: np.ndarray) -> MinNormResult:
    k = gram.shape[0]
    if k == 1:
        return MinNormResult(torch.ones(1, dtype=torch.float64), float(gram[0, 0]), 0, True)
    if k == 2:
        c, cost = min_norm_2(gram[0, 0], gram[0, 1], gram[1, 1])
        return MinNormResult(torch.tensor([c, 1.0 - c], dtype=torch.float64), cost, 0, True)
    w = _least_distance_weights(gram)
    return MinNormResult(torch.from_numpy(w), float(w @ gram @ w), 1, True)


def _least_distance_weights(gram: np.ndarray) -> np.ndarray:
    """``w`` of the min-norm point by the NNLS dual of the least-distance problem (see the module
    docstring); raises ``ValueError`` when the solve fails."""
    k = gram.shape[0]
    trace = float(np.trace(gram))
    if not trace > 0.0:  # every gradient is zero: any w is optimal
        return np.full(k, 1.0 / k)
    lam, vec = np.linalg.eigh(gram / trace)
    factor = (vec * np.sqrt(np.clip(lam, 0.0, None))).T  # R, with R^T R = G / tr(G)
    system = np.vstack([factor, np.ones((1, k))])
    target = np.zeros(k + 1)
    target[-1] = 1.0
    try:
        u, _ = nnls(system, target, maxiter=50 * k)
    except RuntimeError as err:  # scipy: iteration limit reached
        raise ValueError(f"the min-norm NNLS solve failed: {err}") from err
    total = float(u.sum())
    if not total > 0.0:
        raise ValueError("the min-norm NNLS solve returned no weight")
    return u / total
