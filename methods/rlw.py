"""RLW: random loss weighting, fresh softmax-normal weights at every step."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from mtlbench.method import LossWeighting, Objective, Scale, StepContext, register


@register("rlw")
class RLW(LossWeighting):
    """Random loss weighting (Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus
    Test for Multi-Task Learning", TMLR 2022, arXiv 2111.10603)::

        z ~ N(0, I_K),      w = softmax(z),      L = sum_k w_k l_k

    drawn afresh at every step, as the nash-mtl / FAMO ``RLW`` and LibMTL ``RLW`` (the paper's
    default normal distribution). The draw uses torch's global CPU generator, so a seeded run is
    reproducible on any device (``stochastic = True``). The weights sum to 1: ``scale = "mean"``.
    """

    summary: ClassVar[str] = "Random loss weights, drawn afresh at every step."
    paper: ClassVar[str] = (
        "Lin et al., Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task "
        "Learning, TMLR 2022 (arXiv 2111.10603)"
    )
    scale: ClassVar[Scale] = "mean"
    stochastic: ClassVar[bool] = True

    def objective(self, losses: Tensor, ctx: StepContext) -> Objective:
        weights = torch.softmax(torch.randn(self.n_tasks), dim=-1).to(losses)
        return Objective(loss=(weights * losses).sum(), weights=weights)
