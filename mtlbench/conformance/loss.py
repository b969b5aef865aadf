"""Checks of a loss-weighting method (``objective``) on a tiny two-layer model.

* a finite scalar objective and finite weights of shape (K,) on typical, tiny (1e-8), huge
  (1e8), zero and mixed losses; finite gradients on typical losses; a working ``after_step``
  where the method asks for post-step losses;
* :func:`train` runs the few steps that the state and determinism checks compare.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from mtlbench.conformance.findings import Builder, Finding
from mtlbench.method import LossWeighting, StepContext

FEATURE_DIM = 6
# Factors on the K losses of the tiny model: (name, factors as a function of K).
LOSS_SCALES: dict[str, Callable[[int], Tensor]] = {
    "typical": lambda k: torch.ones(k),
    "tiny": lambda k: torch.full((k,), 1e-8),
    "huge": lambda k: torch.full((k,), 1e8),
    "zero": lambda k: torch.zeros(k),
    "mixed": lambda k: torch.logspace(-8, 8, k),
}

Forward = Callable[[], tuple[Tensor, Tensor]]


def tiny_model(k: int, seed: int = 0) -> tuple[nn.Module, nn.ModuleList, Forward]:
    """A shared layer, K linear heads and a fixed batch: ``forward() -> (features, losses)``."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        shared = nn.Sequential(nn.Linear(4, FEATURE_DIM), nn.Tanh())
        heads = nn.ModuleList([nn.Linear(FEATURE_DIM, 1) for _ in range(k)])
        x, y = torch.randn(8, 4), torch.randn(8, k)

    def forward() -> tuple[Tensor, Tensor]:
        rep = shared(x)
        losses = torch.stack(
            [((h(rep).squeeze(1) - y[:, i]) ** 2).mean() for i, h in enumerate(heads)]
        )
        return rep, losses

    return shared, heads, forward


def step(method: LossWeighting, forward: Forward, params: list[Tensor], at: int) -> list[Tensor]:
    """One SGD step (lr 0.05) of the model and the method's parameters, seeded by ``at``;
    returns the objective and the weights, detached."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(1000 + at)
        rep, losses = forward()
        ctx = StepContext(step=at, features=rep if method.uses_features else None)
        out = method.objective(losses, ctx)
        everything = params + [p for p in method.parameters() if p.requires_grad]
        grads = torch.autograd.grad(out.loss, everything, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(everything, grads, strict=True):
                if g is not None:
                    p.sub_(0.05 * g)
        if method.post_step_losses:
            with torch.no_grad():
                method.after_step(forward()[1])
    return [out.loss.detach(), out.weights.detach()]


def check_objective(build: Builder, name: str, k: int = 3) -> Iterator[Finding]:
    """Finite objectives and weights on every loss scale; finite gradients on typical losses."""
    for label, factors in LOSS_SCALES.items():
        method = build(k)
        if label == "zero" and method.positive_losses:
            continue
        method.on_epoch_start(0)
        shared, heads, forward = tiny_model(k)
        rep, losses = forward()
        ctx = StepContext(features=rep if method.uses_features else None)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(0)
                out = method.objective(losses * factors(k), ctx)
        except Exception as err:  # a method must not raise on valid losses
            yield Finding(name, "runs", f"{type(err).__name__}: {err} on {label} losses")
            return
        if out.loss.dim() != 0 or tuple(out.weights.shape) != (k,):
            shapes = (tuple(out.loss.shape), tuple(out.weights.shape))
            yield Finding(
                name,
                "shapes",
                f"objective and weights of shapes {shapes} on "
                f"{label} losses, expected ((), ({k},))",
            )
            return
        if not (bool(torch.isfinite(out.loss)) and bool(torch.isfinite(out.weights).all())):
            yield Finding(name, "finite", f"non-finite objective or weights on {label} losses")
            return
        if label == "typical":
            yield from _gradients(method, name, out.loss, shared, heads)


def _gradients(method: LossWeighting, name: str, loss: Tensor, shared, heads) -> Iterator[Finding]:
    params = [*shared.parameters(), *heads.parameters(), *method.parameters()]
    params = [p for p in params if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    if all(g is None for g in grads[: len(list(shared.parameters()))]):
        yield Finding(name, "gradients", "the objective does not reach the shared parameters")
    elif not all(g is None or bool(torch.isfinite(g).all()) for g in grads):
        yield Finding(name, "finite", "non-finite gradients of the objective on typical losses")
