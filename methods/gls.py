"""GLS: geometric loss strategy, the geometric mean of the task losses."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from mtlbench.method import LossWeighting, Objective, Scale, StepContext, register
from mtlbench.registry import NonNegativeFloat


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

    A numerical guard, also ours: ``d_k`` is floored at ``eps`` (1e-8; 0 turns it off, as
    LibMTL). A loss that underflows to exactly 0 (a binary cross-entropy on a label that one
    batch never flips: Yeast's rare classes reach 0.0 in float32 after about 20 steps at
    lr 8e-3) makes ``log d_k = -inf``, ``L = 0`` and ``dL/dl_k = 0 / 0``: every one of GLS's
    Yeast tuning trials diverged so, at a step roughly proportional to 1 / lr. Floored, such a
    task contributes no gradient (it sits at its minimum) and ``L`` stays finite; above ``eps``
    nothing changes.
    """

    not_in_paper: ClassVar[tuple[str, ...]] = ("eps",)
    summary: ClassVar[str] = "The geometric mean of the losses."
    paper: ClassVar[str] = (
        "Chennupati et al., MultiNet++: Multi-Stream Feature Aggregation and Geometric Loss "
        "Strategy for Multi-Task Learning, CVPR 2019 Workshops (arXiv 1904.08492)"
    )
    scale: ClassVar[Scale] = "mean"

    # log(l - l*) is undefined at l = l*: the conformance kit skips zero losses.
    positive_losses: ClassVar[bool] = True

    def __init__(
        self, n_tasks: int, min_losses: list[float] | None = None, eps: NonNegativeFloat = 1e-8
    ) -> None:
        super().__init__(n_tasks)
        self.register_min_losses(min_losses)
        self.eps = eps

    def objective(self, losses: Tensor, ctx: StepContext) -> Objective:
        shifted = (losses - self.min_losses.to(losses)).clamp_min(self.eps)
        loss = shifted.log().mean().exp()
        weights = (loss / (self.n_tasks * shifted)).detach()
        return Objective(loss=loss, weights=weights)
