"""The training augmentation of the dense-prediction benchmarks (NYU-v2, Cityscapes).

A random scale ``s`` in {1.0, 1.2, 1.5}, a crop of ``(int(H / s), int(W / s))`` at a uniform
offset resized back to ``(H, W)`` (bilinear with align_corners for image and normals, nearest
for labels and depth; depth divided by ``s``; the normals are not re-normalised), then a
horizontal flip with probability 1/2 that negates the normals' x component. The reference
(``RandomScaleCrop`` in ``experiments/{nyuv2,cityscapes}/data.py`` of Cranial-XIX/FAMO@0a6ad06,
from MTAN's ``create_dataset.py``, lorenmt/mtan@c36c30b; protocols.md 4.1, 4.2) draws from
Python's ``random`` and the global torch RNG; here each draw comes from the generator it is
given (:class:`~mtlbench.datasets._dense_data.NpyDataset` seeds one per sample).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

SCALES = (1.0, 1.2, 1.5)


@dataclass(frozen=True)
class ScaleCropFlip:
    """One draw of the augmentation: crop ``(int(H / scale), int(W / scale))`` at ``(top,
    left)``, resize back, then flip horizontally when ``flip``."""

    scale: float
    top: int
    left: int
    flip: bool


def draw_augmentation(
    generator: torch.Generator, height: int, width: int, scales: Sequence[float] = SCALES
) -> ScaleCropFlip:
    """Scale uniform over ``scales``, offset uniform over the valid range, flip with p = 1/2."""
    scale = scales[int(torch.randint(len(scales), (1,), generator=generator))]
    h, w = int(height / scale), int(width / scale)
    top = int(torch.randint(height - h + 1, (1,), generator=generator))
    left = int(torch.randint(width - w + 1, (1,), generator=generator))
    flip = bool(torch.rand(1, generator=generator) < 0.5)
    return ScaleCropFlip(scale, top, left, flip)


def augment(sample: Mapping[str, Tensor], p: ScaleCropFlip) -> dict[str, Tensor]:
    """Apply one draw to a sample (``image`` 3HW, ``label`` HW, ``depth`` 1HW, ``normal`` 3HW)."""
    height, width = sample["image"].shape[-2:]
    h, w = int(height / p.scale), int(width / p.scale)
    rows, cols = slice(p.top, p.top + h), slice(p.left, p.left + w)

    def resize(x: Tensor, mode: str) -> Tensor:
        crop = x[None, :, rows, cols]
        if mode == "bilinear":
            return F.interpolate(crop, (height, width), mode="bilinear", align_corners=True)[0]
        return F.interpolate(crop, (height, width), mode="nearest")[0]

    out = {}
    for kind, x in sample.items():
        if kind == "label":
            y = resize(x[None], "nearest")[0]
        elif kind == "depth":
            y = resize(x, "nearest") / p.scale
        else:  # image, normal
            y = resize(x, "bilinear")
        if p.flip:
            y = torch.flip(y, dims=[-1])
            if kind == "normal":
                y[0] = -y[0]
        out[kind] = y
    return out
