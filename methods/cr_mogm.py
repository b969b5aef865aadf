"""CR-MOGM: another Gramian method's weights, smoothed by an exponential moving average."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from mtlbench.method import METHODS, GramianWeighting, Scale, create, register
from mtlbench.registry import UnitInterval


@register("cr_mogm")
class CRMOGM(GramianWeighting):
    """CR-MOGM, correlation-reduced multi-objective gradient manipulation (Zhou, Zhang, Jiang,
    Zhong, Gu & Zhu, "On the Convergence of Stochastic Multi-Objective Gradient Manipulation and
    Beyond", NeurIPS 2022), as TorchJD 0.18 ``aggregation.CRMOGMWeighting``: the weights
    ``lambda^_t`` of a wrapped Gramian method (``base``, MGDA by default; the abstract names
    MGDA, PCGrad and CAGrad) are smoothed across steps::

        lambda_t = alpha lambda_{t-1} + (1 - alpha) lambda^_t,      lambda_0 = lambda^_1

    and the update is ``J^T lambda_t``. Weights that depend on the current stochastic Gramian
    alone make the stochastic method biased (the paper's non-convergence example); their
    average reduces that correlation. ``alpha = 0.9`` is TorchJD's default; the paper's
    Corollary 1 lets ``alpha_t`` grow towards 1 as the learning rate decays (not implemented: a
    fixed ``alpha``).

    ``base`` is any registered Gramian method, built with its default hyper-parameters, as a
    submodule (its state is saved with this one's); the scale, randomness and scale
    equivariance are the base's (the class values are MGDA's). The base's ``reference_scale`` is
    not inherited: TorchJD, the reference, never rescales (MGDA's weights sum to 1). ``log_losses``
    applies to the Gramian the base sees. The base's fallbacks are counted here too; the EMA
    skips a step whose base weights are not finite. ``lambda`` and its first-step flag are
    buffers.
    """

    summary: ClassVar[str] = "A moving average of another Gramian method's weights (CR-MOGM)."
    paper: ClassVar[str] = (
        "Zhou et al., On the Convergence of Stochastic Multi-Objective Gradient Manipulation and "
        "Beyond, NeurIPS 2022"
    )
    scale: ClassVar[Scale] = "mean"
    scale_equivariant: ClassVar[bool] = True

    def __init__(
        self, n_tasks: int, base: str = "mgda", alpha: UnitInterval = 0.9, log_losses: bool = False
    ) -> None:
        super().__init__(n_tasks, log_losses=log_losses)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        gramian_methods = [
            n
            for n in METHODS.names()
            if issubclass(METHODS.get(n), GramianWeighting) and n != "cr_mogm"
        ]
        if base not in gramian_methods:
            raise ValueError(
                f"base must be a Gramian method, one of {', '.join(gramian_methods)}; got {base!r}"
            )
        self.base_name = base
        self.base: GramianWeighting = create(base, n_tasks)  # type: ignore[assignment]
        self.alpha = alpha
        self.scale = self.base.scale  # type: ignore[misc]
        self.stochastic = self.base.stochastic  # type: ignore[misc]
        self.scale_equivariant = self.base.scale_equivariant  # type: ignore[misc]
        self.register_buffer("lambd", torch.zeros(n_tasks, dtype=torch.float64))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    def weights(self, gramian: Tensor, losses: Tensor) -> Tensor:
        before = self.base.fallbacks
        current = self.base.weights(gramian, losses).detach().cpu().double()
        self.fallbacks += self.base.fallbacks - before
        if not bool(torch.isfinite(current).all()):
            return self.fallback(self.lambd.cpu().clone()).to(gramian)
        previous = self.lambd.cpu() if bool(self.started) else current
        lambd = self.alpha * previous + (1.0 - self.alpha) * current
        self.lambd.copy_(lambd.to(self.lambd))
        self.started.fill_(True)
        return lambd.to(gramian)

    def extra_repr(self) -> str:
        return f"base={self.base_name!r}, alpha={self.alpha}"
