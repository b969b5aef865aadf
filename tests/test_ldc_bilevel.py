"""LDC-MTL's ``algorithm = "bilevel"`` (the paper's first-order split, arXiv 2502.08585): the
router learns from the discrepancy term only, with the losses held fixed; the model from the
weighted loss only, with the weights held fixed; the router has its own learning rate. Hand-
derived gradients on a three-task case, and the toy's balanced point (the paper's Figure 1)
from the starts that reach it first."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mtlbench.methods  # noqa: F401  (registers the methods)
from mtlbench.datasets.toy import INITIAL_POINTS, toy_losses
from mtlbench.method import METHODS, StepContext, create
from mtlbench.registry import ConfigError

# softmax(log(1, 2, 1)) = (1/4, 1/2, 1/4); with these losses the tau-weighted losses are
# a = w l = (0.5, 1.5, 0.25), away from every kink of |a_i - a_{i+1}|.
THETA = [0.0, math.log(2.0), 0.0]
LOSSES = [2.0, 3.0, 1.0]
LAMB = 0.5


def _bilevel(normalizer: str = "sum_detached"):
    m = create(
        "ldc_mtl",
        n_tasks=3,
        algorithm="bilevel",
        activation="softmax",
        init_low=0.0,
        init_high=0.0,
        normalizer=normalizer,
        lamb=LAMB,
        router_lr=0.025,
    ).double()
    with torch.no_grad():
        m.theta.copy_(torch.tensor(THETA, dtype=torch.float64))
    return m


@pytest.mark.parametrize("normalizer", ["none", "sum", "sum_detached"])
def test_bilevel_gradients_match_the_hand_derivation(normalizer):
    """By hand, with w = (1/4, 1/2, 1/4), l = (2, 3, 1), a = w l = (1/2, 3/2, 1/4):

    * model (lower level, w fixed): d/dl_i of sum sg(w) l / N(sg w) = w_i (N = 1 here for all
      three normalisers, as a softmax sums to 1): (1/4, 1/2, 1/4); the discrepancy adds nothing.
    * router (upper level, l fixed): D = |a1 - a2| + |a2 - a3|, signs (-1, +1), so
      dD/da = (-1, 2, -1) and dD/dw = l dD/da = (-2, 6, -1); through the softmax,
      dD/dtheta_j = w_j (dD/dw_j - sum_k w_k dD/dw_k) with sum_k w_k dD/dw_k = 9/4:
      (-17/16, 15/8, -13/16), times lamb = 1/2. The weighted loss adds nothing.
    * value: 9/4 + lamb * (1 + 5/4) = 27/8.
    """
    m = _bilevel(normalizer)
    losses = torch.tensor(LOSSES, dtype=torch.float64, requires_grad=True)
    out = m.objective(losses, StepContext())
    out.loss.backward()
    assert out.loss.item() == pytest.approx(27 / 8, rel=1e-12)
    np.testing.assert_allclose(out.weights.numpy(), [0.25, 0.5, 0.25], rtol=1e-12)
    np.testing.assert_allclose(losses.grad.numpy(), [0.25, 0.5, 0.25], rtol=1e-12)
    expected_theta = LAMB * np.array([-17 / 16, 15 / 8, -13 / 16])
    np.testing.assert_allclose(m.theta.grad.numpy(), expected_theta, rtol=1e-12)


def test_the_code_algorithm_mixes_both_terms_on_the_same_case():
    """The official code's single objective on the same case: the model also gets the
    discrepancy, lamb * tau_i * dD/da_i = (1/2)(1/4, 1/2, 1/4)(-1, 2, -1) on top of w, and the
    router also gets the weighted loss, w_j (l_j - w.l) = (-1/16, 3/8, -5/16) on top of the
    discrepancy (N(w) = sg(sum w) = 1)."""
    m = _bilevel()
    m.algorithm = "code"
    losses = torch.tensor(LOSSES, dtype=torch.float64, requires_grad=True)
    out = m.objective(losses, StepContext())
    out.loss.backward()
    assert out.loss.item() == pytest.approx(27 / 8, rel=1e-12)  # same value, other gradients
    np.testing.assert_allclose(losses.grad.numpy(), [0.125, 1.0, 0.125], rtol=1e-12)
    weighted = np.array([-1 / 16, 3 / 8, -5 / 16])
    discrepancy = LAMB * np.array([-17 / 16, 15 / 8, -13 / 16])
    np.testing.assert_allclose(m.theta.grad.numpy(), weighted + discrepancy, rtol=1e-12)


def test_bilevel_linear_router_does_not_train_the_backbone():
    """The router's input features are a constant of the upper level: no gradient reaches the
    shared representation through the router (the code's router trains it)."""
    torch.manual_seed(0)
    m = create(
        "ldc_mtl", n_tasks=2, feature_dim=4, router="linear", algorithm="bilevel", lamb=0.1
    ).double()
    feats = torch.rand(3, 4, dtype=torch.float64, requires_grad=True)
    losses = torch.tensor([0.7, 0.2], dtype=torch.float64, requires_grad=True)
    m.objective(losses, StepContext(features=feats)).loss.backward()
    assert feats.grad is None
    assert m.router_net.weight.grad.abs().sum() > 0
    w = m.router_weights(StepContext(features=feats)).detach()
    np.testing.assert_allclose(losses.grad.numpy(), (w / w.sum()).numpy(), rtol=1e-12)


def test_router_lr_is_the_methods_own_parameter_group():
    m = create("ldc_mtl", n_tasks=2, router_lr=0.025)
    (group,) = m.parameter_groups()
    assert group["lr"] == 0.025 and group["params"] == [m.theta]
    (default,) = create("ldc_mtl", n_tasks=2).parameter_groups()
    assert "lr" not in default  # the code's choice: the model's learning rate


def test_bilevel_configuration_errors():
    with pytest.raises(ConfigError, match="tau='w'"):
        create("ldc_mtl", n_tasks=2, algorithm="bilevel", tau="one")
    with pytest.raises(ConfigError, match="router_lr"):
        create("ldc_mtl", n_tasks=2, router_lr=0.0)


def test_toy_default_is_the_bilevel_softmax_router_and_the_benchmarks_keep_the_code():
    defaults = METHODS.get("ldc_mtl").benchmark_defaults
    toy = defaults["toy"]
    assert (toy["algorithm"], toy["activation"], toy["init_low"], toy["init_high"]) == (
        "bilevel",
        "softmax",
        0.0,
        0.0,
    )
    assert (toy["router_lr"], toy["lamb"]) == (0.025, 0.01)
    for bench in ("celeba", "nyuv2", "cityscapes", "qm9"):
        assert defaults[bench].get("algorithm", "code") == "code"
    assert METHODS.defaults("ldc_mtl")["algorithm"] == "code"


# The paper's point: the exact bilevel solution x = (0, -8.3552), where L1 = 0.1 f1 and L2 = f2
# with f1 = f2 and w = (10/11, 1/11).
BALANCED = (-1.509, -15.092)
# (-7.5, -0.5), the fastest of the five, stays within 0.05 of it from 10,500-10,600 of the
# standard 50,000 steps on (two machines, checked every 100 steps). The test allows 25,000
# steps, 2.4 times that, so that a machine whose rounding moves the arrival by thousands of
# steps still passes (issue 20: a check 1,400 steps after one machine's arrival failed on
# another); it stops once the run has stayed balanced for SETTLED_STEPS. No start can be much
# faster: Adam moves x2 by at most about 1e-3 a step, and the point is at x2 = -8.355.
FAST_START = 3
STEPS = 25_000


# A run counts as arrived once the point and the weights have stayed within tolerance for
# this many steps (checked every 100): the tests assert "arrives within N steps and stays",
# and stop there instead of running all N steps.
SETTLED_STEPS = 2_000


def _balanced(l1: float, l2: float, w: torch.Tensor) -> bool:
    """Within 0.05 of the balanced point, with weights within 0.02 of (10/11, 1/11)."""
    near = math.hypot(l1 - BALANCED[0], l2 - BALANCED[1]) < 0.05
    return near and abs(float(w[0]) - 10 / 11) < 0.02


def _toy_run(start: int, steps: int, **overrides):
    """The toy's default LDC-MTL in the trainer's optimizer layout (the model at the toy's lr
    1e-3, the router's own group at ``router_lr``), ``ctx.step`` counting as in the trainer,
    for at most ``steps`` steps: it stops once the run has stayed balanced for
    :data:`SETTLED_STEPS`. Returns the losses, the weights and the steps run."""
    kwargs = {**METHODS.get("ldc_mtl").benchmark_defaults["toy"], **overrides}
    method = create("ldc_mtl", n_tasks=2, **kwargs)
    x = torch.nn.Parameter(torch.tensor(INITIAL_POINTS[start]))
    optimizer = torch.optim.Adam([{"params": [x]}, *method.parameter_groups()], lr=1e-3)
    settled = 0
    for step in range(steps):
        optimizer.zero_grad()
        method.objective(toy_losses(x), StepContext(step=step)).loss.backward()
        optimizer.step()
        if step % 100 == 99:
            l1, l2 = toy_losses(x.detach().double()).tolist()
            w = torch.softmax(method.theta.detach(), -1)
            settled = settled + 100 if _balanced(l1, l2, w) else 0
            if settled >= SETTLED_STEPS:
                break
    l1, l2 = toy_losses(x.detach().double()).tolist()
    return (l1, l2), torch.softmax(method.theta.detach(), -1), step + 1


@pytest.mark.slow
def test_toy_bilevel_from_a_fast_start_ends_at_the_balanced_point():
    """The toy's default LDC-MTL, with the trainer's optimizer layout (the model at the toy's lr
    1e-3, the router's own group at ``router_lr``), from (-7.5, -0.5): within 0.05 of
    (-1.509, -15.092) with w = (10/11, 1/11). Three more starts end there at 50,000 steps;
    (-8.5, 7.5) stays in task 1's valley (docs/methods.md)."""
    (l1, l2), w, ran = _toy_run(FAST_START, STEPS)
    assert math.hypot(l1 - BALANCED[0], l2 - BALANCED[1]) < 0.05, (l1, l2, ran)
    np.testing.assert_allclose(w.numpy(), [10 / 11, 1 / 11], atol=0.02)


# (-8.5, 7.5), the start the paper's algorithm as stated leaves in task 1's valley. The test
# asserts what sweeps/toy_figure.yaml claims, at its own settings and length: a 24,000-step
# warm-up and the standard 50,000 steps. Measured 2026-12-03: within 0.05 of the point from
# 33,600 steps on, 0.0022 at 50,000. The time to leave the valley depends on rounding (a
# 20,000-step warm-up arrived at 29,600 steps on one machine and had not at 31,000 on
# another), so the test allows 16,400 steps of margin, not a few hundred, and stops once the
# run has stayed balanced for SETTLED_STEPS.
TRAPPED_START = 0
WARMUP, WARMUP_STEPS = 24_000, 50_000


@pytest.mark.slow
def test_router_warmup_frees_the_start_trapped_in_task_ones_valley():
    """From (-8.5, 7.5) the router, once on, gives all the weight to task 1 while x sits in its
    valley (losses of opposite signs: docs/methods.md, "Why the fifth start stays"). Held at
    w = (1/2, 1/2) for 24,000 steps (toy_figure.yaml), x first leaves the valley under LS's
    pull, then the router moves w to (10/11, 1/11) and x to the balanced point
    (-1.509, -15.092)."""
    (l1, l2), w, ran = _toy_run(TRAPPED_START, WARMUP_STEPS, router_warmup=WARMUP)
    assert math.hypot(l1 - BALANCED[0], l2 - BALANCED[1]) < 0.05, (l1, l2, ran)
    np.testing.assert_allclose(w.numpy(), [10 / 11, 1 / 11], atol=0.02)


def test_router_warmup_holds_the_router_then_hands_over():
    """During the warm-up (ctx.step < router_warmup) the upper level is multiplied by 0: the
    router's gradient is exactly zero (its optimizer sees zeros, w stays put) and the model's
    gradient is the weighted loss's, w_i / N = (1/4, 1/2, 1/4); from step router_warmup on, the
    hand-derived case above holds unchanged."""
    m = _bilevel()
    m.router_warmup = 5
    losses = torch.tensor(LOSSES, dtype=torch.float64, requires_grad=True)
    out = m.objective(losses, StepContext(step=4))
    out.loss.backward()
    assert out.loss.item() == pytest.approx(9 / 4, rel=1e-12)
    np.testing.assert_array_equal(m.theta.grad.numpy(), np.zeros(3))
    np.testing.assert_allclose(losses.grad.numpy(), [0.25, 0.5, 0.25], rtol=1e-12)
    m.theta.grad = None
    m.objective(torch.tensor(LOSSES, dtype=torch.float64), StepContext(step=5)).loss.backward()
    expected_theta = LAMB * np.array([-17 / 16, 15 / 8, -13 / 16])
    np.testing.assert_allclose(m.theta.grad.numpy(), expected_theta, rtol=1e-12)


def test_router_warmup_belongs_to_the_bilevel_algorithm():
    with pytest.raises(ConfigError, match="router_warmup is an option of algorithm='bilevel'"):
        create("ldc_mtl", n_tasks=2, router_warmup=10)
    with pytest.raises(ConfigError, match="router_warmup"):
        create("ldc_mtl", n_tasks=2, algorithm="bilevel", router_warmup=-1)
