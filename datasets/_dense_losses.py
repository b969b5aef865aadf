"""The training losses of the dense-prediction benchmarks (NYU-v2, Cityscapes).

Segmentation: NLL of the log-softmax with ``ignore_index = -1``. Depth: L1, and normals: ``1 -
mean dot product``, both over the valid pixels, where the ground truth summed over its channels
is non-zero (the reference's mask). Source (read, not copied): ``experiments/{nyuv2,
cityscapes}/utils.py`` of Cranial-XIX/FAMO@0a6ad06; protocols.md 4.1, 4.2. A batch without a
valid depth / normal pixel gives the reference NaN (0 / 0); here its loss is 0.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def valid_mask(target: Tensor) -> Tensor:
    """``B x 1 x H x W`` bool: pixels whose ground truth summed over channels is non-zero."""
    return target.sum(dim=1, keepdim=True) != 0


def segmentation_loss(log_probs: Tensor, label: Tensor) -> Tensor:
    """NLL of the log-softmax, ignoring label -1."""
    return F.nll_loss(log_probs, label, ignore_index=-1)


def depth_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over the valid pixels."""
    mask = valid_mask(target).to(pred.dtype)
    return ((pred - target).abs() * mask).sum() / mask.sum().clamp_min(1)


def normal_loss(pred: Tensor, target: Tensor) -> Tensor:
    """One minus the mean dot product over the valid pixels."""
    mask = valid_mask(target).to(pred.dtype)
    return 1 - (pred * target * mask).sum() / mask.sum().clamp_min(1)
