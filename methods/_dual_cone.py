"""Projection onto the dual cone of the task gradients, from the Gramian: the shared maths of
UPGrad and DualProj (Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv
2406.16232, Proposition 1).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls


def dual_cone_weights(gramian: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Weights ``v`` of the projection of ``J^T u`` onto the dual cone ``{x : J x >= 0}``.

    By Proposition 1 of Quinton & Rey (arXiv 2406.16232) the projection is ``J^T v`` with::

        v = argmin_{v >= u} v^T G v,      G = J J^T

    Writing ``v = u + z`` and ``G = L L^T`` (``L = V diag(sqrt(max(lambda, 0)))`` from the
    eigendecomposition, so a singular ``G`` is fine), this is the non-negative least-squares
    problem ``min_{z >= 0} |L^T z + L^T u|^2``, solved exactly by the Lawson-Hanson active-set
    method (``scipy.optimize.nnls``). Its optimality conditions are those of the projection:
    ``G v >= 0`` (no conflict with any row of ``J``), ``z >= 0`` and ``z . (G v) = 0``.
    ``u`` may be a (K,) vector or a (B, K) batch of them.
    """
    gram = (gramian + gramian.T) / 2.0
    lam, vec = np.linalg.eigh(gram)
    factor_t = (vec * np.sqrt(np.clip(lam, 0.0, None))).T  # L^T
    batch = np.atleast_2d(u).astype(np.float64)
    out = batch.copy()
    for row, target in zip(out, batch, strict=True):
        if (gram @ target >= 0).all():  # already in the dual cone: its own projection
            continue
        z, _ = nnls(factor_t, -factor_t @ target)
        row += z
    return out if np.ndim(u) == 2 else out[0]
