"""The base of the dense-prediction benchmarks (NYU-v2, Cityscapes) in MTAN's preprocessed
``.npy`` format: protocol, splits, loaders, model, losses and evaluator put together.

Sources (read, not copied): ``experiments/{nyuv2,cityscapes}/{data,utils,trainer}.py`` in
Cranial-XIX/FAMO@0a6ad06 (the same files are in Nash-MTL and LDC-MTL@7c39465), and MTAN's
``im2im_pred/create_dataset.py`` (lorenmt/mtan@c36c30b); protocols.md sections 4.1 and 4.2.
The parts, one module each:

- :mod:`~mtlbench.datasets._dense_data`: the on-disk format, loading, the validation split;
- :mod:`~mtlbench.datasets._dense_transforms`: the random scale-crop and flip of training;
- :mod:`~mtlbench.datasets._segnet_mtan`: the SegNet-MTAN network;
- :mod:`~mtlbench.datasets._dense_losses`: segmentation NLL, depth L1, normal dot product;
- :mod:`~mtlbench.datasets._dense_metrics`: mIoU, pixel accuracy, depth and normal errors;
- :mod:`~mtlbench.datasets._dense_fixture`: random data in the format, for tests;
- :mod:`~mtlbench.datasets._sampling`: the epoch order shared with every benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from mtlbench.benchmark import (
    Benchmark,
    DataUnavailable,
    Evaluator,
    MultiTaskModel,
    Protocol,
    Reference,
    Split,
)
from mtlbench.datasets._dense_data import NpyDataset, carve_validation, check_folders
from mtlbench.datasets._dense_fixture import write_npy_fixture
from mtlbench.datasets._dense_losses import depth_loss, normal_loss, segmentation_loss
from mtlbench.datasets._dense_metrics import DenseEvaluator
from mtlbench.datasets._published import published_reference
from mtlbench.datasets._sampling import EpochSampler, epoch_loader
from mtlbench.datasets._segnet_mtan import Activation, segnet_mtan
from mtlbench.registry import ConfigError, NonNegativeInt, PositiveInt, Range


@dataclass
class DenseProtocol(Protocol):
    """The FAMO protocol of NYU-v2 / Cityscapes (protocols.md 4.1, 4.2) plus data options.

    ``augment``: the random scale-crop and flip on training batches. ``val_fraction``: the
    share of MTAN's training files held out as the validation split (drawn by ``split_seed``,
    the same for every trial); ``0`` trains on all of them as the papers do, and then the "val"
    split is the test set, which only the ``last10_test_mean`` or ``last`` selection may use.
    ``eval_batch_size``: batch size of evaluation (``None``: ``batch_size``, as the reference;
    per-batch statistics depend on it). ``stats``: ``per_batch`` (reference) or ``pooled``.
    ``num_workers``: DataLoader worker processes.
    """

    epochs: int = 200
    batch_size: int = 2
    lr: float = 1e-4
    scheduler: str | None = "step:100:0.5"
    augment: bool = True
    val_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.1
    split_seed: NonNegativeInt = 0
    eval_batch_size: PositiveInt | None = None
    stats: Literal["per_batch", "pooled"] = "per_batch"
    num_workers: NonNegativeInt = 4


class DenseBenchmark(Benchmark):
    """Base of the MTAN ``.npy`` benchmarks; subclasses set the class attributes below."""

    folders: ClassVar[dict[str, str]] = {}  # kind -> folder, in batch order
    n_classes: ClassVar[int] = 0
    dataset_title: ClassVar[str] = ""
    download: ClassVar[str] = ""
    fixture_shape: ClassVar[tuple[int, int]] = (32, 64)
    fixture_depth: ClassVar[tuple[float, float]] = (0.5, 10.0)
    feature_dim = 64
    protocol: DenseProtocol

    def __init__(self, protocol: Protocol, data_root: Path | None = None, seed: int = 0) -> None:
        super().__init__(protocol, data_root, seed)
        p = self.protocol
        if not 0 <= p.val_fraction < 1:
            raise ConfigError(f"protocol.val_fraction must be in [0, 1), got {p.val_fraction}")
        if p.val_fraction == 0 and p.selection == "best_val_delta_m":
            raise ConfigError(
                "val_fraction = 0 leaves no validation split (val would be the test set): "
                "use selection 'last10_test_mean' or 'last', or a val_fraction > 0"
            )
        self._loaders: dict[str, tuple[DataLoader, EpochSampler]] = {}
        self._ready = False

    @property
    def has_normals(self) -> bool:
        return "normal" in self.folders

    @classmethod
    def smoke_protocol(cls) -> dict[str, Any]:
        return {"epochs": 1, "max_steps": 2, "batch_size": 2, "num_workers": 0}

    def reference(self) -> Reference | None:
        return published_reference(self.name)

    # ---- data ----------------------------------------------------------------------------

    def check_data(self) -> list[str]:
        get = f"get {self.dataset_title} ({self.download}) and put its train/ and val/ folders"
        return check_folders(self.data_root, self.folders, get, self.download)

    def _require_data(self) -> None:
        if self._ready:
            return
        lines = self.check_data()
        if lines:
            raise DataUnavailable(
                f"{self.name} data not ready in {self.data_root}: " + " | ".join(lines)
            )
        self._ready = True

    def split_files(self) -> dict[str, tuple[str, list[int]]]:
        """``{split: (folder, file indices)}``: train / val carved from MTAN's ``train/`` and
        test = MTAN's ``val/`` (val = test when ``val_fraction`` is 0)."""
        root, p = self.data_root, self.protocol
        n_train = len(list((root / "train" / "image").glob("*.npy")))
        n_test = len(list((root / "val" / "image").glob("*.npy")))
        train, val = carve_validation(n_train, p.val_fraction, p.split_seed)
        test = ("val", list(range(n_test)))
        return {"train": ("train", train), "val": ("train", val) if val else test, "test": test}

    def _loader(self, split: Split) -> tuple[DataLoader, EpochSampler]:
        if split not in self._loaders:
            p = self.protocol
            folder, files = self.split_files()[split]
            train = split == "train"
            dataset = NpyDataset(
                self.data_root / folder, files, self.folders, train and p.augment, self.seed
            )
            size = p.batch_size if train else (p.eval_batch_size or p.batch_size)
            self._loaders[split] = epoch_loader(dataset, size, train, self.seed, p.num_workers)
        return self._loaders[split]

    def batches(self, split: Split, epoch: int = 0) -> DataLoader:
        self._require_data()
        loader, sampler = self._loader(split)
        sampler.set_epoch(epoch)
        return loader

    @classmethod
    def write_fixture(cls, root: Path) -> None:
        """8 training and 4 test samples of ``fixture_shape`` in MTAN's format
        (:func:`~mtlbench.datasets._dense_fixture.write_npy_fixture`)."""
        write_npy_fixture(root, cls.folders, cls.n_classes, cls.fixture_shape, cls.fixture_depth)

    # ---- model, losses, metrics ----------------------------------------------------------

    def build_model(self) -> MultiTaskModel:
        outputs: list[tuple[int, Activation]] = [(self.n_classes, "log_softmax"), (1, "none")]
        if self.has_normals:
            outputs.append((3, "l2_normalize"))
        return segnet_mtan(outputs)

    def task_losses(self, outputs: list[Tensor], batch: Any) -> Tensor:
        losses = [segmentation_loss(outputs[0], batch[1]), depth_loss(outputs[1], batch[2])]
        if self.has_normals:
            losses.append(normal_loss(outputs[2], batch[3]))
        return torch.stack(losses)

    def evaluator(self) -> Evaluator:
        return DenseEvaluator(self.n_classes, self.has_normals, self.protocol.stats)
