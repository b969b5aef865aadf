"""DWA: dynamic weight average, weights from the recent rate of decrease of each loss."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from mtlbench.method import LossWeighting, Objective, Scale, StepContext, register
from mtlbench.registry import PositiveFloat, PositiveInt
from mtlbench.space import Choice


@register("dwa")
class DWA(LossWeighting):
    """Dynamic Weight Average (Liu, Johns & Davison, "End-to-End Multi-Task Learning with
    Attention", CVPR 2019, arXiv 1803.10704), in the iteration-window form of the nash-mtl / FAMO
    ``DynamicWeightAverage`` (methods.md §7, protocols.md §4.5).

    A FIFO ``C`` of the last ``2W`` loss vectors (``W = window``), **initialised to ones**,
    receives the current losses first; then, from the ``(W + 2)``-th call on (the reference tests
    ``running_iterations > W`` before counting the call)::

        r_k = mean(C[W:, k]) / mean(C[:W, k])          (recent window / previous window)
        lambda = K softmax(r / T)
        L = mean_k(lambda_k l_k) = sum_k (lambda_k / K) l_k

    Until then ``lambda = 1``. While the FIFO is still partly filled, the previous window holds
    some of the initial ones, exactly as in the reference. The weights are those of the last
    computation (they are not reset). The effective coefficients ``lambda / K`` sum to 1 and are
    the reported ``weights``: ``scale = "mean"``. The original MTAN code sums ``lambda_k l_k``;
    that is this method under the ``update_scale = "sum"`` policy.

    Difference from the paper and the MTAN code: they average the losses per *epoch* and use the
    ratio of the last two epochs (weights 1 for the first two epochs); here, as in the nash-mtl /
    FAMO code that the LDC-MTL and FAMO baselines ran, windows of ``W`` iterations. The history
    lives in buffers (saved in ``state_dict``). A non-finite ratio (a zero loss in the previous
    window) keeps the last weights and is counted in ``fallbacks``.

    Search space: ``temp`` around the paper's T = 2 (ours).
    """

    summary: ClassVar[str] = "Weights from each loss's recent rate of decrease (softmax)."
    search_space = {"temp": Choice(1.0, 2.0, 5.0)}

    paper: ClassVar[str] = (
        "Liu, Johns & Davison, End-to-End Multi-Task Learning with Attention, CVPR 2019 "
        "(arXiv 1803.10704)"
    )
    scale: ClassVar[Scale] = "mean"

    def __init__(self, n_tasks: int, temp: PositiveFloat = 2.0, window: PositiveInt = 25) -> None:
        super().__init__(n_tasks)
        if window < 1:
            raise ValueError(f"window must be positive, got {window}")
        if temp <= 0:
            raise ValueError(f"temp must be positive, got {temp}")
        self.temp = temp
        self.window = window
        self.register_buffer("costs", torch.ones(2 * window, n_tasks, dtype=torch.float64))
        self.register_buffer("lambdas", torch.ones(n_tasks, dtype=torch.float64))
        self.register_buffer("iterations", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def _update(self, losses: Tensor) -> None:
        self.costs = torch.cat([self.costs[1:], losses.detach().to(self.costs).view(1, -1)])
        if int(self.iterations) > self.window:
            ratio = self.costs[self.window :].mean(0) / self.costs[: self.window].mean(0)
            lambdas = self.n_tasks * torch.softmax(ratio / self.temp, dim=0)
            if bool(torch.isfinite(lambdas).all()):
                self.lambdas = lambdas
            else:  # a zero or non-finite loss in the history: keep the last weights
                self.fallback(self.lambdas)
        self.iterations += 1

    def objective(self, losses: Tensor, ctx: StepContext) -> Objective:
        self._update(losses)
        weights = (self.lambdas / self.n_tasks).to(losses)
        return Objective(loss=(weights * losses).sum(), weights=weights.detach())
