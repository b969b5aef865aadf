"""IMTL-G's closed-form weights on the Gramian: the shared maths of IMTL-G and IMTL (Liu et al.,
"Towards Impartial Multi-task Learning", ICLR 2021).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mtlbench.method import sanitize

_RIDGE = 1e-8  # the reference's fallback ridge on a singular system (here relative)


def imtl_g_weights(gramian: Tensor) -> Tensor:
    """IMTL-G's closed form on the Gramian (float64). Raises ``RuntimeError`` (torch's error for a
    singular system) and may return non-finite values; callers decide the fallback.

    With ``n_k = |g_k|`` and ``M = G / n^T`` (``M_ab = <g_a, u_b>``, ``u_b = g_b / n_b``), the
    reference's ``D = g_1 - g_a`` and ``U = u_1 - u_b`` (a, b = 2..K) give::

        (D U^T)_ab = M_11 - M_1b - M_a1 + M_ab,      (g_1 U^T)_b = M_11 - M_1b
        alpha_{2..K} = (g_1 U^T) (D U^T)^{-1},       alpha_1 = 1 - sum_{a>=2} alpha_a
    """
    k = gramian.shape[0]
    if k == 1:
        return torch.ones(1, dtype=gramian.dtype)
    norms = gramian.diagonal().clamp_min(0.0).sqrt()
    m = sanitize(gramian / norms[None, :])  # a zero gradient has no direction: u = 0
    du = m[0, 0] - m[0, 1:][None, :] - m[1:, 0][:, None] + m[1:, 1:]
    rhs = m[0, 0] - m[0, 1:]
    try:
        alpha = torch.linalg.solve(du.T, rhs)
    except RuntimeError:
        ridge = _RIDGE * float(du.abs().max().clamp_min(1e-300))
        alpha = torch.linalg.solve(du.T + ridge * torch.eye(k - 1, dtype=du.dtype), rhs)
    return torch.cat([(1.0 - alpha.sum()).view(1), alpha])
