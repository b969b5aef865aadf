"""GradDrop's fused pass over blocks of columns: a Jacobian of several blocks (the last one
partial) gives the explicit masks' update and weights, with and without ``log_losses``."""

from __future__ import annotations

import pytest
import torch

import mtlbench.methods  # noqa: F401  (registers the methods)
from mtlbench.method import create
from mtlbench.methods.graddrop import _BLOCK, sign_dropout


@pytest.mark.parametrize("leak", [0.0, 0.3])
@pytest.mark.parametrize("log_losses", [False, True])
def test_blocks_equal_the_explicit_masks(leak: float, log_losses: bool) -> None:
    k, p = 4, 2 * _BLOCK + 123
    g = torch.Generator().manual_seed(1)
    jac = torch.randn(k, p, generator=g, dtype=torch.float64)
    jac[:, _BLOCK - 5 : _BLOCK + 5] = 0.0  # zero columns across a block boundary
    losses = torch.rand(k, generator=g, dtype=torch.float64) + 0.5
    method = create("graddrop", k, leak=leak, log_losses=log_losses)
    torch.manual_seed(5)
    agg = method.aggregate(jac, losses)
    torch.manual_seed(5)
    uniform = torch.rand(p, dtype=torch.float64)
    grads = jac * method.loss_transform(losses)[:, None]  # 1 / (l + 1e-8) under log_losses
    masked, _ = sign_dropout(grads, uniform, leak)
    torch.testing.assert_close(agg.update, masked.sum(0) / k, rtol=1e-12, atol=1e-15)
    norms2 = (grads * grads).sum(1)
    expected = (masked * grads).sum(1) / norms2 / k
    torch.testing.assert_close(agg.weights, expected, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(agg.head_weights, method.loss_transform(losses) / k)


def test_the_jacobian_is_left_unchanged() -> None:
    jac = torch.randn(3, _BLOCK + 7, dtype=torch.float64)
    before = jac.clone()
    create("graddrop", 3, log_losses=True).aggregate(jac, torch.rand(3, dtype=torch.float64) + 1)
    assert torch.equal(jac, before)
