"""LDC-MTL's closed-form objective (``objective``: one autograd node, hand-written gradients)
against its plain autograd formulation (``reference_objective``) in every configuration: the
same value, the same gradients of the losses, the router and (linear router) the features,
float64, to 1e-12."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

import mtlbench.methods  # noqa: F401  (registers the methods)
from mtlbench.method import StepContext, create
from mtlbench.methods.ldc_mtl import LDCMTL

K = 5
FEATURE_DIM = 4

VECTOR = [("vector", a) for a in ("sigmoid", "relu_sigmoid", "softmax")]
ROUTERS = [*VECTOR, ("linear", "softmax")]
CONFIGS = [
    dict(algorithm=alg, router=router, activation=act, normalization=norm, tau=tau, normalizer=nz)
    for alg, (router, act), norm, tau, nz in itertools.product(
        ("code", "bilevel"),
        ROUTERS,
        ("none", "rescaled", "log"),
        ("w", "one"),
        ("none", "sum", "sum_detached"),
    )
    if not (alg == "bilevel" and tau == "one")
]


def _pair(config: dict, seed: int, **extra) -> tuple[LDCMTL, LDCMTL]:
    """Two identical methods (float64), routers drawn at random: theta ~ N(0, 1) (negative
    entries exercise relu_sigmoid's zero gradient) or a random linear router whose weights the
    clamp [0.15, 0.25] cuts on both sides."""
    torch.manual_seed(seed)
    settings = {"lamb": 0.3, "clamp_min": 0.15, "clamp_max": 0.25, **config, **extra}
    m = create("ldc_mtl", n_tasks=K, feature_dim=FEATURE_DIM, **settings).double()
    with torch.no_grad():
        if m.router == "vector":
            m.theta.normal_()
        else:
            m.router_net.weight.normal_(std=2.0)
            m.router_net.bias.normal_()
    return m, copy.deepcopy(m)


def _run(m: LDCMTL, fast: bool, losses: torch.Tensor, features: torch.Tensor, step: int) -> dict:
    losses = losses.clone().requires_grad_(True)
    features = features.clone().requires_grad_(True)
    ctx = StepContext(step=step, features=features)
    out = m.objective(losses, ctx) if fast else m.reference_objective(losses, ctx)
    (out.loss * 1.7).backward()  # an engine-like scale factor on top
    grads = {name: p.grad for name, p in m.named_parameters()}
    return {
        "loss": out.loss.detach(),
        "weights": out.weights,
        "losses": losses.grad,
        "features": features.grad,
        **grads,
    }


def _assert_same(fast: dict, ref: dict) -> None:
    assert fast.keys() == ref.keys()
    assert torch.equal(fast["loss"], ref["loss"])  # the value to the bit
    for name in ref:
        if ref[name] is None:
            assert fast[name] is None or not fast[name].any(), name
            continue
        assert fast[name] is not None, name
        torch.testing.assert_close(fast[name], ref[name], rtol=1e-12, atol=1e-14, msg=name)


def _inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    losses = torch.rand(K, generator=g, dtype=torch.float64) * 2 + 0.1  # positive (log)
    features = torch.randn(3, FEATURE_DIM, 2, 2, generator=g, dtype=torch.float64)
    return losses, features


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_closed_form_equals_autograd(config):
    for seed in range(3):
        fast_m, ref_m = _pair(config, seed)
        for step in range(2):  # the second step uses the captured reference losses
            losses, features = _inputs(100 * seed + step)
            _assert_same(
                _run(fast_m, True, losses, features, step),
                _run(ref_m, False, losses, features, step),
            )
            fast_m.zero_grad(set_to_none=True)
            ref_m.zero_grad(set_to_none=True)


@pytest.mark.parametrize("router,activation", ROUTERS)
def test_router_warmup_gives_the_same_zero_router_gradient(router, activation):
    config = dict(algorithm="bilevel", router=router, activation=activation)
    fast_m, ref_m = _pair(config, 0, router_warmup=3, clamp_min=0.0, clamp_max=1.0)
    losses, features = _inputs(0)
    for step in (0, 2, 3, 4):
        fast, ref = (
            _run(fast_m, True, losses, features, step),
            _run(ref_m, False, losses, features, step),
        )
        _assert_same(fast, ref)
        router_grads = [v for k, v in fast.items() if k.startswith(("theta", "router_net"))]
        assert any(bool(g.any()) for g in router_grads) == (step >= 3)
        fast_m.zero_grad(set_to_none=True)
        ref_m.zero_grad(set_to_none=True)


@pytest.mark.parametrize("algorithm,tau", [("code", "w"), ("code", "one"), ("bilevel", "w")])
@pytest.mark.parametrize("router,activation", VECTOR)
def test_ties_take_the_zero_subgradient_as_autograd(algorithm, tau, router, activation):
    """Equal adjacent tau-weighted losses (|0| has subgradient 0 in autograd) give equal
    gradients too."""
    config = dict(algorithm=algorithm, router=router, activation=activation, tau=tau)
    fast_m, ref_m = _pair(config, 0)
    with torch.no_grad():
        for m in (fast_m, ref_m):
            m.theta.fill_(0.5)
    losses = torch.tensor([1.0, 1.0, 2.0, 2.0, 0.5], dtype=torch.float64)
    features = torch.zeros(1, FEATURE_DIM, dtype=torch.float64)
    _assert_same(_run(fast_m, True, losses, features, 0), _run(ref_m, False, losses, features, 0))


def test_a_float32_router_with_float64_losses_keeps_each_dtype():
    fast_m, ref_m = _pair(dict(activation="softmax"), 0)
    fast_m.float()
    ref_m.float()
    losses, features = _inputs(1)
    fast, ref = _run(fast_m, True, losses, features, 0), _run(ref_m, False, losses, features, 0)
    assert fast["theta"].dtype == torch.float32 and fast["losses"].dtype == torch.float64
    for name in ref:
        torch.testing.assert_close(fast[name], ref[name], rtol=1e-6, atol=1e-7, msg=name)
