"""``fixture_inverse_loss``: loss weights inversely proportional to a power of the losses.

Self-contained (it imports only mtlbench and torch), so that it also works as a file plug-in
(``plugins: [./methods.py]``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mtlbench.method import LossWeighting, Objective, StepContext, register
from mtlbench.registry import NonNegativeFloat, PositiveFloat


@register("fixture_inverse_loss")
class InverseLoss(LossWeighting):
    """``w_k = K l_k^{-p} / sum_j l_j^{-p}`` (detached), objective ``sum_k w_k l_k``.

    With ``p = 1`` every task contributes ``K / sum_j (1 / l_j)`` to the objective: losses
    (1, 2, 4) give weights (12/7, 6/7, 3/7) and the objective 36/7. ``p = 0`` is LS. A test
    fixture, not a published method.
    """

    summary = "weights inversely proportional to the losses (a plug-in test fixture)"
    paper = "none: mtlbench's plug-in test fixture"
    positive_losses = True

    def __init__(self, n_tasks: int, power: NonNegativeFloat = 1.0, eps: PositiveFloat = 1e-8):
        super().__init__(n_tasks)
        self.power = power
        self.eps = eps

    def objective(self, losses: Tensor, ctx: StepContext) -> Objective:
        inverse = (losses.detach() + self.eps) ** -self.power
        weights = self.n_tasks * inverse / inverse.sum()
        return Objective(loss=torch.sum(weights * losses), weights=weights)
