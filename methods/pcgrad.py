"""PCGrad: project each task gradient off the gradients it conflicts with, in random order."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from mtlbench.method import Aggregate, GramianWeighting, Scale, register


def pcgrad_coefficients(gramian: Tensor, orders: Tensor) -> Tensor:
    """Coefficients ``C`` (K x K) with projected gradients ``g'_i = sum_k C_ik g_k``.

    ``orders[i]`` (a K x K integer tensor) is the order in which task ``i``'s gradient is
    projected against the original gradients ``g_j`` (itself included, as the reference code).
    All inner products come from ``gramian``: ``<g'_i, g_j> = (C G)_ij`` and ``|g_j|^2 = G_jj``.
    The K projections are independent, so step ``t`` handles every task at once.
    """
    k = gramian.shape[0]
    coeffs = torch.eye(k, dtype=gramian.dtype)
    rows = torch.arange(k)
    norms2 = gramian.diagonal()
    for t in range(k):
        js = orders[:, t]
        dots = (coeffs * gramian[:, js].T).sum(1)  # <g'_i, g_{js_i}>
        norm2 = norms2[js]
        project = (dots < 0) & (norm2 > 0)
        step = torch.where(project, dots / torch.where(project, norm2, 1.0), 0.0)
        coeffs[rows, js] -= step
    return coeffs


@register("pcgrad")
class PCGrad(GramianWeighting):
    """PCGrad, "gradient surgery" (Yu et al., "Gradient Surgery for Multi-Task Learning",
    NeurIPS 2020, arXiv 2001.06782), as the nash-mtl / FAMO ``PCGrad`` (itself from
    WeiChengTseng/Pytorch-PCGrad) and LibMTL ``PCGrad``. For each task ``i``, starting from
    ``g'_i = g_i``, in a fresh random order of all tasks ``j`` (``i`` included)::

        if <g'_i, g_j> < 0:   g'_i <- g'_i - <g'_i, g_j> / |g_j|^2  g_j
        update = sum_i g'_i                                        ("sum" reduction)

    Every ``g'_i`` stays a combination ``sum_k C_ik g_k`` of the original gradients, and every
    inner product it needs is an entry of ``C G``: PCGrad is a Gramian method whose weights are
    the column sums ``w = 1^T C`` (``update = w^T J``), computed in float64 on the K x K Gramian
    (so it also runs on representation gradients). The orders are ``torch.randperm`` draws from
    torch's global CPU generator, one per task (the reference shuffles with Python's ``random``):
    ``stochastic = True``.

    The task heads get the gradient of ``sum_k l_k`` (``head_weights = 1``), as the reference's
    task-specific parameters; ``scale = "sum"``. The reference clips the shared gradient to norm
    1.0 after the surgery; here clipping is the trainer's ``clip_grad_norm`` policy. A non-finite
    Gramian falls back to the plain sum (``w = 1``), counted in ``fallbacks``.
    """

    summary: ClassVar[str] = "Projects each task gradient off those it conflicts with."
    paper: ClassVar[str] = (
        "Yu et al., Gradient Surgery for Multi-Task Learning, NeurIPS 2020 (arXiv 2001.06782)"
    )
    scale: ClassVar[Scale] = "sum"
    linear_under_scaling: ClassVar[bool] = True
    stochastic: ClassVar[bool] = True
    # The projections depend on G up to its scale: aggregate(c J) = c aggregate(J) for c > 0.
    scale_equivariant: ClassVar[bool] = True

    def __init__(self, n_tasks: int, log_losses: bool = False) -> None:
        super().__init__(n_tasks, log_losses=log_losses)

    def weights(self, gramian: Tensor, losses: Tensor) -> Tensor:
        k = self.n_tasks
        orders = torch.stack([torch.randperm(k) for _ in range(k)])
        if not bool(torch.isfinite(gramian).all()):
            return self.fallback(torch.ones(k, dtype=gramian.dtype))
        return pcgrad_coefficients(gramian, orders).sum(0)

    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Aggregate:
        agg = super().aggregate(jacobian, losses)
        heads = self.loss_transform(losses.detach()).to(jacobian)
        return Aggregate(update=agg.update, weights=agg.weights, head_weights=heads)
