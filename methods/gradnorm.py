"""GradNorm: learnable task weights that balance the task gradient norms."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from mtlbench.method import GramianWeighting, Scale, register
from mtlbench.registry import NonNegativeFloat
from mtlbench.space import Choice

InitialLoss = Literal["first_epoch", "first_step"]


@register("gradnorm")
class GradNorm(GramianWeighting):
    """GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for
    Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018, arXiv 1711.02257), as
    LibMTL ``weighting/GradNorm.py``.

    Task weights ``w = K softmax(theta)`` (``theta = 0`` at start, so ``w = 1``; they sum to K,
    ``scale = "sum"``). With ``n_k = |g_k| = sqrt(G_kk)`` and ``L0`` the initial losses::

        G_k   = w_k n_k,          Gbar = mean_k G_k
        r_k   = (l_k / L0_k) / mean_j (l_j / L0_j)            (relative inverse training rate)
        L_grad = sum_k |G_k - sg(Gbar r_k^alpha)|               (alpha = 1.5)
        dL_grad/dw_k = sign(G_k - Gbar r_k^alpha) n_k
        dL_grad/dtheta_j = K s_j (a_j - sum_k a_k s_k),  a = dL_grad/dw,  s = softmax(theta)

    The update uses the current weights, ``d = sum_k w_k g_k``, and the closed-form gradient of
    ``L_grad`` is written into ``theta.grad``: ``theta`` is an ``nn.Parameter`` that the trainer's
    optimizer steps together with the model, at the model's learning rate, as in LibMTL (where
    ``loss_scale`` is a model parameter); no second backward pass is needed.

    ``initial_loss = "first_epoch"`` (LibMTL): during epoch 0 the weights stay 1 and are not
    updated, and ``L0`` is the mean training loss of that epoch (the trainer's
    :meth:`on_epoch_start` tells the epoch). ``"first_step"`` (the paper): ``L0`` are the losses of
    the first step and the weights are updated from then on.

    Differences from the paper: the paper renormalises the raw weights to sum to K after each
    step (LibMTL's softmax parametrisation does this by construction) and measures ``n_k`` on the
    last shared layer only. Our methods see the Jacobian of all shared parameters (LibMTL uses
    all of them too): ``n_k`` is the norm of the full shared-parameter gradient. With the engine's
    ``wrt = "representation"`` it is the gradient of the shared representation instead, closer to
    the paper's choice. ``theta``, the epoch and the loss statistics live in ``state_dict``.

    Search space: ``alpha``, the asymmetry the paper tunes per dataset in [0, 3] (1.5, LibMTL's
    default, is its NYU-v2 value; the grid is ours, the paper's exact values UNVERIFIED).
    """

    summary: ClassVar[str] = "Learns weights that equalise the task gradient norms."
    search_space = {"alpha": Choice(0.5, 1.0, 1.5, 2.0, 3.0)}

    paper: ClassVar[str] = (
        "Chen et al., GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep "
        "Multitask Networks, ICML 2018 (arXiv 1711.02257)"
    )
    scale: ClassVar[Scale] = "sum"

    def __init__(
        self,
        n_tasks: int,
        alpha: NonNegativeFloat = 1.5,
        initial_loss: InitialLoss = "first_epoch",
        log_losses: bool = False,
    ) -> None:
        super().__init__(n_tasks, log_losses=log_losses)
        self.alpha = alpha
        self.initial_loss = initial_loss
        self.loss_scale = nn.Parameter(torch.zeros(n_tasks))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self.register_buffer("loss_sum", torch.zeros(n_tasks, dtype=torch.float64))
        self.register_buffer("loss_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("initial_losses", torch.ones(n_tasks, dtype=torch.float64))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch.fill_(epoch)

    def current_weights(self) -> Tensor:
        """``K softmax(theta)`` (float64, CPU)."""
        return self.n_tasks * torch.softmax(self.loss_scale.detach().cpu().double(), dim=0)

    def weights(self, gramian: Tensor, losses: Tensor) -> Tensor:
        losses = losses.detach().cpu().double()
        if self.initial_loss == "first_epoch" and int(self.epoch) == 0:
            if bool(torch.isfinite(losses).all()):
                self.loss_sum += losses.to(self.loss_sum)
                self.loss_count += 1
            return torch.ones(self.n_tasks, dtype=gramian.dtype)
        if not bool(self.initialized):
            count = int(self.loss_count)
            start = self.loss_sum.cpu() / count if count > 0 else losses
            if bool(torch.isfinite(start).all()):
                self.initial_losses.copy_(start)
                self.initialized.fill_(True)
        w = self.current_weights()
        g = gramian.detach().cpu().double()
        norms = g.diagonal().clamp_min(0.0).sqrt()
        grad_norms = w * norms
        ratio = losses / self.initial_losses.cpu()
        rate = ratio / ratio.mean()
        target = grad_norms.mean() * rate.pow(self.alpha)
        dw = torch.sign(grad_norms - target) * norms
        s = w / self.n_tasks
        dtheta = self.n_tasks * s * (dw - (dw * s).sum())
        if not (bool(self.initialized) and bool(torch.isfinite(dtheta).all())):
            # Non-finite Gramian or losses: keep the weights, no update of theta.
            self.loss_scale.grad = None
            return self.fallback(w)
        self.loss_scale.grad = dtheta.to(self.loss_scale)
        return w
