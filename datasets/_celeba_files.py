"""CelebA's files: where they are under a data root, how they are read and checked, the JPEG
decoding, and the small fixture of the tests.

The published layout (``Img/img_align_celeba/``, ``Anno/list_attr_celeba.txt``,
``Eval/list_eval_partition.txt``), the flat one (torchvision's) and Kaggle's (``.csv`` files and
a nested image folder) are accepted; :mod:`mtlbench.datasets.celeba` has the formats (Liu et
al., "Deep Learning Face Attributes in the Wild", ICCV 2015,
https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes "
    "No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling "
    "Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young"
).split()
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
SITE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
DRIVE = "https://drive.google.com/drive/folders/0B7EVK8r0v71pWEZsZE9oNnFzTm8"
# Candidate places of each file under the data root, in order of preference.
ATTR_FILES = ("Anno/list_attr_celeba.txt", "list_attr_celeba.txt", "list_attr_celeba.csv")
PARTITION_FILES = (
    "Eval/list_eval_partition.txt",
    "list_eval_partition.txt",
    "list_eval_partition.csv",
)
IMAGE_DIRS = ("Img/img_align_celeba", "img_align_celeba/img_align_celeba", "img_align_celeba")


# --------------------------------------------------------------------------------------------
# Files.


@dataclass(frozen=True)
class Layout:
    """Where the three parts were found under the root (``None``: not found)."""

    attributes: Path | None
    partition: Path | None
    images: Path | None


def find_layout(root: Path) -> Layout:
    def first(candidates: tuple[str, ...], test: Any) -> Path | None:
        return next((root / c for c in candidates if test(root / c)), None)

    attributes = first(ATTR_FILES, Path.is_file)
    # An image folder counts when it holds JPEGs (Kaggle's outer folder holds only a folder).
    images = first(IMAGE_DIRS, lambda p: p.is_dir() and any(p.glob("*.jpg")))
    images = images or first(IMAGE_DIRS, Path.is_dir)
    return Layout(attributes, first(PARTITION_FILES, Path.is_file), images)


def _rows(path: Path) -> list[list[str]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        return [line.split(",") for line in text.splitlines() if line.strip()]
    return [line.split() for line in text.splitlines() if line.strip()]


@functools.lru_cache(maxsize=4)
def _read_attributes(path: Path, mtime: float) -> tuple[list[str], list[str], np.ndarray]:
    rows = _rows(path)
    if path.suffix == ".csv":  # header: image_id, 40 names
        header, body = rows[0][1:], rows[1:]
    else:  # a count line, the 40 names, then the rows
        header, body = rows[1], rows[2:]
    names = [r[0] for r in body]
    labels = (np.array([r[1:] for r in body], dtype=np.int8) == 1).astype(np.float32)
    return header, names, labels


def read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """``(attribute names, image names, labels N x 40 float32 in {0, 1})`` of an attribute
    file (``1`` where the file says 1, else 0)."""
    return _read_attributes(path, path.stat().st_mtime)


def read_partition(path: Path) -> dict[str, int]:
    """``{image name: 0 | 1 | 2}`` of a partition file."""
    rows = _rows(path)
    if path.suffix == ".csv":
        rows = rows[1:]
    return {r[0]: int(r[1]) for r in rows}


def cpus() -> int:
    """CPU cores this process may use (respects SLURM / cgroup CPU binding where available)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_image(path: Path, size: int) -> Tensor:
    """A JPEG as a ``3 x size x size`` uint8 tensor, resized with PIL's bilinear filter."""
    from PIL import Image  # deferred: Pillow, needed only to decode or write JPEGs

    with Image.open(path) as image:
        resized = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(resized)).permute(2, 0, 1).contiguous()


class CelebAImages(Dataset):
    """Images decoded on demand, indexed by ``(position, epoch)``; returns (uint8 image,
    float32 labels)."""

    def __init__(self, folder: Path, names: list[str], labels: Tensor, size: int) -> None:
        self.folder, self.names, self.labels, self.size = folder, names, labels, size

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, Tensor]:
        position = item[0]
        return load_image(self.folder / self.names[position], self.size), self.labels[position]


def check_files(root: Path) -> list[str]:
    """What is missing or wrong in a CelebA data root, one line each with how to fix it
    ([] when the attributes, the partition and every listed image are there)."""
    get = f"from the CelebA site {SITE} (Google Drive {DRIVE})"
    if not root.is_dir():
        return [
            f"folder {root} does not exist: download 'Align&Cropped Images' "
            f"(Img/img_align_celeba.zip), Anno/list_attr_celeba.txt and "
            f"Eval/list_eval_partition.txt {get}, and put them as {root}/Img/"
            f"img_align_celeba/*.jpg, {root}/Anno/list_attr_celeba.txt, "
            f"{root}/Eval/list_eval_partition.txt"
        ]
    layout = find_layout(root)
    lines = []
    if layout.attributes is None:
        lines.append(
            f"missing list_attr_celeba.txt: download Anno/list_attr_celeba.txt {get} and "
            f"put it at {root}/Anno/list_attr_celeba.txt"
        )
    if layout.partition is None:
        lines.append(
            f"missing list_eval_partition.txt: download Eval/list_eval_partition.txt {get} "
            f"and put it at {root}/Eval/list_eval_partition.txt"
        )
    if layout.images is None or not any(layout.images.glob("*.jpg")):
        zips = [p for p in (root / "Img/img_align_celeba.zip", root / "img_align_celeba.zip")
                if p.is_file()]  # fmt: skip
        hint = f" (found {zips[0]}: unzip it there)" if zips else ""
        lines.append(
            f"missing the aligned images{hint}: download 'Align&Cropped Images' "
            f"(Img/img_align_celeba.zip) {get} and unzip it so that the JPEGs are in "
            f"{root}/Img/img_align_celeba/"
        )
    if lines or layout.attributes is None or layout.partition is None:
        return lines
    assert layout.images is not None
    header, names, _ = read_attributes(layout.attributes)
    if list(header) != ATTRIBUTES:
        return [
            f"{layout.attributes} does not list the 40 CelebA attributes in their published "
            f"order (got {len(header)} names starting {header[:2]}): re-download it {get}"
        ]
    partition = read_partition(layout.partition)
    unsplit = [n for n in names if n not in partition]
    if unsplit:
        lines.append(
            f"{len(unsplit)} images of {layout.attributes.name} have no entry in "
            f"{layout.partition} (first: {unsplit[0]}): re-download it {get}"
        )
    present = {e.name for e in os.scandir(layout.images)}
    absent = [n for n in names if n not in present]
    if absent:
        lines.append(
            f"{len(absent)} of the {len(names)} images listed are missing from "
            f"{layout.images} (first: {absent[0]}): re-extract img_align_celeba.zip {get}"
        )
    return lines


def write_fixture(root: Path) -> None:
    """30 JPEGs of 178 x 218 (smooth random colours) in the published layout, with
    ``Anno/list_attr_celeba.txt`` and ``Eval/list_eval_partition.txt`` in their published
    formats; splits 16 / 7 / 7."""
    from PIL import Image  # deferred: Pillow, needed only to decode or write JPEGs

    root = Path(root)
    rng = np.random.default_rng(0)
    n, codes = 30, [0] * 16 + [1] * 7 + [2] * 7
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    image_dir = root / "Img" / "img_align_celeba"
    for folder in (image_dir, root / "Anno", root / "Eval"):
        folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        small = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((178, 218), Image.Resampling.BICUBIC)
        image.save(image_dir / name, quality=90)
    rates = rng.uniform(0.2, 0.8, len(ATTRIBUTES))
    values = np.where(rng.random((n, len(ATTRIBUTES))) < rates, 1, -1)
    lines = [str(n), " ".join(ATTRIBUTES) + " "]
    for name, row in zip(names, values, strict=True):
        lines.append(name + " " + " ".join(f"{v:2d}" for v in row))
    (root / "Anno" / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    partition = [f"{name} {code}" for name, code in zip(names, codes, strict=True)]
    (root / "Eval" / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")
