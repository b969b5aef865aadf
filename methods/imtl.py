"""IMTL: IMTL-G's equal-projection combination of the gradients of IMTL-L's scaled losses."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from mtlbench.method import Aggregate, GramianWeighting, Scale, register
from mtlbench.methods._imtl_g import imtl_g_weights


@register("imtl")
class IMTL(GramianWeighting):
    """IMTL, impartial multi-task learning with both halves (Liu et al., "Towards Impartial
    Multi-task Learning", ICLR 2021, openreview IMPnRXEWpvr, Algorithm 1), as LibMTL
    ``weighting/IMTL.py`` (@4336804), whose ``IMTL`` is this hybrid.

    The losses are first scaled as in IMTL-L (``methods/imtl_l.py``), with learned ``s_k`` (0 at
    start) and ``d_k = l_k - l*_k`` (``l*`` the ``min_losses``, 0 by default)::

        l~_k = exp(s_k) d_k - s_k,      grad l~_k = exp(s_k) g_k,
        dl~_k/ds_k = exp(s_k) d_k - 1

    and IMTL-G (``methods/imtl_g.py``) combines the gradients of the scaled losses: with
    ``G~ = diag(e^s) G diag(e^s)``, ``alpha = imtl_g_weights(G~)`` (``sum alpha = 1``, equal
    projections of the update on every unit task gradient). The shared update is
    ``sum_k alpha_k exp(s_k) g_k``: the reported ``weights`` are ``alpha_k exp(s_k)`` on the raw
    gradients (``scale = "mean"``: they sum to 1 at start).

    As in LibMTL, where each scaled loss is back-propagated on its own:

    * ``s`` is an ``nn.Parameter`` stepped by the trainer's optimizer with the model, at the
      model's learning rate; its gradient ``exp(s_k) d_k - 1`` is written into ``.grad`` here
      (closed form, no second backward pass), as GradNorm does;
    * the heads train on the scaled losses, unweighted by ``alpha``: ``head_weights = exp(s)``,
      which the default ``head_grads = "weighted"`` policy applies. Under ``grad_wrt =
      representation`` the engine gives the heads the weights instead (``alpha_k exp(s_k)``).

    A non-finite Gramian or losses, or a failed solve, reuse the last ``alpha`` (uniform at
    first), leave ``s.grad`` empty and are counted in ``fallbacks``; IMTL-G's minimum-norm
    answer on a singular system and its weight 0 for a zero gradient apply. ``min_losses`` is
    our addition (see ``imtl_l``); LibMTL has no shift, and the toy's negative losses need it.
    """

    summary: ClassVar[str] = "IMTL-G on the learned-scale losses of IMTL-L (LibMTL's hybrid IMTL)."
    paper: ClassVar[str] = (
        "Liu et al., Towards Impartial Multi-task Learning, ICLR 2021 "
        "(openreview.net/forum?id=IMPnRXEWpvr)"
    )
    scale: ClassVar[Scale] = "mean"
    scale_equivariant: ClassVar[bool] = True

    def __init__(
        self, n_tasks: int, log_losses: bool = False, min_losses: list[float] | None = None
    ) -> None:
        super().__init__(n_tasks, log_losses=log_losses)
        self.log_scale = nn.Parameter(torch.zeros(n_tasks))
        self.register_min_losses(min_losses)
        self.register_buffer(
            "last_alpha", torch.full((n_tasks,), 1.0 / n_tasks, dtype=torch.float64)
        )

    def loss_scales(self) -> Tensor:
        """``exp(s)`` (float64, CPU)."""
        return self.log_scale.detach().cpu().double().exp()

    def weights(self, gramian: Tensor, losses: Tensor) -> Tensor:
        scales = self.loss_scales()
        shifted = losses.detach().cpu().double() - self.min_losses.cpu()
        alpha = None
        if bool(torch.isfinite(gramian).all()) and bool(torch.isfinite(shifted).all()):
            g = gramian.cpu().double() * scales[:, None] * scales[None, :]
            try:
                alpha = imtl_g_weights((g + g.T) / 2.0)
            except RuntimeError:
                alpha = None
        if alpha is None or not bool(torch.isfinite(alpha).all()):
            self.log_scale.grad = None
            return self.fallback(self.last_alpha.cpu() * scales).to(gramian)
        self.last_alpha.copy_(alpha.to(self.last_alpha))
        self.log_scale.grad = (scales * shifted - 1.0).to(self.log_scale)
        return (alpha * scales).to(gramian)

    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Aggregate:
        agg = super().aggregate(jacobian, losses)
        heads = self.loss_scales() * self.loss_transform(losses.detach().cpu().double())
        return Aggregate(update=agg.update, weights=agg.weights, head_weights=heads.to(jacobian))
