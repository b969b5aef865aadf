"""What MultiDigits and MultiMNIST share: two source digits per image, left and right.

Both benchmarks (after Sener & Koltun, NeurIPS 2018) cut their source digits into disjoint
pools (70 % train, 15 % val, 15 % test, permuted by ``data_seed``), draw ``n_<split>`` (left,
right) pairs uniformly with replacement within a pool, render each pair into one image, and
classify both digits. Only the source digits and the rendering differ; the pools, the pairs,
the splits, the per-task cross-entropy and the accuracy evaluator are here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mtlbench.benchmark import Evaluator
from mtlbench.datasets._sampling import permutation

POOL_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
SPLITS = ("train", "val", "test")

# (left source indices, right source indices, generator) -> images (N, 1, H, W)
Render = Callable[[Tensor, Tensor, torch.Generator], Tensor]


@dataclass(frozen=True)
class SplitData:
    """One split: images ``(N, 1, H, W)`` float32, int64 labels of the two digits, and the
    indices of the source digits each image was made from (``left_src``, ``right_src``)."""

    images: Tensor
    left: Tensor
    right: Tensor
    left_src: Tensor
    right_src: Tensor


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


def compose_pairs(
    pool: Tensor, n: int, generator: torch.Generator, labels: Tensor, render: Render
) -> SplitData:
    """``n`` images of two digits drawn from ``pool`` (left first, then right, then whatever
    ``render`` draws from the same generator)."""
    left_src = pool[torch.randint(len(pool), (n,), generator=generator)]
    right_src = pool[torch.randint(len(pool), (n,), generator=generator)]
    images = render(left_src, right_src, generator)
    return SplitData(images, labels[left_src], labels[right_src], left_src, right_src)


def build_splits(
    labels: Tensor, render: Render, data_seed: int, sizes: dict[str, int]
) -> dict[str, SplitData]:
    """The three splits (``sizes`` images each); split ``i`` draws from its own generator,
    seeded ``3 * data_seed + i + 1``."""
    pools = source_pools(len(labels), data_seed)
    data = {}
    for i, split in enumerate(SPLITS):
        generator = torch.Generator().manual_seed(data_seed * 3 + i + 1)
        data[split] = compose_pairs(pools[split], sizes[split], generator, labels, render)
    return data


def pair_losses(outputs: list[Tensor], batch: Any) -> Tensor:
    """Cross-entropy (batch mean) of each task's logits against its digit."""
    return torch.stack(
        [F.cross_entropy(logits, y) for logits, y in zip(outputs, batch[1:], strict=True)]
    )


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
