"""GradDrop: keep, per coordinate, only the gradients of one randomly chosen sign."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from mtlbench.method import Aggregate, JacobianMethod, Scale, register
from mtlbench.registry import UnitInterval

_EPS = 1e-8  # the reference's guard in the sign purity
# Columns of J per block of the fused pass: K x 4,096 (640 KiB in float32 at K = 40) stays in the
# cache between the block's reads; 4,096 was the fastest of 1,024-16,384 (docs/performance.md).
_BLOCK = 4096


def sign_dropout(jacobian: Tensor, uniform: Tensor, leak: float = 0.0) -> tuple[Tensor, Tensor]:
    """GradDrop's masking of the K x P ``jacobian`` with one uniform draw per coordinate.

    Returns ``(masked, keep)``: ``masked[k] = g_k * (leak + (1 - leak) M_k)`` and the boolean
    masks ``M`` (K x P). With ``P = (1 + sum_k g_k / (sum_k |g_k| + 1e-8)) / 2`` per coordinate,
    ``M_k = (P > U and g_k > 0) or (P < U and g_k < 0)``.
    """
    purity = 0.5 * (1.0 + jacobian.sum(0) / (jacobian.abs().sum(0) + _EPS))
    keep = ((purity > uniform) & (jacobian > 0)) | ((purity < uniform) & (jacobian < 0))
    masked = jacobian * (leak + (1.0 - leak) * keep.to(jacobian))
    return masked, keep


@register("graddrop")
class GradDrop(JacobianMethod):
    """Gradient sign dropout (Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models
    with Gradient Sign Dropout", NeurIPS 2020, arXiv 2010.06808), in the variant of the nash-mtl /
    FAMO ``GradDrop`` (from the CAGrad code): applied to the per-task gradients of the shared
    *parameters*, coordinate by coordinate. With ``U ~ Uniform(0, 1)`` drawn per coordinate::

        P = 1/2 (1 + sum_k g_k / (sum_k |g_k| + 1e-8))           (sign purity)
        M_k = [P > U] [g_k > 0] + [P < U] [g_k < 0]
        update = mean_k g_k (leak + (1 - leak) M_k)

    The reference multiplies the mean by K "to match the sum loss": ``scale = "mean"``,
    ``reference_scale = "sum"``. ``leak`` (0 in the reference; the paper's leak parameter, also
    LibMTL's) lets a fraction of the dropped gradients through. The task heads get their own
    unweighted gradients, as in the reference (its K backward passes reach each head once):
    ``head_weights = 1 / K`` on this mean scale (1 under the reference ×K).

    The paper (and LibMTL) apply the masks to the gradients w.r.t. the shared *activations*,
    multiplied by their signs, summed over the batch, and back-propagate the result; that
    variant needs the activations themselves and is not implemented. The draw uses
    ``torch.rand`` on the Jacobian's device (as the reference's ``rand_like``):
    ``stochastic = True``. The reported ``weights`` are ``<update_k, g_k> / (K |g_k|^2)``, the
    share of each task's squared gradient norm that survives the masks, on the mean scale.
    """

    summary: ClassVar[str] = "Keeps one random sign of each conflicting gradient component."
    paper: ClassVar[str] = (
        "Chen et al., Just Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign "
        "Dropout, NeurIPS 2020 (arXiv 2010.06808)"
    )
    scale: ClassVar[Scale] = "mean"
    zero_at_zero: ClassVar[bool] = True  # a zero Jacobian gives a zero update
    reference_scale: ClassVar[Scale | None] = "sum"
    stochastic: ClassVar[bool] = True
    # Not scale_equivariant: the masks ignore a positive factor on J only up to the reference's
    # absolute 1e-8 guard in the purity; at |J| ~ 1e-8 the masks change (conformance kit).
    scale_equivariant: ClassVar[bool] = False

    def __init__(self, n_tasks: int, leak: UnitInterval = 0.0, log_losses: bool = False) -> None:
        super().__init__(n_tasks, log_losses=log_losses)
        if not 0.0 <= leak <= 1.0:
            raise ValueError(f"leak must be in [0, 1], got {leak}")
        self.leak = leak

    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Aggregate:
        """The masked mean without the K x P masks. With ``s_p = sign(P_p - U_p)`` a task's
        coordinate is kept iff ``g_kp s_p > 0``, so the kept gradients of a column sum to its
        positive part ``(S_p + A_p) / 2`` where ``s_p > 0`` and to its negative part
        ``(S_p - A_p) / 2`` where ``s_p < 0``, with ``S = sum_k g_k`` and ``A = sum_k |g_k|``,
        the two column sums the purity needs. The logged weights need ``|g_k|^2`` and
        ``sum_p relu(g_kp s_p)^2``. All of it in one pass over ``J``, by blocks of columns
        (:func:`_masked_mean_block`): each block is read from memory once and reused from the
        cache, with one K x block scratch and no K x P temporary."""
        factors = self.loss_transform(losses.detach()).to(jacobian)
        grads = jacobian.detach()
        k, p = grads.shape
        uniform = torch.rand(p, device=grads.device, dtype=grads.dtype)
        update = torch.empty(p, device=grads.device, dtype=grads.dtype)
        sums = torch.zeros(2, k, device=grads.device, dtype=grads.dtype)  # |g_k|^2, survived
        scratch = torch.empty(k, min(_BLOCK, p), device=grads.device, dtype=grads.dtype)
        scaled = torch.empty_like(scratch) if self.log_losses else None
        for start in range(0, p, _BLOCK):
            block = grads[:, start : start + _BLOCK]
            if scaled is not None:  # rows divided by the losses, block by block
                block = torch.mul(block, factors[:, None], out=scaled[:, : block.shape[1]])
            _masked_mean_block(
                block,
                uniform[start : start + _BLOCK],
                self.leak,
                update[start : start + _BLOCK],
                sums,
                scratch[:, : block.shape[1]],
            )
        norms2, survived = sums
        update.div_(k)
        kept = (self.leak * norms2 + (1.0 - self.leak) * survived) / torch.where(
            norms2 > 0, norms2, 1.0
        )
        return Aggregate(update=update, weights=kept / k, head_weights=factors / k)


def _masked_mean_block(
    block: Tensor, uniform: Tensor, leak: float, out: Tensor, sums: Tensor, scratch: Tensor
) -> None:
    """One block of columns of :meth:`GradDrop.aggregate`: writes the block's masked sum
    ``leak S + (1 - leak) kept`` into ``out`` and adds the rows' ``|g_k|^2`` and
    ``sum_p relu(g_kp s_p)^2`` to ``sums`` (2 x K); ``scratch`` is a K x block buffer."""
    total = block.sum(0)
    absolute = torch.abs(block, out=scratch).sum(0)
    side = torch.sign(0.5 * (1.0 + total / (absolute + _EPS)) - uniform)  # +1, -1 or 0 (none)
    kept_sum = 0.5 * (side * total + side.abs() * absolute) * side
    torch.add(kept_sum * (1.0 - leak), total, alpha=leak, out=out)
    sums[0] += torch.linalg.vector_norm(scratch, dim=1).square_()
    torch.mul(block, side, out=scratch).relu_()
    sums[1] += torch.linalg.vector_norm(scratch, dim=1).square_()
