"""The fused Jacobian methods (no K x P temporaries) against their textbook formulas on random
Jacobians: GradDrop against the explicit masks of :func:`sign_dropout`, and the one-read
finiteness check."""

from __future__ import annotations

import pytest
import torch

from mtlbench.method import all_finite, create
from mtlbench.methods.graddrop import sign_dropout


@pytest.mark.parametrize("leak", [0.0, 0.3])
@pytest.mark.parametrize("log_losses", [False, True])
def test_graddrop_equals_the_explicit_masks(leak: float, log_losses: bool) -> None:
    g = torch.Generator().manual_seed(0)
    jac = torch.randn(5, 2000, generator=g, dtype=torch.float64)
    jac[:, :10] = 0.0  # zero columns: purity 1/2, no task kept or dropped by sign alone
    losses = torch.rand(5, generator=g, dtype=torch.float64) + 0.5
    method = create("graddrop", 5, leak=leak, log_losses=log_losses)
    torch.manual_seed(3)
    agg = method.aggregate(jac, losses)
    torch.manual_seed(3)
    uniform = torch.rand(2000, dtype=torch.float64)
    grads = jac / losses[:, None] if log_losses else jac
    masked, _ = sign_dropout(grads, uniform, leak)
    torch.testing.assert_close(agg.update, masked.sum(0) / 5)
    norms2 = (grads * grads).sum(1)
    torch.testing.assert_close(agg.weights, (masked * grads).sum(1) / norms2 / 5)


def test_all_finite() -> None:
    assert all_finite(torch.ones(3, 4))
    assert not all_finite(torch.tensor([1.0, float("nan")]))
    assert not all_finite(torch.tensor([1.0, float("-inf")]))
    big = torch.full((4,), 3e38)  # finite entries whose sum overflows: the exact check decides
    assert all_finite(big)
