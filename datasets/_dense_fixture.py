"""Small random data in MTAN's ``.npy`` format, for the tests and ``--smoke`` runs of the
dense-prediction benchmarks (the format is described in :mod:`mtlbench.datasets._dense_data`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np


def write_npy_fixture(
    root: Path,
    folders: Mapping[str, str],
    n_classes: int,
    shape: tuple[int, int],
    depth: tuple[float, float],
) -> None:
    """8 training and 4 test samples of ``shape`` (H, W) in MTAN's format under ``root`` (float64
    arrays, channels-last, labels in [-1, C), depth uniform on ``depth`` with zeros for missing
    values, unit normals when ``folders`` has ``normal``), drawn from ``default_rng(0)``."""
    rng = np.random.default_rng(0)
    height, width = shape
    for split, n in (("train", 8), ("val", 4)):
        for folder in folders.values():
            (Path(root) / split / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            sample = fixture_sample(rng, height, width, n_classes, depth, "normal" in folders)
            for kind, array in sample.items():
                np.save(Path(root) / split / folders[kind] / f"{i}.npy", array)


def fixture_sample(
    rng: np.random.Generator,
    h: int,
    w: int,
    n_classes: int,
    depth: tuple[float, float],
    normals: bool,
) -> dict[str, np.ndarray]:
    """One random sample ``{kind: array}``: 10 % of the labels -1, 10 % of the pixels without
    depth (and normal), normals with a positive z component."""
    invalid = rng.random((h, w)) < 0.1
    image = rng.integers(0, 256, (h, w, 3)) / 255.0
    ignored = rng.random((h, w)) < 0.1  # drawn in this order: the fixture's values depend on it
    sample = {
        "image": image,
        "label": np.where(ignored, -1, rng.integers(0, n_classes, (h, w))).astype(np.float64),
        "depth": np.where(invalid, 0.0, rng.uniform(*depth, (h, w)))[..., None],
    }
    if normals:
        v = rng.normal(size=(h, w, 3))
        v[..., 2] = np.abs(v[..., 2]) + 0.1
        v /= np.linalg.norm(v, axis=-1, keepdims=True)
        sample["normal"] = np.where(invalid[..., None], 0.0, v)
    return sample
