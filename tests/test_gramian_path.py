"""The Gramian-only engine path (``jacobian_mode="gramian"``): ``G = J J^T`` without ``J``, then
one backward pass of ``sum_k w_k l_k``. Every registered Gramian method must give the batched
path's gradients (shared parameters and heads) to 1e-6, under both head policies."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtlbench.gradients import GradientEngine, gramian, gramian_root, jacobian
from mtlbench.method import METHODS, GramianWeighting, StepContext, create, names

K = 4


def gramian_methods() -> list[str]:
    return [n for n in names() if issubclass(METHODS.get(n), GramianWeighting)]


def tiny_model() -> tuple[nn.Module, nn.ModuleList]:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.Tanh()).double()
    heads = nn.ModuleList(nn.Linear(6, 1) for _ in range(K)).double()
    return encoder, heads


def task_losses(encoder: nn.Module, heads: nn.ModuleList, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    x = torch.randn(16, 5, generator=g, dtype=torch.float64)
    y = torch.randn(16, K, generator=g, dtype=torch.float64)
    z = encoder(x)
    out = torch.cat([h(z) for h in heads], dim=1)
    return ((out - y) ** 2).mean(0) + 0.1


def run(name: str, mode: str, head_grads: str, steps: int = 3) -> list[torch.Tensor]:
    """The gradients of all parameters after each of ``steps`` engine steps (the method keeps
    its state between steps, as in training)."""
    encoder, heads = tiny_model()
    torch.manual_seed(1)
    method = create(name, K, feature_dim=6).double()
    engine = GradientEngine(
        list(encoder.parameters()),
        list(heads.parameters()),
        mode=mode,  # type: ignore[arg-type]
        head_grads=head_grads,  # type: ignore[arg-type]
    )
    grads = []
    for step in range(steps):
        encoder.zero_grad(set_to_none=True)
        heads.zero_grad(set_to_none=True)
        torch.manual_seed(100 + step)
        engine.backward(method, task_losses(encoder, heads, step), StepContext(step=step))
        params = [*encoder.parameters(), *heads.parameters()]
        grads.append(torch.cat([p.grad.reshape(-1) for p in params]))  # type: ignore[union-attr]
    return grads


def test_every_gramian_method_is_covered() -> None:
    assert {"mgda", "upgrad", "cagrad", "pcgrad", "nash_mtl"} <= set(gramian_methods())


@pytest.mark.parametrize("head_grads", ["weighted", "unit"])
@pytest.mark.parametrize("name", gramian_methods())
def test_gramian_path_equals_batched(name: str, head_grads: str) -> None:
    expected = run(name, "batched", head_grads)
    got = run(name, "gramian", head_grads)
    for a, b in zip(got, expected, strict=True):
        assert float((a - b).norm() / b.norm()) <= 1e-6


def test_gramian_without_jacobian_equals_j_jt() -> None:
    encoder, heads = tiny_model()
    losses = task_losses(encoder, heads, 0)
    params = list(encoder.parameters())
    jac = jacobian(losses, params, retain_graph=True)
    torch.testing.assert_close(gramian(losses, params), jac @ jac.T, rtol=1e-12, atol=1e-12)
    assert all(p.grad is None for p in params)  # nothing accumulated, hooks removed
    root = gramian_root(jac @ jac.T)
    torch.testing.assert_close(root @ root.T, jac @ jac.T, rtol=1e-10, atol=1e-12)


def test_auto_policy() -> None:
    encoder, heads = tiny_model()
    shared, head = list(encoder.parameters()), list(heads.parameters())
    mgda, db_mtl = create("mgda", K), create("db_mtl", K)
    assert GradientEngine(shared, head, mode="auto").uses_gramian_path(mgda)
    assert not GradientEngine(shared, head, mode="auto").uses_gramian_path(db_mtl)
    assert not GradientEngine(shared, head, mode="auto", chunk_size=2).uses_gramian_path(mgda)
    assert GradientEngine(shared, head, mode="gramian", chunk_size=2).uses_gramian_path(mgda)
    assert not GradientEngine(shared, head, mode="batched").uses_gramian_path(mgda)
    # Jacobian methods under "gramian" keep the batched Jacobian: same update as "batched".
    got, expected = run("db_mtl", "gramian", "weighted"), run("db_mtl", "batched", "weighted")
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)
