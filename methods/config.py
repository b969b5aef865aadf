"""ConFIG: the direction at equal cosine to every task gradient, at their summed projections."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from mtlbench.method import GramianWeighting, Scale, register

_RCOND = 1e-10  # eigenvalues of the unit Gramian below this (relative) count as zero
# A preference vector whose projection on the kept eigenvectors is below this fraction of its
# norm has no component in the unit vectors' span (rounding only): d_best = 0. Without it, that
# rounding (1e-16 relative on exactly opposite gradients) was normalised into a full-size update.
_PROJECTION = 1e-6


def config_weights(gramian: Tensor, pref: Tensor) -> Tensor:
    """ConFIG's weights on the rows of J, from the Gramian alone (float64).

    With ``n_k = |g_k|`` and ``N = diag(1 / n_k)`` (0 for a zero gradient, whose unit vector is
    taken as 0, as TorchJD's ``nan_to_num``), the unit vectors ``U = N J`` have the Gramian
    ``G_u = N G N`` and ``pinv(U) = U^T pinv(G_u)``, so::

        d_best = pinv(U) p = J^T c,    c = N pinv(G_u) p,    |d_best|^2 = c^T G c
        d = (sum_k g_k . d_best / |d_best|) d_best / |d_best| = J^T w,   w = c (1^T G c) / (c^T G c)

    ``pinv(G_u)`` from its eigendecomposition, eigenvalues below ``1e-10`` times the largest
    being zero. ``w = 0`` when ``d_best = 0``, which is taken to be the case when ``p`` has less
    than ``1e-6`` of its norm in the span of the kept eigenvectors (exactly opposite gradients:
    the exact ``d_best`` is 0 and its rounding has no meaningful direction).
    """
    norms = gramian.diagonal().clamp_min(0.0).sqrt()
    inv = torch.where(norms > 0, 1.0 / norms, torch.zeros_like(norms))
    unit = inv[:, None] * gramian * inv[None, :]
    lam, vec = torch.linalg.eigh((unit + unit.T) / 2.0)
    keep = lam > _RCOND * lam.max().clamp_min(0.0)
    inv_lam = torch.where(keep, 1.0 / torch.where(keep, lam, torch.ones_like(lam)), 0.0)
    coords = vec.T @ pref
    if not bool((coords * keep).norm() > _PROJECTION * pref.norm()):
        return torch.zeros_like(pref)  # p is orthogonal to the unit vectors' span: d_best = 0
    c = inv * (vec @ (inv_lam * coords))
    sq_norm = c @ gramian @ c
    if not bool(sq_norm > 0):
        return torch.zeros_like(pref)
    return c * (gramian @ c).sum() / sq_norm


@register("config")
class ConFIG(GramianWeighting):
    """ConFIG, conflict-free inverse gradients (Liu, Chu, Thuerey, "ConFIG: Towards Conflict-free
    Training of Physics Informed Neural Networks", ICLR 2025, arXiv 2408.11104, Eq. 2), as
    TorchJD 0.18 ``aggregation.ConFIG`` (adapted there from the official ``tum-pbs/ConFIG``)::

        d_best = pinv([u_1; ...; u_K]) p,     u_k = g_k / |g_k|,    p = 1 (pref_vector)
        d = (sum_k g_k . e) e,                e = d_best / |d_best|

    With linearly independent gradients, ``u_k . d_best = p_k``: the direction has the same
    cosine with every task gradient (for ``p = 1``), positive, so it conflicts with none; the
    length is the sum of the gradients' projections on it (``scale = "sum"``, LS's scale).
    With dependent gradients (``K > P``, duplicates) the pseudo-inverse gives the least-squares
    direction and that promise lapses, so ``non_conflicting`` is not declared.

    **A Gramian method**: ``d`` is a combination of the rows of J whose weights depend on ``G``
    only (:func:`config_weights`), so it also runs on representation Gramians. Difference from
    TorchJD, which takes ``pinv`` of the K x P unit matrix: here ``pinv`` of its K x K Gramian,
    whose eigenvalues are the squared singular values; near-dependent gradients (singular values
    below about ``1e-5`` of the largest, relative) count as dependent, where TorchJD's default
    cutoff is ``max(K, P)`` machine epsilons. On well-conditioned gradients both agree to
    rounding. A non-finite Gramian reuses the last weights (``p`` at first), counted in
    ``fallbacks``.
    """

    summary: ClassVar[str] = "A conflict-free direction at equal angles to the gradients (ConFIG)."
    paper: ClassVar[str] = (
        "Liu, Chu & Thuerey, ConFIG: Towards Conflict-free Training of Physics Informed Neural "
        "Networks, ICLR 2025 (arXiv 2408.11104)"
    )
    scale: ClassVar[Scale] = "sum"
    linear_under_scaling: ClassVar[bool] = True
    scale_equivariant: ClassVar[bool] = True

    def __init__(
        self, n_tasks: int, pref_vector: list[float] | None = None, log_losses: bool = False
    ) -> None:
        super().__init__(n_tasks, log_losses=log_losses)
        pref = [1.0] * n_tasks if pref_vector is None else list(pref_vector)
        if len(pref) != n_tasks:
            raise ValueError(f"pref_vector needs {n_tasks} values, got {pref}")
        self.register_buffer("pref", torch.tensor(pref, dtype=torch.float64), persistent=False)
        self.register_buffer("last_weights", self.pref.clone())

    def weights(self, gramian: Tensor, losses: Tensor) -> Tensor:
        g = gramian.detach().cpu().double()
        if bool(torch.isfinite(g).all()):
            try:
                w = config_weights((g + g.T) / 2.0, self.pref.cpu())
            except RuntimeError:  # eigh did not converge
                w = None
            if w is not None and bool(torch.isfinite(w).all()):
                self.last_weights.copy_(w.to(self.last_weights))
                return w.to(gramian)
        return self.fallback(self.last_weights.clone()).to(gramian)
