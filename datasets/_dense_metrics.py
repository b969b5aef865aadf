"""The evaluation metrics of the dense-prediction benchmarks (NYU-v2, Cityscapes).

Sources (read, not copied): ``experiments/{nyuv2,cityscapes}/utils.py`` (``ConfMatrix``,
``depth_error``, ``normal_error``) and ``trainer.py`` of Cranial-XIX/FAMO@0a6ad06 (the same
files are in Nash-MTL and LDC-MTL@7c39465); protocols.md sections 4.1 and 4.2.

mIoU and pixel accuracy come from a confusion matrix accumulated over the split (labels outside
``[0, C)`` ignored); depth absolute and relative error, and the normal angle error (degrees)
summarised as mean, median and the fractions below 11.25, 22.5 and 30 degrees, over the valid
pixels (:func:`~mtlbench.datasets._dense_losses.valid_mask`). With ``stats = "per_batch"`` (the
default, the reference's) the depth and normal statistics are computed per evaluation batch and
averaged over batches, so they depend on the evaluation batch size (the reference's is the
training batch size) and the "median" is a mean of per-batch medians. ``stats = "pooled"``
computes them over all valid pixels of the split instead (the median read off a 0.01-degree
histogram, so within about a bin of numpy's median when the angles are dense, as over a test
split).

Departures, in degenerate cases only: a batch without valid depth / normal pixels gives the
reference NaN (0 / 0); here it is left out of the per-batch mean. The reference's mIoU is NaN
when a class occurs in neither the labels nor the predictions of the whole split; here such
classes are left out of the mean (identical otherwise).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mtlbench.benchmark import Evaluator
from mtlbench.datasets._dense_losses import valid_mask

ANGLE_THRESHOLDS = (11.25, 22.5, 30.0)
HISTOGRAM_BINS = 18_000  # 0.01 degree bins on [0, 180] for the pooled median


def confusion_matrix(pred: Tensor, target: Tensor, n_classes: int) -> Tensor:
    """``C x C`` int64 counts, rows = ground truth, columns = prediction; labels outside
    ``[0, C)`` are ignored."""
    keep = (target >= 0) & (target < n_classes)
    idx = n_classes * target[keep].long() + pred[keep].long()
    return torch.bincount(idx, minlength=n_classes**2).reshape(n_classes, n_classes)


def miou(matrix: Tensor) -> float:
    """Mean over classes of ``TP / (TP + FP + FN)`` (classes absent from both left out)."""
    m = matrix.double()
    tp = m.diag()
    union = m.sum(0) + m.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if bool(present.any()) else float("nan")


def pixel_accuracy(matrix: Tensor) -> float:
    """Correctly labelled pixels over all counted pixels: ``trace(M) / sum(M)``."""
    m = matrix.double()
    return float(m.diag().sum() / m.sum())


def depth_error_sums(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sums of ``|pred - gt|`` and ``|pred - gt| / gt`` over valid pixels, and their count."""
    mask = valid_mask(target)
    p, g = pred.masked_select(mask), target.masked_select(mask)
    diff = (p - g).abs()
    return diff.sum(), (diff / g).sum(), mask.sum()


def normal_angles(pred: Tensor, target: Tensor) -> Tensor:
    """Angle errors in degrees (float32) over the valid pixels (gt summed over xyz non-zero)."""
    mask = target.sum(dim=1) != 0
    cos = (pred * target).sum(dim=1).masked_select(mask).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos))


def median(values: Tensor) -> Tensor:
    """The median as numpy's (mean of the two middle values for an even count)."""
    s = values.flatten().sort().values
    n = s.numel()
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def angle_summary(angles: Tensor) -> Tensor:
    """``[mean, median, frac < 11.25, frac < 22.5, frac < 30]`` (float64) of angle errors."""
    a = angles.double()
    within = [(a < t).double().mean() for t in ANGLE_THRESHOLDS]
    return torch.stack([a.mean(), median(a), *within])


class DepthAccumulator:
    """Depth abs / rel error of a split, per batch averaged (``per_batch``) or ``pooled``."""

    def __init__(self, stats: str = "per_batch") -> None:
        self.stats = stats
        self.totals = torch.zeros(2, dtype=torch.float64)
        self.count = 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        s_abs, s_rel, n = depth_error_sums(pred, target)
        n = int(n)
        if n == 0:
            return
        sums = torch.stack([s_abs, s_rel]).double().cpu()
        if self.stats == "per_batch":
            self.totals += sums / n
            self.count += 1
        else:
            self.totals += sums
            self.count += n

    def compute(self) -> tuple[float, float]:
        if self.count == 0:
            return float("nan"), float("nan")
        abs_err, rel_err = (self.totals / self.count).tolist()
        return abs_err, rel_err


class NormalAccumulator:
    """Normal angle statistics of a split, per batch averaged (``per_batch``) or ``pooled``."""

    def __init__(self, stats: str = "per_batch") -> None:
        self.stats = stats
        self.totals = torch.zeros(5, dtype=torch.float64)
        self.count = 0
        self.histogram = torch.zeros(HISTOGRAM_BINS, dtype=torch.float64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        angles = normal_angles(pred, target)
        n = angles.numel()
        if n == 0:
            return
        if self.stats == "per_batch":
            self.totals += angle_summary(angles).cpu()
            self.count += 1
            return
        a = angles.double()
        within = [(a < t).sum().double() for t in ANGLE_THRESHOLDS]
        self.totals += torch.stack([a.sum(), a.new_zeros(()), *within]).cpu()
        self.histogram += torch.histc(angles.float(), HISTOGRAM_BINS, 0, 180).double().cpu()
        self.count += n

    def compute(self) -> list[float]:
        if self.count == 0:
            return [float("nan")] * 5
        values = (self.totals / self.count).tolist()
        if self.stats == "pooled":
            values[1] = histogram_median(self.histogram, 0.0, 180.0)
        return values


def histogram_median(histogram: Tensor, low: float, high: float) -> float:
    """The median of a histogram of equal-width bins on ``[low, high]``, linear inside a bin."""
    cum = histogram.cumsum(0)
    half = float(cum[-1]) / 2
    b = int(torch.searchsorted(cum, torch.tensor([half], dtype=cum.dtype)).item())
    width = (high - low) / histogram.numel()
    before = float(cum[b - 1]) if b > 0 else 0.0
    inside = float(histogram[b])
    return low + width * (b + ((half - before) / inside if inside > 0 else 0.5))


class DenseEvaluator(Evaluator):
    """Segmentation, depth and (optionally) normal metrics of a split, under the benchmark's
    metric names ``<prefix>...``; see the module docstring for the definitions."""

    def __init__(self, n_classes: int, normals: bool, stats: str = "per_batch") -> None:
        self.n_classes = n_classes
        self.matrix: Tensor | None = None
        self.depth = DepthAccumulator(stats)
        self.normal = NormalAccumulator(stats) if normals else None

    def update(self, outputs: list[Tensor], batch: Any) -> None:
        m = confusion_matrix(outputs[0].argmax(dim=1), batch[1], self.n_classes)
        self.matrix = m if self.matrix is None else self.matrix + m
        self.depth.update(outputs[1], batch[2])
        if self.normal is not None:
            self.normal.update(outputs[2], batch[3])

    def compute(self) -> dict[str, float]:
        if self.matrix is None:
            raise RuntimeError("no batch was evaluated")
        values = {"seg_miou": miou(self.matrix), "seg_pixacc": pixel_accuracy(self.matrix)}
        values["depth_abs_err"], values["depth_rel_err"] = self.depth.compute()
        if self.normal is not None:
            names = ["normal_mean", "normal_median"]
            names += [f"normal_within_{t:g}".replace(".", "_") for t in ANGLE_THRESHOLDS]
            values.update(zip(names, self.normal.compute(), strict=True))
        return values
