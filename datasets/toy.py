"""The two-task toy problem of CAGrad, Nash-MTL and FAMO (methods.md §6.3).

Introduced by CAGrad (Liu et al., NeurIPS 2021, arXiv 2110.14048, ``toy.py``, scale ``s = 1``) and
reused with ``s = 0.1`` by Nash-MTL (Navon et al., ICML 2022, arXiv 2202.01017,
``experiments/toy/problem.py``) and FAMO (Liu et al., NeurIPS 2023, arXiv 2306.03792). The
"model" is the point ``x = (x1, x2)`` itself. With ``LOWER = 5e-6``::

    f1_log = log(max(|0.5(-x1 - 7) - tanh(-x2)|, LOWER)) + 6
    f2_log = log(max(|0.5(-x1 + 3) + tanh(-x2) + 2|, LOWER)) + 6
    f1_sq  = ((-x1 + 7)^2 + 0.1 (-x2 - 8)^2) / 10 - 20
    f2_sq  = ((-x1 - 7)^2 + 0.1 (-x2 - 8)^2) / 10 - 20
    c1 = max(tanh(0.5 x2), 0),   c2 = max(tanh(-0.5 x2), 0)
    L1 = s (c1 f1_log + c2 f1_sq),   L2 = c1 f2_log + c2 f2_sq

Protocol of Nash-MTL / FAMO: Adam on ``x`` at lr 1e-3 from one of five initial points,
50,000 steps (FAMO's default; Nash-MTL's is 35,000), here ``epochs * steps_per_epoch``. Each
"epoch" evaluates the current point, so the per-epoch curves are the trajectory subsampled
every ``steps_per_epoch`` steps. The Pareto front plotted by ``plot_2d_pareto`` is the segment
``x2 = -8.3552, x1 in [-7, 7]`` (:func:`pareto_front`).

Layout in the :class:`~mtlbench.benchmark.MultiTaskModel`: the encoder holds ``x`` and returns
it as a batch of one, ``(1, 2)`` (so ``feature_dim = 2``); head ``k`` is parameter-free and
returns the vector ``(L_k, x1, x2)``: the task loss and the point it was evaluated at, so that
the evaluator can log the trajectory without holding the model. ``task_losses`` takes the first
entries. There is no data: batches are empty placeholder tensors and ``batch_size`` is unused.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

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
from mtlbench.registry import ConfigError, PositiveFloat, PositiveInt, Range

LOWER = 5e-6
# The five initial points of Nash-MTL and FAMO (``experiments/toy``); CAGrad used three others.
DOMAIN = 100.0  # |x_i| beyond this: the run left the toy problem (out_of_domain)
INITIAL_POINTS: tuple[tuple[float, float], ...] = (
    (-8.5, 7.5),
    (0.0, 0.0),
    (9.0, 9.0),
    (-7.5, -0.5),
    (9.0, -1.0),
)
STANDARD_STEPS = 50_000  # FAMO's default ``n_epochs`` (one step each)
PARETO_X2 = -8.3552  # ``plot_2d_pareto``: the front is x2 = -8.3552, x1 in [-7, 7]


def toy_loss(x: Tensor, task: int, scale: float = 0.1) -> Tensor:
    """``L1`` (``task`` 0) or ``L2`` (``task`` 1) at the points ``x`` of shape ``(..., 2)``.

    Each head computes only its own loss: the toy's cost per step is all Python overhead and
    small autograd nodes, so computing both losses in both heads would double it.
    """
    x1, x2 = x[..., 0], x[..., 1]
    c1 = torch.clamp(torch.tanh(0.5 * x2), min=0)
    c2 = torch.clamp(torch.tanh(-0.5 * x2), min=0)
    if task == 0:
        f_log = torch.clamp((0.5 * (-x1 - 7) - torch.tanh(-x2)).abs(), LOWER).log() + 6
        f_sq = ((-x1 + 7).pow(2) + 0.1 * (-x2 - 8).pow(2)) / 10 - 20
        return scale * (c1 * f_log + c2 * f_sq)
    f_log = torch.clamp((0.5 * (-x1 + 3) + torch.tanh(-x2) + 2).abs(), LOWER).log() + 6
    f_sq = ((-x1 - 7).pow(2) + 0.1 * (-x2 - 8).pow(2)) / 10 - 20
    return c1 * f_log + c2 * f_sq


def toy_losses(x: Tensor, scale: float = 0.1) -> Tensor:
    """``(L1, L2)`` at the points ``x`` of shape ``(..., 2)``; output shape ``(..., 2)``."""
    return torch.stack([toy_loss(x, 0, scale), toy_loss(x, 1, scale)], dim=-1)


def pareto_front(scale: float = 0.1, n: int = 200) -> Tensor:
    """``n`` points ``(L1, L2)`` (float64) of the Pareto front drawn by ``plot_2d_pareto``."""
    x1 = torch.linspace(-7.0, 7.0, n, dtype=torch.float64)
    points = torch.stack([x1, torch.full_like(x1, PARETO_X2)], dim=-1)
    return toy_losses(points, scale)


class Point(nn.Module):
    """The shared "encoder": the variables ``x``; ``forward`` ignores its input."""

    def __init__(self, start: tuple[float, float]) -> None:
        super().__init__()
        self.x = nn.Parameter(torch.tensor(start, dtype=torch.float32))

    def forward(self, _: Any = None) -> Tensor:
        return self.x.unsqueeze(0)


class ToyLoss(nn.Module):
    """Head ``task`` (0 or 1): ``(L_task, x1, x2)`` from the representation ``(1, 2)``."""

    def __init__(self, task: int, scale: float) -> None:
        super().__init__()
        self.task = task
        self.scale = scale

    def forward(self, rep: Tensor) -> Tensor:
        x = rep[0]
        return torch.cat([toy_loss(x, self.task, self.scale).unsqueeze(0), x.detach()])


@dataclass
class ToyProtocol(Protocol):
    """Nash-MTL / FAMO protocol; ``start`` indexes :data:`INITIAL_POINTS`, ``scale`` is ``s``.

    ``batch_size`` is unused (there is no data).
    """

    epochs: int = 500
    steps_per_epoch: PositiveInt = 100
    selection: Literal["best_val_delta_m", "last", "last10_test_mean"] = "last"
    scale: PositiveFloat = 0.1
    start: Annotated[int, Range(ge=0, lt=len(INITIAL_POINTS))] = 0

    @property
    def total_steps(self) -> int:
        per_epoch = self.steps_per_epoch
        if self.max_steps is not None:
            per_epoch = min(per_epoch, self.max_steps)
        return self.epochs * per_epoch


class ToyEvaluator(Evaluator):
    """The losses at the current point, plus the point itself (``x1``, ``x2``)."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def update(self, outputs: list[Tensor], batch: Any) -> None:
        l1, l2 = (float(o[0]) for o in outputs)
        self.values = {"L1": l1, "L2": l2, "x1": float(outputs[0][1]), "x2": float(outputs[0][2])}

    def compute(self) -> dict[str, float]:
        return dict(self.values)


@register("toy")
class Toy(Benchmark):
    tasks = ("L1", "L2")
    metrics = (
        Metric("L1", "L1", higher_is_better=False),
        Metric("L2", "L2", higher_is_better=False),
    )
    protocol_type = ToyProtocol
    paper = "CAGrad (arXiv 2110.14048); Nash-MTL (arXiv 2202.01017); FAMO (arXiv 2306.03792)"
    description = "2-task toy problem on x in R^2 (Adam on x, five initial points)"
    feature_dim = 2
    # FAMO's toy trainer: l* = [-21 s, -21] at the default scale s = 0.1 (both losses go
    # negative, down to about -20), the default ``min_losses`` of every method that takes one.
    loss_lower_bounds = (-2.1, -21.0)
    protocol: ToyProtocol

    def __init__(self, protocol: Protocol, data_root: Any = None, seed: int = 0) -> None:
        super().__init__(protocol, data_root, seed)
        if not 0 <= self.protocol.start < len(INITIAL_POINTS):
            raise ConfigError(
                f"protocol.start: expected 0..{len(INITIAL_POINTS) - 1} (an index into "
                f"{list(INITIAL_POINTS)}), got {self.protocol.start}"
            )

    @classmethod
    def smoke_protocol(cls) -> dict[str, Any]:
        return {"epochs": 1, "steps_per_epoch": 2}

    @property
    def start_point(self) -> tuple[float, float]:
        return INITIAL_POINTS[self.protocol.start]

    def build_model(self) -> MultiTaskModel:
        scale = self.protocol.scale
        return MultiTaskModel(Point(self.start_point), [ToyLoss(0, scale), ToyLoss(1, scale)])

    def batches(self, split: Split, epoch: int = 0) -> Iterator[Tensor]:
        n = self.protocol.steps_per_epoch if split == "train" else 1
        for _ in range(n):
            yield torch.empty(0)

    def task_losses(self, outputs: list[Tensor], batch: Any) -> Tensor:
        return torch.stack([o[0] for o in outputs])

    def evaluator(self) -> Evaluator:
        return ToyEvaluator()

    def out_of_domain(self, model: MultiTaskModel) -> str | None:
        """Outside the box ``|x_i| <= DOMAIN`` (ten times the plotted square ``[-10, 10]^2``,
        so that no method's honest trajectory reaches it): the run left the problem."""
        x = next(model.encoder.parameters()).detach()
        if bool((x.abs() > DOMAIN).any()):
            point = [round(v, 3) for v in x.flatten().tolist()]
            return f"x = {point} left the toy's domain |x_i| <= {DOMAIN:g}"
        return None

    def record_extra(self, model: MultiTaskModel) -> dict[str, Any]:
        x = next(model.encoder.parameters()).detach().cpu().double()
        l1, l2 = toy_losses(x, self.protocol.scale).tolist()
        steps = self.protocol.total_steps
        return {
            "scale": self.protocol.scale,
            "start_index": self.protocol.start,
            "start_point": list(self.start_point),
            "final_point": x.tolist(),
            "final_losses": {"L1": l1, "L2": l2},
            "total_steps": steps,
            "standard_steps": STANDARD_STEPS,
            "shortened": steps < STANDARD_STEPS,
        }
