"""``fixture_sines``: two small synthetic regression tasks on the CPU, no download.

``y_sin = sin(x . a)`` and ``y_cos = cos(x . b)`` with Gaussian noise, ``x`` in R^4 drawn from
a fixed seed; a shared two-layer encoder and a linear head per task. Self-contained, so that it
also works as a file plug-in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mtlbench.benchmark import (
    Benchmark,
    Evaluator,
    Metric,
    MultiTaskModel,
    Protocol,
    register,
    tensor_batches,
)
from mtlbench.registry import NonNegativeFloat, PositiveInt


@dataclass
class SinesProtocol(Protocol):
    """``n_*``: examples per split; ``noise``: the standard deviation of the targets' noise."""

    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-2
    n_train: PositiveInt = 256
    n_val: PositiveInt = 64
    n_test: PositiveInt = 64
    noise: NonNegativeFloat = 0.1


class MSE(Evaluator):
    """Mean squared error of each task over a split."""

    def __init__(self) -> None:
        self.se = torch.zeros(2, dtype=torch.float64)
        self.n = 0

    def update(self, outputs: list[Tensor], batch: tuple[Tensor, Tensor]) -> None:
        pred = torch.cat(outputs, dim=1).double()
        self.se += ((pred - batch[1].double()) ** 2).sum(0)
        self.n += batch[1].shape[0]

    def compute(self) -> dict[str, float]:
        mse = self.se / max(self.n, 1)
        return {"mse_sin": float(mse[0]), "mse_cos": float(mse[1])}


@register("fixture_sines")
class Sines(Benchmark):
    tasks = ("sin", "cos")
    metrics = (Metric("mse_sin", "sin", False), Metric("mse_cos", "cos", False))
    protocol_type = SinesProtocol
    description = "two synthetic sine / cosine regressions (a plug-in test fixture)"
    paper = "none: mtlbench's plug-in test fixture"
    feature_dim = 16

    @classmethod
    def smoke_protocol(cls) -> dict[str, object]:
        return {"epochs": 1, "max_steps": 2, "n_train": 64, "n_val": 32, "n_test": 32}

    def _split(self, split: str) -> tuple[Tensor, Tensor]:
        p = self.protocol
        sizes = {"train": p.n_train, "val": p.n_val, "test": p.n_test}
        g = torch.Generator().manual_seed(1000 * self.seed + ("train", "val", "test").index(split))
        directions = torch.Generator().manual_seed(7)  # the same function for every split
        a, b = torch.randn(2, 4, generator=directions)
        x = torch.randn(sizes[split], 4, generator=g)
        y = torch.stack([torch.sin(x @ a), torch.cos(x @ b)], dim=1)
        return x, y + p.noise * torch.randn(y.shape, generator=g)

    def build_model(self) -> MultiTaskModel:
        encoder = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh())
        return MultiTaskModel(encoder, [nn.Linear(16, 1), nn.Linear(16, 1)])

    def batches(self, split: str, epoch: int = 0) -> Iterator[tuple[Tensor, ...]]:
        g = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        return tensor_batches(self._split(split), self.protocol.batch_size, split == "train", g)

    def task_losses(self, outputs: list[Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
        y = batch[1]
        return torch.stack([((o.squeeze(1) - y[:, i]) ** 2).mean() for i, o in enumerate(outputs)])

    def evaluator(self) -> MSE:
        return MSE()
