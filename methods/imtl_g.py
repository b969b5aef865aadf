"""IMTL-G: the combination of task gradients with equal projections on every unit gradient."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from mtlbench.method import GramianWeighting, Scale, register
from mtlbench.methods._imtl_g import imtl_g_weights


@register("imtl_g")
class IMTLG(GramianWeighting):
    """IMTL-G, the gradient part of impartial multi-task learning (Liu et al., "Towards Impartial
    Multi-task Learning", ICLR 2021, openreview IMPnRXEWpvr), as the nash-mtl / FAMO ``IMTLG``
    and LibMTL ``IMTL`` (its gradient half). The update ``g = sum_k alpha_k g_k`` with
    ``sum_k alpha_k = 1`` has equal projections on all unit task gradients
    ``u_k = g_k / |g_k|``::

        <g, u_1 - u_k> = 0   (k = 2..K)
        =>  alpha_{2..K} = g_1 U^T (D U^T)^{-1},   alpha_1 = 1 - sum_{k>=2} alpha_k
        with rows D_k = g_1 - g_k and U_k = u_1 - u_k

    **A Gramian method**: every product above is an inner product of task gradients,
    ``<g_a, u_b> = G_ab / sqrt(G_bb)``, so the weights are a function of ``G`` alone (derivation
    in :func:`imtl_g_weights`), computed in float64; the update is ``alpha^T J`` as in the
    reference (whose weighted loss ``sum alpha_k l_k`` also trains the heads with ``alpha``, the
    default ``head_weights``). The weights are invariant to scaling ``G`` and sum to 1:
    ``scale = "mean"`` (no reference rescales them).

    Deviation from the reference: with dependent gradients (more tasks than the rank of J) the
    reference inverts a singular ``D U^T`` with an absolute ridge, so its answer depends on the
    scale of J (on a rank-1 4 x 3 Jacobian scaled by 1e5 it flips sign); here the weights are
    the minimum-norm least-squares solution of the same equations (:func:`imtl_g_weights`),
    which makes the method scale-equivariant and permutation-invariant on every input and
    leaves it unchanged where the reference's system is regular. A zero task gradient has no
    direction and gets weight 0. A non-finite Gramian or result falls back to the last weights
    (uniform at first), counted in ``fallbacks``. IMTL-L, the loss-scale half of IMTL, is not
    part of this method.
    """

    summary: ClassVar[str] = "The update with equal projections on every task gradient."
    paper: ClassVar[str] = (
        "Liu et al., Towards Impartial Multi-task Learning, ICLR 2021 "
        "(openreview.net/forum?id=IMPnRXEWpvr)"
    )
    scale: ClassVar[Scale] = "mean"
    scale_equivariant: ClassVar[bool] = True

    def __init__(self, n_tasks: int, log_losses: bool = False) -> None:
        super().__init__(n_tasks, log_losses=log_losses)
        self._last = [1.0 / n_tasks] * n_tasks

    def weights(self, gramian: Tensor, losses: Tensor) -> Tensor:
        if bool(torch.isfinite(gramian).all()):
            try:
                w = imtl_g_weights((gramian + gramian.T) / 2.0)
            except RuntimeError:
                w = None
            if w is not None and bool(torch.isfinite(w).all()):
                self._last = w.tolist()
                return w
        return self.fallback(torch.tensor(self._last, dtype=gramian.dtype))

    def get_extra_state(self) -> dict[str, list[float]]:
        return {"last_weights": list(self._last)}

    def set_extra_state(self, state: dict[str, list[float]]) -> None:
        self._last = [float(v) for v in state["last_weights"]]
