"""CelebA (40 tasks): the 40 binary face attributes of the aligned CelebA images, with FAMO's CNN.

Sources (read, not copied): ``experiments/celeba/{data,models,trainer}.py`` of
Cranial-XIX/FAMO@0a6ad06; the STL list of OptMN-Lab/LDC-MTL@7c39465
``experiments/celeba/trainer.py``; protocols.md 3.2 and 4.3. Liu et al., "Deep Learning Face
Attributes in the Wild", ICCV 2015 (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html).

**Data.** ``img_align_celeba`` JPEGs (178 x 218), attributes from ``list_attr_celeba.txt`` (a
count line, a line of the 40 names, then ``NAME v1 ... v40`` with values +-1, mapped to {1, 0}
as the reference: ``1`` if the value is ``1``), the official split from
``list_eval_partition.txt`` (``NAME 0|1|2`` = train / val / test; 162,770 / 19,867 / 19,962
images). Accepted layouts under the data root: the published one (``Img/img_align_celeba/``,
``Anno/list_attr_celeba.txt``, ``Eval/list_eval_partition.txt``), the flat one (torchvision's:
``img_align_celeba/``, ``list_attr_celeba.txt``, ``list_eval_partition.txt``) and Kaggle's
(``img_align_celeba/img_align_celeba/``, ``list_attr_celeba.csv``, ``list_eval_partition.csv``).

**Transform.** Resize to 64 x 64 (aspect not kept) with PIL's bilinear filter, which is what
torchvision's ``Resize((64, 64))`` does to a PIL image, then ToTensor's ``/ 255``; no
normalisation. Batches carry uint8 images, and :meth:`CelebA.model_input` does the ``/ 255`` on
the device (a quarter of the host-to-device traffic, identical values).

**Model.** FAMO's ``Network``: conv3x3 (no bias) -> BN -> ReLU blocks 3-64 | pool | 64-128,
128-128 | pool | 128-256, 256-256 | pool | 256-512, 512-512 | global average pool, then twice
Linear(512, 512, no bias) -> BN1d -> ReLU; the encoder's output (B x 512) is the shared
representation. 40 heads Linear(512, 1) give logits. PyTorch's default initialisation.

**Loss.** Binary cross-entropy per attribute (batch mean), computed from the logits
(``binary_cross_entropy_with_logits``): the reference's ``BCELoss(sigmoid(z))`` in stable form.
The values agree except where the sigmoid saturates in float32 (|z| > about 17): there the
reference clamps log(0) to -100 (a loss of 100 and no gradient for a confidently wrong
prediction), while this gives the exact value and gradient.

**Metric.** Per-attribute F1 on a split: predictions ``sigmoid(z) > 0.5``, TP / FP / FN summed
over the split, ``P = TP / (TP + FP + 1e-8)``, ``R = TP / (TP + FN + 1e-8)``, ``F1 = 2PR / (P + R +
1e-8)``. Metric names ``f1_<attribute>``; ``f1_mean`` is reported as a diagnostic.

**Protocol** (FAMO): Adam lr 3e-4 constant, 15 epochs, batch size 256. FAMO's trainer tracks
the best validation mean F1 and saves every epoch's test F1; which epoch the published numbers
use is UNVERIFIED. The default selection here is the best validation Delta m (leak-free: CelebA
has a validation split). Loading: by default (``cache=True``) each split is decoded and resized
once, by as many processes as there are usable cores, into a uint8 tensor file
``cache_<S>x<S>_<split>.pt`` in ``cache_dir`` (default: the data root) and batched from memory;
with ``cache=False`` a DataLoader with ``num_workers`` processes decodes every epoch (pinned
memory under CUDA in both cases).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from mtlbench.benchmark import (
    Benchmark,
    DataUnavailable,
    Evaluator,
    Metric,
    MultiTaskModel,
    Protocol,
    Reference,
    Split,
    register,
)
from mtlbench.datasets._celeba_files import (
    ATTRIBUTES,
    SPLIT_CODES,
    CelebAImages,
    check_files,
    cpus,
    find_layout,
    read_attributes,
    read_partition,
    write_fixture,
)
from mtlbench.datasets._published import published_reference
from mtlbench.datasets._sampling import EpochSampler, epoch_loader, epoch_order
from mtlbench.registry import NonNegativeInt, PositiveInt

# --------------------------------------------------------------------------------------------
# Model and metric.


class Trunk(nn.Module):
    """FAMO's CelebA CNN without its heads: ``(B, 3, S, S)`` -> ``(B, 512)``."""

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        def dense() -> list[nn.Module]:
            return [nn.Linear(512, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU()]

        self.net = nn.Sequential(
            *block(3, 64), nn.MaxPool2d(2),
            *block(64, 128), *block(128, 128), nn.MaxPool2d(2),
            *block(128, 256), *block(256, 256), nn.MaxPool2d(2),
            *block(256, 512), *block(512, 512), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            *dense(), *dense(),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def f1_scores(tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
    """F1 from counts, with the reference's 1e-8 guards."""
    precision = tp / (tp + fp + 1e-8)
    recall = tp / (tp + fn + 1e-8)
    return 2 * precision * recall / (precision + recall + 1e-8)


class F1Evaluator(Evaluator):
    """TP / FP / FN per attribute over a split -> ``f1_<attribute>`` and ``f1_mean``."""

    def __init__(self) -> None:
        self.counts: Tensor | None = None  # 3 x 40: tp, fp, fn

    def update(self, outputs: list[Tensor], batch: Any) -> None:
        pred = (torch.sigmoid(torch.cat(outputs, dim=1)) > 0.5).double()
        y = batch[1].double()
        counts = torch.stack([(pred * y).sum(0), (pred * (1 - y)).sum(0), ((1 - pred) * y).sum(0)])
        self.counts = counts if self.counts is None else self.counts + counts

    def compute(self) -> dict[str, float]:
        if self.counts is None:
            raise RuntimeError("no batch was evaluated")
        f1 = f1_scores(*self.counts.cpu()).tolist()
        values = {f"f1_{a}": v for a, v in zip(ATTRIBUTES, f1, strict=True)}
        values["f1_mean"] = sum(f1) / len(f1)
        return values


# --------------------------------------------------------------------------------------------
# The benchmark.


@dataclass
class CelebAProtocol(Protocol):
    """FAMO's CelebA protocol plus loading options: ``image_size`` (64 in the papers),
    ``num_workers`` (DataLoader processes), ``cache`` (keep each resized split as a uint8
    tensor file, built once: about 2.5 GB at 64 x 64 for the three splits) and ``cache_dir``
    (``None``: the data root).

    ``cache`` is on by default because decoding is the bottleneck: on an H100 with 16 CPU
    cores a training step at batch 256 took 16.5 ms, while decoding and resizing a batch of
    JPEGs took 33 ms with 8 workers (38 ms with 16) and 0.8 ms from the cache; building the
    cache decoded about 1,900 images/s with 16 workers. The values are identical either way.
    """

    epochs: int = 15
    batch_size: int = 256
    lr: float = 3e-4
    image_size: PositiveInt = 64
    num_workers: NonNegativeInt = 4
    cache: bool = True
    cache_dir: str | None = None


@register("celeba")
class CelebA(Benchmark):
    tasks = tuple(ATTRIBUTES)
    metrics = tuple(Metric(f"f1_{a}", a, higher_is_better=True, unit="F1") for a in ATTRIBUTES)
    protocol_type = CelebAProtocol
    paper = (
        "CelebA (Liu et al., ICCV 2015), 40 attributes at 64x64; protocol of FAMO "
        "(Liu et al., NeurIPS 2023)"
    )
    description = "aligned CelebA at 64x64: 40 binary attributes; FAMO's 9-layer CNN"
    feature_dim = 512
    # 40 tasks in one vmapped backward hold 40 cotangents of every activation: about 45 GB at
    # batch 256 (6.2 GB measured at batch 32 on the CPU, docs/performance.md). Chunks of 8
    # tasks bound it to about a fifth of that; the update is the same.
    policies: ClassVar[dict[str, Any]] = {"jacobian_chunk": 8}
    protocol: CelebAProtocol

    def __init__(self, protocol: Protocol, data_root: Path | None = None, seed: int = 0) -> None:
        super().__init__(protocol, data_root, seed)
        self._splits: dict[str, tuple[list[str], Tensor]] | None = None
        self._loaders: dict[str, tuple[DataLoader, EpochSampler]] = {}
        self._cached: dict[str, Tensor] = {}

    @classmethod
    def smoke_protocol(cls) -> dict[str, Any]:
        # No cache: on the real data it would decode every image before the first step.
        return {"epochs": 1, "max_steps": 2, "batch_size": 8, "num_workers": 0, "cache": False}

    def reference(self) -> Reference | None:
        return published_reference("celeba")

    # ---- data ----------------------------------------------------------------------------

    def check_data(self) -> list[str]:
        return check_files(self.data_root)

    def splits(self) -> dict[str, tuple[list[str], Tensor]]:
        """``{split: (image names, labels N x 40)}`` of the official partition."""
        if self._splits is None:
            lines = self.check_data()
            if lines:
                raise DataUnavailable(
                    f"{self.name} data not ready in {self.data_root}: " + " | ".join(lines)
                )
            layout = find_layout(self.data_root)
            assert layout.attributes is not None and layout.partition is not None
            _, names, labels = read_attributes(layout.attributes)
            partition = read_partition(layout.partition)
            codes = np.array([partition[n] for n in names])
            self._splits = {}
            for split, code in SPLIT_CODES.items():
                rows = np.flatnonzero(codes == code)
                self._splits[split] = ([names[i] for i in rows], torch.from_numpy(labels[rows]))
        return self._splits

    def _image_dir(self) -> Path:
        images = find_layout(self.data_root).images
        assert images is not None
        return images

    def cache_path(self, split: str) -> Path:
        folder = Path(self.protocol.cache_dir) if self.protocol.cache_dir else self.data_root
        s = self.protocol.image_size
        return folder / f"cache_{s}x{s}_{split}.pt"

    def cached_images(self, split: str) -> Tensor:
        """The split's resized images as one ``N x 3 x S x S`` uint8 tensor, from the cache
        file (built, in parallel, the first time; rebuilt if the split's image list changed)."""
        if split in self._cached:
            return self._cached[split]
        names, _ = self.splits()[split]
        key = hashlib.sha1("\n".join(names).encode()).hexdigest()
        path = self.cache_path(split)
        images = None
        if path.is_file():
            stored = torch.load(path, map_location="cpu")
            if stored.get("key") == key:
                images = stored["images"]
        if images is None:
            images = self._decode_all(names)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"key": key, "images": images}, tmp)
                os.replace(tmp, path)
            except OSError as error:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                warnings.warn(
                    f"could not write the CelebA cache {path} ({error}); it is kept in memory "
                    "for this run only: set protocol.cache_dir to a writable folder",
                    stacklevel=2,
                )
        self._cached[split] = images
        return images

    def _decode_all(self, names: list[str]) -> Tensor:
        s = self.protocol.image_size
        dataset = CelebAImages(self._image_dir(), names, torch.zeros(len(names), 0), s)
        loader, _ = epoch_loader(dataset, 512, False, 0, max(self.protocol.num_workers, cpus()))
        out = torch.empty(len(names), 3, s, s, dtype=torch.uint8)
        start = 0
        for images, _ in loader:
            out[start : start + len(images)] = images
            start += len(images)
        return out

    def batches(self, split: Split, epoch: int = 0) -> Any:
        names, labels = self.splits()[split]
        if self.protocol.cache:
            return self._cached_batches(split, labels, epoch)
        if split not in self._loaders:
            p = self.protocol
            dataset = CelebAImages(self._image_dir(), names, labels, p.image_size)
            self._loaders[split] = epoch_loader(
                dataset, p.batch_size, split == "train", self.seed, p.num_workers
            )
        loader, sampler = self._loaders[split]
        sampler.set_epoch(epoch)
        return loader

    def _cached_batches(
        self, split: str, labels: Tensor, epoch: int
    ) -> Iterator[tuple[Tensor, Tensor]]:
        images = self.cached_images(split)
        order = epoch_order(len(labels), self.seed, epoch, shuffle=split == "train")
        pin = torch.cuda.is_available()
        for start in range(0, len(order), self.protocol.batch_size):
            idx = order[start : start + self.protocol.batch_size]
            x, y = images[idx], labels[idx]
            yield (x.pin_memory(), y.pin_memory()) if pin else (x, y)

    @classmethod
    def write_fixture(cls, root: Path) -> None:
        """30 JPEGs of 178 x 218 in the published layout, splits 16 / 7 / 7
        (:func:`mtlbench.datasets._celeba_files.write_fixture`)."""
        write_fixture(root)

    # ---- model, losses, metrics ----------------------------------------------------------

    def build_model(self) -> MultiTaskModel:
        return MultiTaskModel(Trunk(), [nn.Linear(512, 1) for _ in ATTRIBUTES])

    def model_input(self, batch: Any) -> Tensor:
        """The images as float in [0, 1] (ToTensor's scaling), converted on their device."""
        x = batch[0]
        return x.float().div_(255) if x.dtype == torch.uint8 else x

    def task_losses(self, outputs: list[Tensor], batch: Any) -> Tensor:
        logits = torch.cat(outputs, dim=1)
        bce = F.binary_cross_entropy_with_logits(logits, batch[1], reduction="none")
        return bce.mean(dim=0)

    def evaluator(self) -> Evaluator:
        return F1Evaluator()
