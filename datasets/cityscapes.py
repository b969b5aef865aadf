"""Cityscapes (2 tasks): 7-class segmentation and (inverse) depth on MTAN's small preprocessed
Cityscapes (2,975 training and 500 test images of 128 x 256), with SegNet-MTAN.

Protocol of the FAMO code base (Cranial-XIX/FAMO@0a6ad06 ``experiments/cityscapes``;
protocols.md 4.2): Adam lr 1e-4, StepLR(100, 0.5), 200 epochs, batch size 8, augmentation on
(NYU-v2's, without normals). Labels from the ``label_7`` folder (MTAN also ships ``label_2`` and
``label_19``). Depth is the raw Cityscapes disparity as MTAN stores it ("inverse depth",
lorenmt/mtan issues #15 and #25), 0 where missing. Reporting is presumably, as for NYU-v2, the
mean test metrics of the last 10 epochs (``selection="last10_test_mean"``; UNVERIFIED for
Cityscapes: FAMO has no Cityscapes README); the default selects on a validation split carved
from the training files (``val_fraction``, ``split_seed``).

Units as the STL reference (``BASE`` of FAMO's ``experiments/cityscapes/utils.py``): mIoU and
pixel accuracy as fractions, depth errors raw (the relative error of about 27.8 is the raw mean
of ``|pred - gt| / gt``, large because the disparities are small).
"""

from __future__ import annotations

from dataclasses import dataclass

from mtlbench.benchmark import Metric, register
from mtlbench.datasets._dense import DenseBenchmark, DenseProtocol


@dataclass
class CityscapesProtocol(DenseProtocol):
    batch_size: int = 8


@register("cityscapes")
class Cityscapes(DenseBenchmark):
    tasks = ("segmentation", "depth")
    metrics = (
        Metric("seg_miou", "segmentation", higher_is_better=True, unit="fraction"),
        Metric("seg_pixacc", "segmentation", higher_is_better=True, unit="fraction"),
        Metric("depth_abs_err", "depth", higher_is_better=False, unit="disparity"),
        Metric("depth_rel_err", "depth", higher_is_better=False, unit="ratio"),
    )
    protocol_type = CityscapesProtocol
    paper = (
        "Cityscapes (Cordts et al., CVPR 2016) as preprocessed by MTAN (Liu et al., CVPR 2019), "
        "128x256 version; protocol of FAMO (Liu et al., NeurIPS 2023)"
    )
    description = "MTAN's small Cityscapes at 128x256: 7-class segmentation, depth; SegNet-MTAN"
    folders = {"image": "image", "label": "label_7", "depth": "depth"}
    n_classes = 7
    dataset_title = "MTAN's preprocessed Cityscapes, the 128x256 version"
    download = "https://www.dropbox.com/sh/gaw6vh6qusoyms6/AADwWi0Tp3E3M4B2xzeGlsEna?dl=0"
    fixture_shape = (32, 64)
    fixture_depth = (0.005, 0.49)
