"""STCH: smooth Tchebycheff scalarisation of the nadir-normalised log losses."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from mtlbench.method import LossWeighting, Objective, Scale, StepContext, register
from mtlbench.registry import NonNegativeInt, PositiveFloat
from mtlbench.space import Choice

_TINY = 1e-20  # the reference's guard inside the logs


@register("stch")
class STCH(LossWeighting):
    """Smooth Tchebycheff scalarisation (Lin et al., "Smooth Tchebycheff Scalarization for
    Multi-Objective Optimization", ICML 2024, arXiv 2402.19078), as its multi-task code
    (Xi-L/STCH ``STCH_MTL``, ported to LibMTL ``weighting/STCH.py``). With ``d = l - l*`` and the
    epoch ``e`` of the step (``StepContext.epoch``, counted from 0)::

        e <  warmup:  L = sum_k log(d_k + 1e-20)
        e == warmup:  L = sum_k log(d_k + 1e-20), and d is accumulated: n = mean of d over the
                      steps of that epoch (the nadir estimate)
        e >  warmup:  x_k = log(d_k / n_k + 1e-20),  m = sg(max_k x_k)
                      L = K mu log sum_k exp((x_k - m) / mu)

    The last form equals ``K (mu logsumexp(x / mu) - m)``: ``m`` shifts the value only, and its
    gradient is ``sum_k K softmax(x / mu)_k grad l_k / (d_k + 1e-20 n_k)``. The reported
    ``weights`` are these effective coefficients of the raw-loss gradients (``1 / (d_k + 1e-20)``
    during the warm-up, as SI). At the nadir the softmax is uniform and the weights are those of
    SI again: ``scale = "sum"``. With the defaults (LibMTL ``--STCH_mu 1.0``,
    ``--STCH_warmup_epoch 4``) epochs 0-4 train on the sum of log losses and epoch 4 records the
    nadir. The paper's preference vector is uniform here, as in the code.

    The nadir is set once, at the first step after the warm-up, from the accumulated sum and
    count (buffers, so it survives checkpoints). If no step of the warm-up epoch was seen (a run
    resumed past it without its state), the losses of that first step become the nadir.
    ``min_losses`` (``l*``, 0 by default, as the reference) is our addition, as FAMO's ``l*``,
    for losses that go negative such as the toy problem's.

    Search space: ``mu`` around LibMTL's 1.0 (the smoothing of the Tchebycheff max; the paper's
    values are UNVERIFIED).
    """

    summary: ClassVar[str] = "Smooth Tchebycheff: a soft maximum of the shifted losses."
    search_space = {"mu": Choice(0.1, 0.5, 1.0, 2.0)}

    paper: ClassVar[str] = (
        "Lin et al., Smooth Tchebycheff Scalarization for Multi-Objective Optimization, ICML 2024 "
        "(arXiv 2402.19078)"
    )
    scale: ClassVar[Scale] = "sum"

    def __init__(
        self,
        n_tasks: int,
        mu: PositiveFloat = 1.0,
        warmup_epochs: NonNegativeInt = 4,
        min_losses: list[float] | None = None,
    ) -> None:
        super().__init__(n_tasks)
        if mu <= 0:
            raise ValueError(f"mu must be positive, got {mu}")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be non-negative, got {warmup_epochs}")
        self.mu = mu
        self.warmup_epochs = warmup_epochs
        self.register_min_losses(min_losses)
        self.register_buffer("loss_sum", torch.zeros(n_tasks, dtype=torch.float64))
        self.register_buffer("loss_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("nadir", torch.zeros(n_tasks, dtype=torch.float64))
        self.register_buffer("has_nadir", torch.zeros((), dtype=torch.bool))

    def objective(self, losses: Tensor, ctx: StepContext) -> Objective:
        shifted = losses - self.min_losses.to(losses)
        if ctx.epoch <= self.warmup_epochs:
            if ctx.epoch == self.warmup_epochs:
                self.loss_sum += shifted.detach().to(self.loss_sum)
                self.loss_count += 1
            weights = 1.0 / (shifted.detach() + _TINY)
            return Objective(loss=(shifted + _TINY).log().sum(), weights=weights)
        if not bool(self.has_nadir):
            if int(self.loss_count) > 0:
                self.nadir = self.loss_sum / self.loss_count
            else:
                self.nadir = shifted.detach().to(self.nadir)
            self.has_nadir.fill_(True)
        nadir = self.nadir.to(losses)
        x = (shifted / nadir + _TINY).log()
        top = x.detach().max()
        k = self.n_tasks
        loss = k * self.mu * torch.logsumexp((x - top) / self.mu, dim=0)
        soft = torch.softmax(x.detach() / self.mu, dim=0)
        weights = k * soft / (shifted.detach() + _TINY * nadir)
        return Objective(loss=loss, weights=weights)
