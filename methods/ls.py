"""LS: linear scalarisation with equal weights, the sum of the task losses."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from mtlbench.method import LossWeighting, Objective, Scale, StepContext, register


@register("ls")
class LS(LossWeighting):
    """Linear scalarisation (equal weighting)::

        L = sum_k l_k,      w = (1, ..., 1)

    A *sum*, as nash-mtl / FAMO ``LinearScalarization`` and LibMTL ``EW`` compute it (EW's
    docstring says mean; methods.md §9, pitfall 2), so ``scale = "sum"``. The baseline of every
    multi-task paper; no hyper-parameters.
    """

    summary: ClassVar[str] = "The sum of the task losses (equal weights): the baseline."
    paper: ClassVar[str] = (
        "Linear scalarisation / equal weighting (baseline; nash-mtl and FAMO LinearScalarization, "
        "LibMTL EW)"
    )
    scale: ClassVar[Scale] = "sum"

    def objective(self, losses: Tensor, ctx: StepContext) -> Objective:
        return Objective(loss=losses.sum(), weights=torch.ones_like(losses).detach())
