"""UW: uncertainty weighting with learned homoscedastic log-variances."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from mtlbench.method import LossWeighting, Objective, Scale, StepContext, register
from mtlbench.registry import PositiveFloat
from mtlbench.space import LogUniform


@register("uw")
class UW(LossWeighting):
    """Uncertainty weighting (Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to
    Weigh Losses for Scene Geometry and Semantics", CVPR 2018, arXiv 1705.07115), as the
    nash-mtl / FAMO ``Uncertainty`` and LibMTL ``UW``. With ``s_k = log sigma_k`` (a parameter,
    initialised to 0) and ``d_k = l_k - l*_k`` (``l*`` the ``min_losses``, 0 by default)::

        L = sum_k 1/2 (exp(-s_k) d_k + s_k)
        dL/dl_k = exp(-s_k) / 2,      dL/ds_k = (1 - exp(-s_k) d_k) / 2

    so ``s_k`` tends to ``log d_k``. The ``s_k`` are trained by the trainer's optimizer in their
    own parameter group at ``lr`` (``--method-params-lr`` 0.025 in the reference code, with the
    model's optimizer type, Adam there). The reported ``weights`` are the effective coefficients
    ``exp(-s_k) / 2`` (the reference logs ``exp(-s_k)``; ``1/2`` each at start). ``scale =
    "sum"``: the weights are not normalised.

    ``min_losses`` (``l*``, 0 by default, which is exactly the reference) is our addition, as
    FAMO's ``l*``: the objective is bounded below in ``s_k`` only when ``d_k > 0`` (its minimum
    is at ``s_k = log d_k``); with a negative loss and no shift ``s_k`` falls at every step and
    the weights grow without bound, as on the toy problem (losses down to about -20). The shift
    acts through the ``s_k`` step only: for given ``s_k`` the model's gradient does not depend
    on it.

    Search space: ``lr`` of the log-variances, log-uniform around the reference's 0.025 (ours).
    """

    summary: ClassVar[str] = "Weights each loss by a learned homoscedastic uncertainty."
    search_space = {"lr": LogUniform(0.005, 0.1, points=3)}

    paper: ClassVar[str] = (
        "Kendall, Gal & Cipolla, Multi-Task Learning Using Uncertainty to Weigh Losses for Scene "
        "Geometry and Semantics, CVPR 2018 (arXiv 1705.07115)"
    )
    scale: ClassVar[Scale] = "sum"

    def __init__(
        self, n_tasks: int, lr: PositiveFloat = 0.025, min_losses: list[float] | None = None
    ) -> None:
        super().__init__(n_tasks)
        self.log_sigma = nn.Parameter(torch.zeros(n_tasks))
        self.param_lr = lr
        self.register_min_losses(min_losses)

    def objective(self, losses: Tensor, ctx: StepContext) -> Objective:
        s = self.log_sigma.to(losses)
        weights = 0.5 * torch.exp(-s)
        shifted = losses - self.min_losses.to(losses)
        loss = (weights * shifted + 0.5 * s).sum()
        return Objective(loss=loss, weights=weights.detach())
