"""Aligned-MTL: the task gradients aligned (orthogonal, of equal norm) through the Gramian."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from mtlbench.method import GramianWeighting, Scale, register

# The references compute the rank tolerance with ``torch.finfo().eps``, the float32 epsilon (the
# default dtype), matching a Jacobian in float32.
_EPS = torch.finfo(torch.float32).eps


@register("aligned_mtl")
class AlignedMTL(GramianWeighting):
    """Aligned-MTL (Senushkin, Patakin, Kuznetsov & Konushin, "Independent Component Alignment
    for Multi-Task Learning", CVPR 2023, arXiv 2305.19000), as LibMTL ``weighting/Aligned_MTL.py``,
    itself from the official ``SamsungLabs/MTL`` ``ProcrustesSolver`` with ``scale_mode = "min"``.

    With ``G = J J^T = V diag(lambda) V^T`` (eigenvalues in decreasing order, only the ``r``
    above the tolerance ``lambda_max * K * eps_float32`` kept), the aligned task gradients are the
    rows of ``B J`` with::

        B = sqrt(lambda_r) V diag(lambda^(-1/2)) V^T = sqrt(lambda_r) (G^+)^(1/2)

    i.e. the closest (Procrustes) orthogonal system to the task gradients, rescaled so that each
    aligned gradient has the norm of the smallest singular value ``sqrt(lambda_r)`` of ``J``: then
    ``B G B^T = lambda_r P_r`` with ``P_r`` the projector on the kept eigenvectors. The update is
    their sum, ``d = 1^T B J``, so the task weights are ``w = B 1`` (``B`` is symmetric) and the
    update is a sum over tasks (``scale = "sum"``), as in both references.

    ``B`` does not change when ``G`` is scaled, so ``aggregate(c J) = c aggregate(J)``. Without a
    Gramian eigenvalue above the tolerance (all gradients zero) the update is zero and the weights
    are set to ones; a non-finite Gramian or a failed eigendecomposition reuses the last weights
    (ones at first) and is counted in ``fallbacks``. The references' "UB" variant (gradients of the
    shared representation) is the engine's ``wrt = "representation"`` option.
    """

    summary: ClassVar[str] = "Aligns the task gradients: equal singular values of their matrix."
    paper: ClassVar[str] = (
        "Senushkin et al., Independent Component Alignment for Multi-Task Learning, CVPR 2023 "
        "(arXiv 2305.19000)"
    )
    scale: ClassVar[Scale] = "sum"
    scale_equivariant: ClassVar[bool] = True

    def __init__(self, n_tasks: int, log_losses: bool = False) -> None:
        super().__init__(n_tasks, log_losses=log_losses)
        self.register_buffer("last_weights", torch.ones(n_tasks, dtype=torch.float64))

    def weights(self, gramian: Tensor, losses: Tensor) -> Tensor:
        g = gramian.detach().cpu().double()
        if not bool(torch.isfinite(g).all()):
            return self.fallback(self.last_weights.clone()).to(gramian)
        g = (g + g.T) / 2.0
        try:
            lam, vec = torch.linalg.eigh(g)
        except RuntimeError:
            return self.fallback(self.last_weights.clone()).to(gramian)
        tol = lam.max() * g.shape[0] * _EPS
        keep = lam > tol
        if not bool(keep.any()):
            return torch.ones_like(self.last_weights).to(gramian)
        lam, vec = lam[keep], vec[:, keep]
        # B 1 = sqrt(lambda_min) V diag(lambda^(-1/2)) V^T 1
        ones = torch.ones(g.shape[0], dtype=g.dtype)
        w = lam.min().sqrt() * (vec @ ((vec.T @ ones) / lam.sqrt()))
        self.last_weights.copy_(w.to(self.last_weights))
        return w.to(gramian)
