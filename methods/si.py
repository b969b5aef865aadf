"""SI: scale-invariant linear scalarisation, the sum of the log losses."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from mtlbench.method import LossWeighting, Objective, Scale, StepContext, register


@register("si")
class SI(LossWeighting):
    """Scale-invariant baseline (the ``scaleinvls`` of nash-mtl / FAMO; Navon et al., "Multi-Task
    Learning as a Bargaining Game", ICML 2022, arXiv 2202.01017, which introduced it as a
    baseline)::

        L = sum_k log(l_k - l*_k),      grad L = sum_k grad l_k / (l_k - l*_k)

    Multiplying a task's loss by a constant does not change the update. The reported ``weights``
    are the effective coefficients ``1 / (l_k - l*_k)`` of the raw-loss gradients. ``scale =
    "sum"`` (a sum of per-task terms, like LS).

    ``min_losses`` (``l*``, 0 by default, which is exactly the reference ``sum(log(losses))``) is
    our addition, as FAMO's ``l*``: it lets the log apply to losses that go negative, such as the
    toy problem's (down to about -20).
    """

    summary: ClassVar[str] = "The sum of the log losses: invariant to each loss's scale."
    paper: ClassVar[str] = (
        "Scale-invariant baseline of Navon et al., Multi-Task Learning as a Bargaining Game, "
        "ICML 2022 (arXiv 2202.01017)"
    )
    scale: ClassVar[Scale] = "sum"

    # log(l - l*) is undefined at l = l*: the conformance kit skips zero losses.
    positive_losses: ClassVar[bool] = True

    def __init__(self, n_tasks: int, min_losses: list[float] | None = None) -> None:
        super().__init__(n_tasks)
        self.register_min_losses(min_losses)

    def objective(self, losses: Tensor, ctx: StepContext) -> Objective:
        shifted = losses - self.min_losses.to(losses)
        return Objective(loss=shifted.log().sum(), weights=(1.0 / shifted).detach())
