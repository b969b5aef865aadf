"""The bench's workloads: a model with K heads, one batch, and its per-task losses.

``mlp`` (an MLP trunk with K linear heads; K up to 1,000), ``celeba`` (the CelebA CNN trunk at
64 x 64 with K heads), ``multidigits`` (the MultiDigits model and batch, K = 2), ``toy`` (the
two-task toy problem: the model is the point ``x``, so a step is all per-operation overhead).
The two benchmark workloads create each method with that benchmark's defaults, as a trial on it
would (LDC-MTL's toy router, FAMO's loss lower bounds). See docs/performance.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mtlbench import benchmark as benchmarks
from mtlbench.benchmark import MultiTaskModel
from mtlbench.method import Method, create
from mtlbench.registry import ConfigError
from mtlbench.trial import TrialConfig, resolve


@dataclass
class Workload:
    """A model with K heads, one batch, and the per-task losses of that batch."""

    name: str
    n_tasks: int
    model: MultiTaskModel
    batch: tuple[Tensor, Tensor]
    task_losses: Callable[[list[Tensor], Any], Tensor]
    feature_dim: int
    # Methods take this benchmark's defaults (``Method.benchmark_defaults``, its loss lower
    # bounds) when set; the synthetic workloads use each method's own defaults.
    benchmark: str | None = None

    def method(self, name: str) -> Method:
        """A fresh ``name`` for this workload's K tasks (on the CPU), configured as a trial on
        ``benchmark`` would configure it."""
        hparams: dict[str, Any] = {}
        if self.benchmark is not None:
            hparams = resolve(TrialConfig(self.benchmark, name, seed=0)).hparams
        return create(name, self.n_tasks, feature_dim=self.feature_dim, **hparams)


def _mse_losses(outputs: list[Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
    return ((torch.cat(outputs, dim=1) - batch[1]) ** 2).mean(0)


def _bce_losses(outputs: list[Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
    logits = torch.cat(outputs, dim=1)
    return nn.functional.binary_cross_entropy_with_logits(logits, batch[1], reduction="none").mean(
        0
    )


def mlp_workload(k: int, batch_size: int = 256, width: int = 512) -> Workload:
    """A 2-layer MLP trunk with K linear regression heads, stored as one ``Linear(width, K)``
    (the same maps as K ``Linear(width, 1)``): with K = 1,000 separate modules, Python overhead
    per head (forward calls, Adam's per-tensor loop) would dominate LS's step and dilute every
    ratio, instead of showing what the method itself adds."""
    encoder = nn.Sequential(nn.Linear(128, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
    heads = [nn.Linear(width, k)]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 128, generator=g)
    y = torch.randn(batch_size, k, generator=g)
    return Workload("mlp", k, MultiTaskModel(encoder, heads), (x, y), _mse_losses, width)


def celeba_workload(k: int, batch_size: int = 256) -> Workload:
    """FAMO's CelebA CNN trunk (protocols.md section 4.3) at 64 x 64 with K logit heads."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    encoder = nn.Sequential(
        *block(3, 64),
        nn.MaxPool2d(2),
        *block(64, 128),
        *block(128, 128),
        nn.MaxPool2d(2),
        *block(128, 256),
        *block(256, 256),
        nn.MaxPool2d(2),
        *block(256, 512),
        *block(512, 512),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(512, 512, bias=False),
        nn.BatchNorm1d(512),
        nn.ReLU(),
        nn.Linear(512, 512, bias=False),
        nn.BatchNorm1d(512),
        nn.ReLU(),
    )
    heads = [nn.Linear(512, 1) for _ in range(k)]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, 3, 64, 64, generator=g)
    y = (torch.rand(batch_size, k, generator=g) > 0.5).float()
    return Workload("celeba", k, MultiTaskModel(encoder, heads), (x, y), _bce_losses, 512)


def multidigits_workload(k: int = 2, batch_size: int = 256) -> Workload:
    if k != 2:
        raise ConfigError(f"the multidigits workload has 2 tasks, not K={k}: use --tasks 2")
    cls = benchmarks.get("multidigits")
    bench = cls(cls.default_protocol().replace(batch_size=batch_size), None, 0)
    batch = next(iter(bench.batches("train", 0)))
    return Workload(
        "multidigits",
        2,
        bench.build_model(),
        batch,
        bench.task_losses,
        cls.feature_dim or 64,
        benchmark="multidigits",
    )


def toy_workload(k: int = 2, batch_size: int | None = None) -> Workload:
    """The two-task toy (``datasets/toy.py``) from its first initial point: no data (the
    batch is an empty placeholder, ``batch_size`` is ignored), a forward of a few dozen scalar
    operations, so that the step measures the fixed per-step cost of a method (its objective's
    operations, its optimizer parameter group) against LS's."""
    if k != 2:
        raise ConfigError(f"the toy workload has 2 tasks, not K={k}: use --tasks 2")
    cls = benchmarks.get("toy")
    bench = cls(cls.default_protocol(), None, 0)
    empty = torch.empty(0)
    return Workload(
        "toy", 2, bench.build_model(), (empty, empty), bench.task_losses, 2, benchmark="toy"
    )


WORKLOADS: dict[str, Callable[..., Workload]] = {
    "mlp": mlp_workload,
    "celeba": celeba_workload,
    "multidigits": multidigits_workload,
    "toy": toy_workload,
}
