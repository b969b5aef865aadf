"""A tiny synthetic 2-task regression benchmark for the framework's tests (not registered by
the package: tests import this module, which registers ``_tiny``, and ``_tiny_stl``: the same
without published values, so that its Δm% needs the suite's own STL runs)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mtlbench.benchmark import (
    BENCHMARKS,
    Benchmark,
    Evaluator,
    Metric,
    MultiTaskModel,
    Protocol,
    Reference,
    tensor_batches,
)
from mtlbench.registry import NonNegativeInt, PositiveInt


@dataclass
class TinyProtocol(Protocol):
    epochs: int = 3
    batch_size: int = 16
    lr: float = 1e-2
    n: PositiveInt = 64
    nan_at_step: NonNegativeInt | None = None  # make the loss NaN from this global step on


class TinyEvaluator(Evaluator):
    def __init__(self) -> None:
        self.se = torch.zeros(2)
        self.n = 0

    def update(self, outputs, batch) -> None:
        _, y = batch
        pred = torch.cat(outputs, dim=1)
        self.se += ((pred - y) ** 2).sum(0)
        self.n += y.shape[0]

    def compute(self) -> dict[str, float]:
        mse = self.se / max(self.n, 1)
        return {"mse_a": float(mse[0]), "mse_b": float(mse[1])}


class Tiny(Benchmark):
    name = "_tiny"
    tasks = ("a", "b")
    metrics = (Metric("mse_a", "a", False), Metric("mse_b", "b", False))
    protocol_type = TinyProtocol
    description = "test-only synthetic regression"
    feature_dim = 8

    def __init__(self, protocol, data_root=None, seed=0):
        super().__init__(protocol, data_root, seed)
        g = torch.Generator().manual_seed(123)
        x = torch.randn(protocol.n, 4, generator=g)
        y = torch.stack([x[:, 0] - x[:, 1], x[:, 2] * 2.0], dim=1) + 0.1 * torch.randn(
            protocol.n, 2, generator=g
        )
        self.data = (x, y)
        self.steps = 0

    def reference(self):
        return Reference({"mse_a": 0.5, "mse_b": 0.5}, source="test values")

    def build_model(self):
        return MultiTaskModel(
            nn.Sequential(nn.Linear(4, 8), nn.Tanh()), [nn.Linear(8, 1), nn.Linear(8, 1)]
        )

    def batches(self, split, epoch=0):
        g = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        return tensor_batches(self.data, self.protocol.batch_size, split == "train", g)

    def task_losses(self, outputs, batch):
        _, y = batch
        losses = torch.stack(
            [((o.squeeze(1) - y[:, i]) ** 2).mean() for i, o in enumerate(outputs)]
        )
        if (
            self.protocol.nan_at_step is not None
            and self.training_steps() >= self.protocol.nan_at_step
        ):
            losses = losses * float("nan")
        return losses

    def training_steps(self) -> int:
        self.steps += 1
        return self.steps - 1

    def evaluator(self):
        return TinyEvaluator()


if "_tiny" not in BENCHMARKS:
    BENCHMARKS.register("_tiny")(Tiny)


class TinyWithoutPublished(Tiny):
    """``_tiny`` without published values (its Δm% needs the suite's own STL runs) and with a
    test split of its own (``_tiny`` evaluates every split on its training data)."""

    name = "_tiny_stl"

    def reference(self):
        return None

    def batches(self, split, epoch=0):
        if split != "test":
            return super().batches(split, epoch)
        x, y = self.data
        g = torch.Generator().manual_seed(7)
        shifted = (x + 0.5 * torch.randn(x.shape, generator=g), y)
        return tensor_batches(shifted, self.protocol.batch_size, False, g)


if "_tiny_stl" not in BENCHMARKS:
    BENCHMARKS.register("_tiny_stl")(TinyWithoutPublished)
