"""MultiDigits: MultiMNIST (Sener & Koltun, NeurIPS 2018) built from scikit-learn's real digits.

MultiMNIST overlays two MNIST digits on a 36 x 36 canvas, one near the top-left and one near the
bottom-right, and asks for both labels (tasks "left" and "right"). MultiDigits does the same
with the 1,797 real 8 x 8 digits of ``sklearn.datasets.load_digits`` (values 0..16), which ship
with scikit-learn, so the benchmark runs offline and in seconds on a CPU.

Construction (all seeded by ``data_seed``, independent of the trial seed, so every trial of a
sweep sees the same data):

1. The source digits are split into disjoint pools: 70 % train, 15 % val, 15 % test.
2. Within each pool, ``n_<split>`` pairs ``(left, right)`` are drawn uniformly with replacement.
3. On a 16 x 16 canvas the left digit's top-left corner is at ``(1, 1)`` and the right digit's
   at ``(6, 6)``, each jittered by -1, 0 or +1 pixel per axis, so the two 8 x 8 boxes overlap
   by 1 to 5 pixels per axis; overlapping pixels take the maximum; values are scaled to [0, 1].

Model: a small CNN trunk (three 3 x 3 convolutions, two max-pools, a 64-unit linear layer) as
the shared encoder, representation ``(B, 64)``; one linear classifier per task. Loss:
cross-entropy per task (batch mean). Metrics: accuracy per task from counts over the split.
No published reference exists: the suite's STL mode produces the single-task reference.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mtlbench.benchmark import (
    Benchmark,
    Evaluator,
    Metric,
    MultiTaskModel,
    Protocol,
    Split,
    register,
)
from mtlbench.datasets._pairs import (
    AccuracyEvaluator,
    SplitData,
    build_splits,
    compose_pairs,
    pair_losses,
)
from mtlbench.datasets._sampling import epoch_batches
from mtlbench.registry import NonNegativeInt, PositiveInt

CANVAS = 16
DIGIT = 8
LEFT_CORNER = 1
RIGHT_CORNER = 6
JITTER = 1


@functools.lru_cache(maxsize=1)
def source_digits() -> tuple[Tensor, Tensor]:
    """The 1,797 digits of ``load_digits`` as ``(N, 8, 8)`` float32 (0..16) and int64 labels."""
    from sklearn.datasets import load_digits  # deferred: scikit-learn is heavy to import

    digits = load_digits()
    return torch.from_numpy(digits.images).float(), torch.from_numpy(digits.target).long()


def _place(digits: Tensor, corners: Tensor) -> Tensor:
    """Paste each 8 x 8 digit into an empty 16 x 16 canvas with its top-left at ``corners``."""
    n = digits.shape[0]
    canvas = digits.new_zeros(n, CANVAS, CANVAS)
    offsets = torch.arange(DIGIT)
    rows = (corners[:, 0, None] + offsets)[:, :, None]
    cols = (corners[:, 1, None] + offsets)[:, None, :]
    canvas[torch.arange(n)[:, None, None], rows, cols] = digits
    return canvas


def render(left_src: Tensor, right_src: Tensor, generator: torch.Generator) -> Tensor:
    """The two digits at their jittered corners, the maximum where they overlap, in [0, 1]."""
    images = source_digits()[0]
    n = len(left_src)
    jitter = torch.randint(-JITTER, JITTER + 1, (2, n, 2), generator=generator)
    left = _place(images[left_src], LEFT_CORNER + jitter[0])
    right = _place(images[right_src], RIGHT_CORNER + jitter[1])
    return torch.maximum(left, right).div_(16.0).unsqueeze(1)


def compose(pool: Tensor, n: int, generator: torch.Generator) -> SplitData:
    """``n`` two-digit images drawn from the source indices in ``pool``."""
    return compose_pairs(pool, n, generator, source_digits()[1], render)


@functools.lru_cache(maxsize=4)
def build(data_seed: int, n_train: int, n_val: int, n_test: int) -> dict[str, SplitData]:
    """All three splits, built once per process for each set of data arguments."""
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    return build_splits(source_digits()[1], render, data_seed, sizes)


class Trunk(nn.Module):
    """The shared CNN: ``(B, 1, 16, 16)`` -> ``(B, 64)``."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, width),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@dataclass
class MultiDigitsProtocol(Protocol):
    """``data_seed`` fixes the source split and the pairs; ``n_*`` are the numbers of images."""

    epochs: int = 10
    batch_size: int = 256
    data_seed: NonNegativeInt = 0
    n_train: PositiveInt = 10_000
    n_val: PositiveInt = 2_000
    n_test: PositiveInt = 2_000


@register("multidigits")
class MultiDigits(Benchmark):
    tasks = ("left", "right")
    metrics = (
        Metric("left_acc", "left", higher_is_better=True),
        Metric("right_acc", "right", higher_is_better=True),
    )
    protocol_type = MultiDigitsProtocol
    paper = "MultiMNIST: Sener & Koltun, Multi-Task Learning as Multi-Objective Optimization, 2018"
    description = "two overlaid sklearn digits on a 16x16 canvas; classify left and right"
    feature_dim = 64
    protocol: MultiDigitsProtocol

    @classmethod
    def smoke_protocol(cls) -> dict[str, Any]:
        return {"epochs": 1, "max_steps": 2, "n_train": 512, "n_val": 256, "n_test": 256}

    def data(self) -> dict[str, SplitData]:
        p = self.protocol
        return build(p.data_seed, p.n_train, p.n_val, p.n_test)

    def build_model(self) -> MultiTaskModel:
        return MultiTaskModel(Trunk(64), [nn.Linear(64, 10), nn.Linear(64, 10)])

    def batches(self, split: Split, epoch: int = 0) -> Iterator[tuple[Tensor, ...]]:
        d = self.data()[split]
        tensors = (d.images, d.left, d.right)
        return epoch_batches(tensors, self.protocol.batch_size, split == "train", self.seed, epoch)

    def task_losses(self, outputs: list[Tensor], batch: Any) -> Tensor:
        return pair_losses(outputs, batch)

    def evaluator(self) -> Evaluator:
        return AccuracyEvaluator(self.tasks)
