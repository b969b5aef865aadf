"""Loading MTAN's preprocessed ``.npy`` files of the dense-prediction benchmarks (NYU-v2,
Cityscapes), and the validation split carved from their training files.

**On-disk format** (MTAN's Dropbox folders). ``<root>/train/`` and ``<root>/val/``, each with
one folder per modality holding ``0.npy, 1.npy, ...``: ``image`` (H x W x 3 floats in [0, 1]),
the segmentation labels (H x W floats, ``-1`` = ignore; ``label`` for NYU-v2, ``label_7`` for
Cityscapes), ``depth`` (H x W x 1, ``0`` = no measurement) and, for NYU-v2, ``normal`` (H x W x
3 unit vectors, ``0`` = invalid). Arrays are channels-last and are moved to channels-first on
loading, as the reference's ``np.moveaxis(..., -1, 0)``. MTAN's ``val/`` is the test set.

Sources (read, not copied): ``experiments/{nyuv2,cityscapes}/data.py`` in
Cranial-XIX/FAMO@0a6ad06 and MTAN's ``im2im_pred/create_dataset.py`` (lorenmt/mtan@c36c30b).
Training samples are augmented (:mod:`mtlbench.datasets._dense_transforms`) by a generator
seeded by ``(seed, epoch, file index)``, so the augmentation is reproducible whatever the
number of loader workers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mtlbench.datasets._dense_transforms import augment, draw_augmentation
from mtlbench.datasets._sampling import derive_seed, permutation


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


class NpyDataset(Dataset):
    """Files ``indices`` of one split folder, indexed by ``(position, epoch)`` (see
    :class:`~mtlbench.datasets._sampling.EpochSampler`); returns ``(image, label, depth[,
    normal])`` with int64 labels."""

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
    order = permutation(n, seed).tolist()
    return sorted(order[n_val:]), sorted(order[:n_val])


def check_folders(root: Path, folders: Mapping[str, str], get: str, download: str) -> list[str]:
    """What keeps ``root`` from being MTAN's format (one line each, with what to do; empty when
    ready): ``train/`` and ``val/`` with every modality folder of ``folders``, files numbered
    ``0..N-1`` and as many in every modality. ``get`` says where to get the data, ``download``
    is its address."""
    if not root.is_dir():
        return [f"folder {root} does not exist: {get} in {root}"]
    lines = []
    for split in ("train", "val"):
        base = root / split
        missing = [f for f in folders.values() if not (base / f).is_dir()]
        if missing:
            lines.append(
                f"missing {base}/{{{','.join(missing)}}}/ (files 0.npy, 1.npy, ...): "
                f"{get} in {root}"
            )
            continue
        lines += _check_split(base, folders, root, get, download)
    if lines and not (root / "train").is_dir():
        nested = sorted(p.parent for p in root.glob("*/train") if p.is_dir())
        if nested:
            lines.append(
                f"found {nested[0]}/train: pass --data-root {nested[0]} or move its "
                f"contents into {root}"
            )
    return lines


def _check_split(
    base: Path, folders: Mapping[str, str], root: Path, get: str, download: str
) -> list[str]:
    """The problems of one split folder whose modality folders all exist."""
    lines = []
    counts = {}
    for folder in folders.values():
        names = {p.name for p in (base / folder).glob("*.npy")}
        counts[folder] = len(names)
        gaps = [i for i in range(len(names)) if f"{i}.npy" not in names]
        if not names:
            lines.append(f"no .npy files in {base / folder}: {get} in {root}")
        elif gaps:
            lines.append(
                f"{base / folder} lacks {gaps[0]}.npy (files must be numbered 0..N-1): "
                f"re-download ({download}) into {root}"
            )
    if len(set(counts.values())) > 1:
        lines.append(
            f"{base}: the modalities have different numbers of files {counts}: "
            f"re-download ({download}) into {root}"
        )
    return lines
