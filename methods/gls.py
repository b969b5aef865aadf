"""GLS: geometric loss strategy, the geometric mean of the task losses."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from mtlbench.method import LossWeighting, Objective, Scale, StepContext, register


@register("gls")
class GLS(LossWeighting):
    """Geometric loss strategy (Chennupati et al., "MultiNet++: Multi-Stream Feature Aggregation
    and Geometric Loss Strategy for Multi-Task Learning", CVPR 2019 Workshops, arXiv 1904.08492),
    as LibMTL ``GLS``. With ``d_k = l_k - l*_k``::

        L = (prod_k d_k)^(1/K) = exp(mean_k log d_k)
        dL/dl_k = L / (K d_k)

    The reported ``weights`` are these effective coefficients ``L / (K d_k)`` (1/K each when the
    losses are equal, so ``scale = "mean"``). LibMTL reports ``l_k / (K prod l)`` instead, which
    is not the gradient's coefficient; its objective is the same.

    Differences from LibMTL, both deliberate: the geometric mean is computed as
    ``exp(mean(log d))`` rather than ``prod(d)^(1/K)``, which is the same number but does not
    underflow for many small losses (40 CelebA tasks at 0.05 give a product of 1e-52, zero in
    float32); and ``min_losses`` (``l*``, 0 by default) is our addition, as FAMO's ``l*``, for
    losses that go negative such as the toy problem's.
    """

    summary: ClassVar[str] = "The geometric mean of the losses."
    paper: ClassVar[str] = (
        "Chennupati et al., MultiNet++: Multi-Stream Feature Aggregation and Geometric Loss "
        "Strategy for Multi-Task Learning, CVPR 2019 Workshops (arXiv 1904.08492)"
    )
    scale: ClassVar[Scale] = "mean"

    # log(l - l*) is undefined at l = l*: the conformance kit skips zero losses.
    positive_losses: ClassVar[bool] = True

    def __init__(self, n_tasks: int, min_losses: list[float] | None = None) -> None:
        super().__init__(n_tasks)
        self.register_min_losses(min_losses)

    def objective(self, losses: Tensor, ctx: StepContext) -> Objective:
        shifted = losses - self.min_losses.to(losses)
        loss = shifted.log().mean().exp()
        weights = (loss / (self.n_tasks * shifted)).detach()
        return Objective(loss=loss, weights=weights)
