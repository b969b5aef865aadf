"""NYU-v2 (3 tasks): 13-class segmentation, depth and surface normals on MTAN's preprocessed
NYU-v2 (795 training and 654 test images of 288 x 384), with SegNet-MTAN.

Protocol of the FAMO code base (Cranial-XIX/FAMO@0a6ad06 ``experiments/nyuv2``; protocols.md
4.1): Adam lr 1e-4, StepLR(100, 0.5), 200 epochs, batch size 2, augmentation on. The published
numbers average the **test** metrics of the last 10 epochs (FAMO / Nash-MTL
``experiments/nyuv2/README.md``: there is no validation split); that rule is
``selection="last10_test_mean"`` here. The default selects instead on a validation split of 10 %
of MTAN's training files (``val_fraction``, ``split_seed``), which reads no test data.

Data, model, losses and metrics: :mod:`mtlbench.datasets._dense` and
:mod:`mtlbench.datasets._segnet_mtan`. Units as the STL reference (``BASE`` of FAMO's
``experiments/nyuv2/utils.py``, "base results from CAGrad"): mIoU, pixel accuracy and the
within-threshold values as fractions, depth errors in metres (relative error raw), angles in
degrees.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtlbench.benchmark import Metric, register
from mtlbench.datasets._dense import DenseBenchmark, DenseProtocol


@dataclass
class NYUv2Protocol(DenseProtocol):
    batch_size: int = 2


@register("nyuv2")
class NYUv2(DenseBenchmark):
    tasks = ("segmentation", "depth", "normal")
    metrics = (
        Metric("seg_miou", "segmentation", higher_is_better=True, unit="fraction"),
        Metric("seg_pixacc", "segmentation", higher_is_better=True, unit="fraction"),
        Metric("depth_abs_err", "depth", higher_is_better=False, unit="m"),
        Metric("depth_rel_err", "depth", higher_is_better=False, unit="ratio"),
        Metric("normal_mean", "normal", higher_is_better=False, unit="deg"),
        Metric("normal_median", "normal", higher_is_better=False, unit="deg"),
        Metric("normal_within_11_25", "normal", higher_is_better=True, unit="fraction"),
        Metric("normal_within_22_5", "normal", higher_is_better=True, unit="fraction"),
        Metric("normal_within_30", "normal", higher_is_better=True, unit="fraction"),
    )
    protocol_type = NYUv2Protocol
    paper = (
        "NYU-v2 (Silberman et al., ECCV 2012) as preprocessed by MTAN (Liu et al., CVPR 2019); "
        "protocol of FAMO (Liu et al., NeurIPS 2023)"
    )
    description = "MTAN's NYU-v2 at 288x384: 13-class segmentation, depth, normals; SegNet-MTAN"
    folders = {"image": "image", "label": "label", "depth": "depth", "normal": "normal"}
    n_classes = 13
    dataset_title = "MTAN's preprocessed NYUv2"
    download = "https://www.dropbox.com/sh/86nssgwm6hm3vkb/AACrnUQ4GxpdrBbLjb6n-mWNa?dl=0"
    fixture_shape = (32, 64)
    fixture_depth = (0.5, 10.0)
