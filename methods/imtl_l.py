"""IMTL-L: learned loss scales that make the scaled losses equal to 1 (the loss half of IMTL)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from mtlbench.method import LossWeighting, Objective, Scale, StepContext, register


@register("imtl_l")
class IMTLL(LossWeighting):
    """IMTL-L, the loss-balancing half of impartial multi-task learning (Liu et al., "Towards
    Impartial Multi-task Learning", ICLR 2021, openreview IMPnRXEWpvr, Eq. 3), as TorchJD 0.18
    ``scalarization.IMTLL`` and the loss part of LibMTL ``weighting/IMTL.py``.

    Each task has a learned log-scale ``s_k`` (0 at start, so the objective starts as LS) and,
    with ``d_k = l_k - l*_k`` (``l*`` the ``min_losses``, 0 by default)::

        L = sum_k (exp(s_k) d_k - s_k)
        dL/dl_k = exp(s_k),      dL/ds_k = exp(s_k) d_k - 1

    so the minimiser in ``s_k`` is ``exp(s_k) = 1 / d_k``: every scaled loss ``exp(s_k) d_k`` is
    driven to 1. The ``s_k`` are an ``nn.Parameter`` stepped by the trainer's optimizer with the
    model, at the model's learning rate (TorchJD's usage; LibMTL's ``loss_scale`` is a model
    parameter). The reported weights are ``exp(s_k)`` (``scale = "sum"``: 1 each at start).

    The paper's (and TorchJD's) objective equals twice UW's at ``s = -log sigma``: the two differ
    by the factor 2 (a doubled step on ``s`` under SGD), the sign convention and their learning
    rate (UW's reference code trains ``log sigma`` at 0.025).

    ``min_losses`` (``l*``) is our addition, as UW's and FAMO's: the objective is bounded below in
    ``s_k`` only for ``d_k > 0``; with a negative loss and no shift ``s_k`` rises at every step
    and the weights grow without bound (the toy, whose losses reach about -20). It acts through
    the ``s_k`` step only: for given ``s_k`` the model's gradient does not depend on it.
    """

    summary: ClassVar[str] = "Learned loss scales that keep the scaled losses equal (IMTL-L)."
    paper: ClassVar[str] = (
        "Liu et al., Towards Impartial Multi-task Learning, ICLR 2021 "
        "(openreview.net/forum?id=IMPnRXEWpvr)"
    )
    scale: ClassVar[Scale] = "sum"

    def __init__(self, n_tasks: int, min_losses: list[float] | None = None) -> None:
        super().__init__(n_tasks)
        self.log_scale = nn.Parameter(torch.zeros(n_tasks))
        self.register_min_losses(min_losses)

    def objective(self, losses: Tensor, ctx: StepContext) -> Objective:
        s = self.log_scale.to(losses)
        weights = torch.exp(s)
        shifted = losses - self.min_losses.to(losses)
        return Objective(loss=(weights * shifted - s).sum(), weights=weights.detach())
