"""Shared code of the dense-prediction benchmarks (NYU-v2, Cityscapes) in MTAN's preprocessed
``.npy`` format: loading, augmentation, losses, metric accumulators, and the benchmark base.

Sources (read, not copied): ``experiments/{nyuv2,cityscapes}/{data,utils,trainer}.py`` in
Cranial-XIX/FAMO@0a6ad06 (the same files are in Nash-MTL and LDC-MTL@7c39465), and MTAN's
``im2im_pred/create_dataset.py`` (lorenmt/mtan@c36c30b); protocols.md sections 4.1 and 4.2.

**On-disk format** (MTAN's Dropbox folders). ``<root>/train/`` and ``<root>/val/``, each with
one folder per modality holding ``0.npy, 1.npy, ...``: ``image`` (H x W x 3 floats in [0, 1]),
the segmentation labels (H x W floats, ``-1`` = ignore; ``label`` for NYU-v2, ``label_7`` for
Cityscapes), ``depth`` (H x W x 1, ``0`` = no measurement) and, for NYU-v2, ``normal`` (H x W x
3 unit vectors, ``0`` = invalid). Arrays are channels-last and are moved to channels-first on
loading, as the reference's ``np.moveaxis(..., -1, 0)``. MTAN's ``val/`` is the test set.

**Augmentation** (training only, on by default): a random scale ``s`` in {1.0, 1.2, 1.5}, a crop
of ``(int(H / s), int(W / s))`` at a uniform offset resized back to ``(H, W)`` (bilinear with
align_corners for image and normals, nearest for labels and depth; depth divided by ``s``; the
normals are not re-normalised), then a horizontal flip with probability 1/2 that negates the
normals' x component. The reference draws from Python's ``random`` and the global torch RNG; here
each sample draws from its own generator seeded by ``(seed, epoch, file index)``, so the
augmentation is reproducible whatever the number of loader workers.

**Losses**: segmentation NLL of the log-softmax with ``ignore_index = -1``; depth L1 and normals
``1 - mean dot product``, both over the valid pixels (where the ground truth summed over its
channels is non-zero, the reference's mask).

**Metrics**: mIoU and pixel accuracy from a confusion matrix accumulated over the split (labels
outside ``[0, C)`` ignored); depth absolute and relative error, and the normal angle error
(degrees) summarised as mean, median and the fractions below 11.25, 22.5 and 30 degrees, over
the valid pixels. With ``stats = "per_batch"`` (the default, the reference's) the depth and
normal statistics are computed per evaluation batch and averaged over batches, so they depend
on the evaluation batch size (the reference's is the training batch size) and the "median" is a
mean of per-batch medians. ``stats = "pooled"`` computes them over all valid pixels of the split
instead (the median read off a 0.01-degree histogram, so within about a bin of numpy's median
when the angles are dense, as over a test split).

Departures, all in degenerate cases only: a batch without valid depth / normal pixels gives the
reference NaN (0 / 0); here the loss is 0 and the batch is left out of the per-batch mean. The
reference's mIoU is NaN when a class occurs in neither the labels nor the predictions of the
whole split; here such classes are left out of the mean (identical otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from mtlbench.benchmark import (
    Benchmark,
    DataUnavailable,
    Evaluator,
    MultiTaskModel,
    Protocol,
    Reference,
    Split,
)
from mtlbench.datasets._segnet_mtan import Activation, segnet_mtan
from mtlbench.registry import ConfigError, NonNegativeInt, PositiveInt, Range

SCALES = (1.0, 1.2, 1.5)
ANGLE_THRESHOLDS = (11.25, 22.5, 30.0)
HISTOGRAM_BINS = 18_000  # 0.01 degree bins on [0, 180] for the pooled median
MTAN_DIVISOR = 32  # SegNet-MTAN pools five times

# --------------------------------------------------------------------------------------------
# Helpers shared with the CelebA benchmark: seeds, epoch-aware loaders, published references.


def derive_seed(*keys: int) -> int:
    """A 32-bit seed from non-negative integer keys (numpy's SeedSequence mixing)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(position, epoch)``: in order, or shuffled by ``(seed, epoch)``.

    The epoch travels with each item, so a dataset can seed per-sample randomness by it, and a
    loader with persistent workers can be re-used across epochs (the sampler runs in the main
    process; ``set_epoch`` before iterating).
    """

    def __init__(self, n: int, shuffle: bool, seed: int) -> None:
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        return ((i, self.epoch) for i in order)


def epoch_loader(
    dataset: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int
) -> tuple[DataLoader, EpochSampler]:
    """A DataLoader over ``dataset`` (indexed by ``(position, epoch)``) and its sampler:
    persistent workers when ``num_workers > 0``, pinned memory when CUDA is available."""
    sampler = EpochSampler(len(dataset), shuffle, seed)  # type: ignore[arg-type]
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
    )
    return loader, sampler


def published_reference(name: str) -> Reference:
    """The single-task reference shipped in ``datasets/references/<name>.json``."""
    text = resources.files("mtlbench.datasets").joinpath("references", f"{name}.json")
    data = json.loads(text.read_text(encoding="utf-8"))
    return Reference(
        values={k: float(v) for k, v in data["values"].items()},
        source=data["source"],
        details=data.get("details", {}),
    )


# --------------------------------------------------------------------------------------------
# Loading and augmentation.

Kind = Literal["image", "label", "depth", "normal"]


def to_tensor(kind: str, array: np.ndarray) -> Tensor:
    """One stored array as a float32 tensor: channels-first for image / depth / normal."""
    t = torch.from_numpy(np.asarray(array, dtype=np.float32))
    if kind == "label":
        return t
    if t.dim() == 2:  # depth stored as H x W
        t = t.unsqueeze(-1)
    return t.permute(2, 0, 1).contiguous()


def load_sample(split_dir: Path, index: int, folders: Mapping[str, str]) -> dict[str, Tensor]:
    """``{kind: tensor}`` of file ``index`` of one split folder (labels still float)."""
    return {
        kind: to_tensor(kind, np.load(split_dir / folder / f"{index}.npy"))
        for kind, folder in folders.items()
    }


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


class NpyDataset(Dataset):
    """Files ``indices`` of one split folder, indexed by ``(position, epoch)`` (see
    :class:`EpochSampler`); returns ``(image, label, depth[, normal])`` with int64 labels."""

    def __init__(
        self,
        split_dir: Path,
        indices: Sequence[int],
        folders: Mapping[str, str],
        augmented: bool,
        seed: int,
    ) -> None:
        self.split_dir, self.indices, self.folders = split_dir, list(indices), dict(folders)
        self.augmented, self.seed = augmented, seed

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, ...]:
        position, epoch = item
        index = self.indices[position]
        sample = load_sample(self.split_dir, index, self.folders)
        if self.augmented:
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, index))
            height, width = sample["image"].shape[-2:]
            sample = augment(sample, draw_augmentation(g, height, width))
        sample["label"] = sample["label"].round().long()
        return tuple(sample[kind] for kind in self.folders)


def carve_validation(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split ``range(n)`` into (train, val) with ``round(fraction * n)`` validation files (at
    least one, at most ``n - 1``, when ``fraction > 0``), drawn by ``seed``; both sorted."""
    if fraction <= 0:
        return list(range(n)), []
    n_val = min(max(round(fraction * n), 1), n - 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[n_val:]), sorted(order[:n_val])


# --------------------------------------------------------------------------------------------
# Losses.


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


# --------------------------------------------------------------------------------------------
# Metrics.


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


# --------------------------------------------------------------------------------------------
# The benchmark base.


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

    def _get(self) -> str:
        return f"get {self.dataset_title} ({self.download}) and put its train/ and val/ folders"

    def check_data(self) -> list[str]:
        root = self.data_root
        if not root.is_dir():
            return [f"folder {root} does not exist: {self._get()} in {root}"]
        lines = []
        for split in ("train", "val"):
            base = root / split
            missing = [f for f in self.folders.values() if not (base / f).is_dir()]
            if missing:
                lines.append(
                    f"missing {base}/{{{','.join(missing)}}}/ (files 0.npy, 1.npy, ...): "
                    f"{self._get()} in {root}"
                )
                continue
            counts = {}
            for folder in self.folders.values():
                names = {p.name for p in (base / folder).glob("*.npy")}
                counts[folder] = len(names)
                gaps = [i for i in range(len(names)) if f"{i}.npy" not in names]
                if not names:
                    lines.append(f"no .npy files in {base / folder}: {self._get()} in {root}")
                elif gaps:
                    lines.append(
                        f"{base / folder} lacks {gaps[0]}.npy (files must be numbered 0..N-1): "
                        f"re-download ({self.download}) into {root}"
                    )
            if len(set(counts.values())) > 1:
                lines.append(
                    f"{base}: the modalities have different numbers of files {counts}: "
                    f"re-download ({self.download}) into {root}"
                )
        if lines and not (root / "train").is_dir():
            nested = sorted(p.parent for p in root.glob("*/train") if p.is_dir())
            if nested:
                lines.append(
                    f"found {nested[0]}/train: pass --data-root {nested[0]} or move its "
                    f"contents into {root}"
                )
        return lines

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
        """8 training and 4 test samples of ``fixture_shape`` in MTAN's format (float64 arrays,
        channels-last, labels in [-1, C), depth with zeros for missing values, unit normals)."""
        rng = np.random.default_rng(0)
        height, width = cls.fixture_shape
        for split, n in (("train", 8), ("val", 4)):
            for folder in cls.folders.values():
                (Path(root) / split / folder).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                for kind, array in cls._fixture_sample(rng, height, width).items():
                    np.save(Path(root) / split / cls.folders[kind] / f"{i}.npy", array)

    @classmethod
    def _fixture_sample(cls, rng: np.random.Generator, h: int, w: int) -> dict[str, np.ndarray]:
        invalid = rng.random((h, w)) < 0.1
        sample = {
            "image": rng.integers(0, 256, (h, w, 3)) / 255.0,
            "label": np.where(
                rng.random((h, w)) < 0.1, -1, rng.integers(0, cls.n_classes, (h, w))
            ).astype(np.float64),
            "depth": np.where(invalid, 0.0, rng.uniform(*cls.fixture_depth, (h, w)))[..., None],
        }
        if "normal" in cls.folders:
            v = rng.normal(size=(h, w, 3))
            v[..., 2] = np.abs(v[..., 2]) + 0.1
            v /= np.linalg.norm(v, axis=-1, keepdims=True)
            sample["normal"] = np.where(invalid[..., None], 0.0, v)
        return sample

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
