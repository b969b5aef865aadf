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
import torch.nn.functional as F
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
from mtlbench.datasets._sampling import epoch_batches, permutation
from mtlbench.registry import NonNegativeInt, PositiveInt

CANVAS = 16
DIGIT = 8
LEFT_CORNER = 1
RIGHT_CORNER = 6
JITTER = 1
POOL_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}


@dataclass(frozen=True)
class SplitData:
    """One split: images ``(N, 1, 16, 16)`` float32 in [0, 1], int64 labels and source indices.

    ``left_src`` / ``right_src`` index the digits of ``load_digits`` each image was made from.
    """

    images: Tensor
    left: Tensor
    right: Tensor
    left_src: Tensor
    right_src: Tensor


@functools.lru_cache(maxsize=1)
def source_digits() -> tuple[Tensor, Tensor]:
    """The 1,797 digits of ``load_digits`` as ``(N, 8, 8)`` float32 (0..16) and int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return torch.from_numpy(digits.images).float(), torch.from_numpy(digits.target).long()


def source_pools(n_source: int, data_seed: int) -> dict[str, Tensor]:
    """Disjoint index pools of the source digits, 70/15/15, shuffled by ``data_seed``."""
    order = permutation(n_source, data_seed)
    n_train = int(POOL_FRACTIONS["train"] * n_source)
    n_val = int(POOL_FRACTIONS["val"] * n_source)
    return {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }


def _place(digits: Tensor, corners: Tensor) -> Tensor:
    """Paste each 8 x 8 digit into an empty 16 x 16 canvas with its top-left at ``corners``."""
    n = digits.shape[0]
    canvas = digits.new_zeros(n, CANVAS, CANVAS)
    offsets = torch.arange(DIGIT)
    rows = (corners[:, 0, None] + offsets)[:, :, None]
    cols = (corners[:, 1, None] + offsets)[:, None, :]
    canvas[torch.arange(n)[:, None, None], rows, cols] = digits
    return canvas


def compose(pool: Tensor, n: int, generator: torch.Generator) -> SplitData:
    """``n`` two-digit images drawn from the source indices in ``pool``."""
    images, labels = source_digits()
    left_src = pool[torch.randint(len(pool), (n,), generator=generator)]
    right_src = pool[torch.randint(len(pool), (n,), generator=generator)]
    jitter = torch.randint(-JITTER, JITTER + 1, (2, n, 2), generator=generator)
    left = _place(images[left_src], LEFT_CORNER + jitter[0])
    right = _place(images[right_src], RIGHT_CORNER + jitter[1])
    canvas = torch.maximum(left, right).div_(16.0).unsqueeze(1)
    return SplitData(canvas, labels[left_src], labels[right_src], left_src, right_src)


@functools.lru_cache(maxsize=4)
def build(data_seed: int, n_train: int, n_val: int, n_test: int) -> dict[str, SplitData]:
    """All three splits, built once per process for each set of data arguments."""
    pools = source_pools(len(source_digits()[1]), data_seed)
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    data = {}
    for i, split in enumerate(("train", "val", "test")):
        generator = torch.Generator().manual_seed(data_seed * 3 + i + 1)
        data[split] = compose(pools[split], sizes[split], generator)
    return data


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


class AccuracyEvaluator(Evaluator):
    """Per-task accuracy (``<task>_acc``) and mean cross-entropy (``<task>_loss``) of a split."""

    def __init__(self, tasks: tuple[str, ...]) -> None:
        self.tasks = tasks
        self.correct = [0] * len(tasks)
        self.loss = [0.0] * len(tasks)
        self.count = 0

    def update(self, outputs: list[Tensor], batch: Any) -> None:
        for k, (logits, target) in enumerate(zip(outputs, batch[1:], strict=True)):
            self.correct[k] += int((logits.argmax(dim=1) == target).sum())
            self.loss[k] += float(F.cross_entropy(logits, target, reduction="sum"))
        self.count += len(batch[1])

    def compute(self) -> dict[str, float]:
        n = max(self.count, 1)
        values = {f"{t}_acc": c / n for t, c in zip(self.tasks, self.correct, strict=True)}
        values.update({f"{t}_loss": s / n for t, s in zip(self.tasks, self.loss, strict=True)})
        return values


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
        return torch.stack(
            [
                F.cross_entropy(logits, target)
                for logits, target in zip(outputs, batch[1:], strict=True)
            ]
        )

    def evaluator(self) -> Evaluator:
        return AccuracyEvaluator(self.tasks)
