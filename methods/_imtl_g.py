"""IMTL-G's weights on the Gramian: the shared maths of IMTL-G and IMTL (Liu et al., "Towards
Impartial Multi-task Learning", ICLR 2021).
"""

from __future__ import annotations

import torch
from torch import Tensor

# Singular values of the (normalised) system below this fraction of the largest count as zero:
# float32 Jacobians carry rounding of about 1e-7 relative, which must not be inverted as signal
# (the same cutoff as ConFIG's, 1e-10 on the Gramian's eigenvalues).
_RCOND = 1e-5


def imtl_g_weights(gramian: Tensor) -> Tensor:
    """IMTL-G's weights ``alpha`` from the Gramian (float64), defined on every input.

    With ``n_k = |g_k|``, ``u_b = g_b / n_b`` and ``M = G / n^T`` (``M_ab = <g_a, u_b>``), the
    update ``g = J^T alpha`` has the projection ``(M^T alpha)_b`` on ``u_b``. IMTL-G asks for
    equal projections and ``sum alpha = 1``::

        (I - 11^T / K) M^T alpha = 0,      1^T alpha = 1

    With independent gradients this square system has one solution, the reference's closed form
    ``alpha_{2..K} = (g_1 U^T)(D U^T)^{-1}`` (rows ``D_a = g_1 - g_a``, ``U_b = u_1 - u_b``),
    which is the same system with task 1 eliminated. With dependent gradients (``K > rank``) it
    has many solutions, or none; the reference then inverts a singular matrix (a ridge of
    ``1e-8``, an absolute amount, so the answer depends on the scale of ``J``). Here the answer
    is the minimum-norm least-squares solution (``pinv``, singular values below ``1e-5`` of the
    largest cut, on ``M / max|M|``): unique, invariant to the scale of ``J`` and to the order of
    the tasks. For example, with all gradients parallel and of one sign it is the mean
    (``alpha = 1/K``); with parallel gradients of both signs the update is 0 (no non-zero
    vector of their span has equal projections on ``u`` and ``-u``). A zero task gradient has no
    direction: it takes no part in the system and gets weight 0 (all zero: the mean).
    """
    k = gramian.shape[0]
    norms = gramian.diagonal().clamp_min(0.0).sqrt()
    active = norms > 0
    alpha = torch.zeros(k, dtype=gramian.dtype)
    n = int(active.sum())
    if n == 0:
        return torch.full((k,), 1.0 / k, dtype=gramian.dtype)
    if n == 1:
        return alpha.masked_fill(active, 1.0)
    sub = gramian[active][:, active]
    m = sub / norms[active][None, :]
    m = m / m.abs().max()
    centred = m.T - m.T.mean(dim=0, keepdim=True)
    system = torch.cat([centred, torch.ones(1, n, dtype=m.dtype)])
    target = torch.zeros(n + 1, dtype=m.dtype)
    target[-1] = 1.0
    alpha[active] = torch.linalg.pinv(system, rtol=_RCOND) @ target
    return alpha
