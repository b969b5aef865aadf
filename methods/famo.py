"""FAMO: fast adaptive multitask optimization, O(1) loss weighting from observed loss decreases."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from mtlbench.method import LossWeighting, Objective, Scale, StepContext, register
from mtlbench.methods._defaults import benchmark_defaults
from mtlbench.registry import NonNegativeFloat, PositiveFloat
from mtlbench.space import Choice, LogUniform

_EPS = 1e-8  # FAMO's shift inside the logs
_BETAS = (0.9, 0.999)  # torch.optim.Adam defaults, used by the reference's logit optimizer
_ADAM_EPS = 1e-8


@register("famo")
class FAMO(LossWeighting):
    """FAMO (Liu, Feng, Stone, Liu, NeurIPS 2023, arXiv 2306.03792), as its code
    (``Cranial-XIX/FAMO`` ``famo.py`` / ``methods/weight_methods.py::FAMO``; methods.md §6.1).

    Logits ``xi`` (0 at start), ``z = softmax(xi)``, ``D_i = l_i - l*_i + 1e-8`` with ``l*`` the
    ``min_losses`` (0 by default). The model step back-propagates::

        L = sum_i z_i log D_i / c,      c = sg(sum_i z_i / D_i)

    whose gradient is ``sum_i (z_i / (c D_i)) grad l_i``: effective weights that sum to 1, the
    reported ``weights`` (``scale = "mean"``). After the optimizer step the trainer recomputes the
    losses of the same batch (``post_step_losses``) and :meth:`after_step` updates the logits::

        delta = log D(prev) - log D(new),      grad_xi = J_softmax(xi)^T delta = z (delta - z.delta)
        xi <- Adam(lr = w_lr, weight_decay = gamma) step on grad_xi

    As the code, and unlike Algorithm 1 of the paper (``xi <- xi - beta (delta + gamma xi)``),
    the decay enters Adam as L2 weight decay before its normalisation. The logits and the Adam
    moments are buffers (saved in ``state_dict``, never seen by the trainer's optimizer).

    ``gamma`` defaults to 0.01, the value every FAMO trainer uses unless told otherwise (the
    ``--gamma`` default of ``experiments/utils.py`` and of the standalone ``famo.py``); the
    ``WeightMethods`` class default ``1e-5`` is always overridden by the trainers and the paper's
    Algorithm 1 states 0.001. Per-benchmark values are those of the ``run.sh`` scripts.

    Search space: ``gamma`` the values of the reference ``run.sh`` files (0.001 CelebA / NYU-v2 /
    QM9, 0.01 Cityscapes, 0 the toy); ``w_lr`` log-uniform around the code's 0.025 (our range; the
    paper's sweep of the weight learning rate is UNVERIFIED).
    """

    summary: ClassVar[str] = "Balances the tasks' rates of loss decrease, one backward pass."
    search_space = {"gamma": Choice(0.0, 0.001, 0.01), "w_lr": LogUniform(0.005, 0.1, points=3)}

    paper: ClassVar[str] = "Liu, Feng, Stone & Liu, FAMO, NeurIPS 2023 (arXiv 2306.03792)"
    post_step_losses: ClassVar[bool] = True
    scale: ClassVar[Scale] = "mean"
    # Per-benchmark defaults of the reference code, with their provenance: the data table
    # methods/benchmark_defaults.yaml.
    benchmark_defaults: ClassVar[dict[str, dict[str, Any]]] = benchmark_defaults("famo")

    def __init__(
        self,
        n_tasks: int,
        gamma: NonNegativeFloat = 0.01,
        w_lr: PositiveFloat = 0.025,
        min_losses: list[float] | None = None,
    ) -> None:
        super().__init__(n_tasks)
        self.gamma = gamma
        self.w_lr = w_lr
        self.register_min_losses(min_losses)
        self.register_buffer("logits", torch.zeros(n_tasks))
        # float64, so that Adam's bias corrections are as exact as torch's (Python floats).
        self.register_buffer("adam_step", torch.zeros((), dtype=torch.float64))
        self.register_buffer("exp_avg", torch.zeros(n_tasks))
        self.register_buffer("exp_avg_sq", torch.zeros(n_tasks))
        self._prev: Tensor | None = None

    def _shifted(self, losses: Tensor) -> Tensor:
        return losses - self.min_losses.to(losses) + _EPS

    def objective(self, losses: Tensor, ctx: StepContext) -> Objective:
        z = torch.softmax(self.logits, -1).to(losses)
        d = self._shifted(losses)
        c = (z / d).sum().detach()
        self._prev = losses.detach().clone()
        weights = (z / (c * d)).detach()
        return Objective(loss=(z * d.log() / c).sum(), weights=weights)

    @torch.no_grad()
    def after_step(self, new_losses: Tensor) -> None:
        if self._prev is None:
            raise RuntimeError("FAMO.after_step needs the losses of objective() first")
        delta = (self._shifted(self._prev).log() - self._shifted(new_losses).log()).to(self.logits)
        self._prev = None
        z = torch.softmax(self.logits, -1)
        self._adam(z * (delta - (z * delta).sum()))

    def _adam(self, grad: Tensor) -> None:
        """One step of ``torch.optim.Adam(lr=w_lr, weight_decay=gamma)`` (its default betas and
        eps), written out so that its state lives in buffers."""
        beta1, beta2 = _BETAS
        grad = grad + self.gamma * self.logits
        self.adam_step += 1
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias1 = 1 - beta1**self.adam_step
        bias2_sqrt = (1 - beta2**self.adam_step).sqrt()
        denom = self.exp_avg_sq.sqrt() / bias2_sqrt + _ADAM_EPS
        self.logits.sub_(self.w_lr / bias1 * self.exp_avg / denom)
