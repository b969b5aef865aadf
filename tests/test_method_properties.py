"""Properties every registered method must have, parametrised over ``mtlbench.method.names()``:
a method added later gets these tests by being registered.

Each method is built with its default hyper-parameters by ``create(name, n_tasks=K,
feature_dim=D)``. What is checked depends on what the method declares:

* every method: a citation, a cost class, a docstring; per-benchmark defaults that validate;
  its state survives ``state_dict`` / ``load_state_dict`` (through ``torch.save``);
* gradient methods (``aggregate``): finite output of the right shapes, ``update = w^T J`` for
  Gramian methods, permutation equivariance (unless ``stochastic``; among tasks 1..K-1 only if
  ``ordered_tasks``), no conflict with any task
  gradient (if ``non_conflicting``), ``aggregate(c J) = c aggregate(J)`` for ``c > 0`` (only if
  the class sets ``scale_equivariant = True``: a promise not every method makes, e.g. MoCo's or
  SDMGrad's fixed inner step sizes break it), and no NaN on degenerate Jacobians;
* loss-weighting methods (``objective``): a finite scalar, weights of shape (K,), finite
  gradients for a tiny model, and a working ``after_step`` when ``post_step_losses``.
"""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch
from torch import nn

from mtlbench.benchmark import BENCHMARKS, Protocol
from mtlbench.method import (
    METHODS,
    GradientMethod,
    GramianWeighting,
    JacobianMethod,
    LossWeighting,
    Method,
    StepContext,
    create,
    names,
)

KS = (2, 3, 5)
FEATURE_DIM = 6
N_PARAMS = 16
ALL = names()


def _build(name: str, k: int) -> Method:
    return create(name, n_tasks=k, feature_dim=FEATURE_DIM)


def _gradient_names() -> list[str]:
    return [n for n in ALL if issubclass(METHODS.get(n), GradientMethod)]


def _loss_names() -> list[str]:
    return [n for n in ALL if issubclass(METHODS.get(n), LossWeighting)]


def _problem(k: int, seed: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    # Correlated rows (a common component), as task gradients usually are.
    jac = torch.randn(k, N_PARAMS, generator=g, dtype=dtype)
    jac = jac + 0.5 * torch.randn(1, N_PARAMS, generator=g, dtype=dtype)
    losses = 0.5 + torch.rand(k, generator=g, dtype=dtype) * 1.5
    return jac, losses


def _seeded(method: Method, seed: int) -> None:
    if method.stochastic:
        torch.manual_seed(seed)


def _close(a: torch.Tensor, b: torch.Tensor, scale: float = 1.0) -> None:
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * max(scale, 1.0))


# -- every method -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_method_describes_itself(name):
    cls = METHODS.get(name)
    assert cls.paper.strip(), f"{name}: empty paper"
    assert cls.cost in ("O(1)", "O(K)"), f"{name}: cost {cls.cost!r}"
    assert cls.__doc__ and cls.__doc__.strip(), f"{name}: no docstring"
    assert cls.name == name
    assert cls.scale in ("sum", "mean") and cls.reference_scale in (None, "sum", "mean")
    kinds = {"losses": LossWeighting, "gramian": GramianWeighting, "jacobian": JacobianMethod}
    assert issubclass(cls, kinds[cls.needs]), f"{name}: needs {cls.needs!r} but is not that kind"
    assert (cls.cost == "O(1)") == (cls.needs == "losses")


@pytest.mark.parametrize("name", ALL)
def test_benchmark_defaults_validate(name):
    cls = METHODS.get(name)
    for bench, settings in cls.benchmark_defaults.items():
        settings = dict(settings)
        protocol = settings.pop("protocol", {})
        METHODS.validate(name, settings)
        ptype = BENCHMARKS.get(bench).protocol_type if bench in BENCHMARKS else Protocol
        ptype().replace(**protocol)  # raises on an unknown option or a wrong type
        assert {f.name for f in dataclasses.fields(ptype)} >= set(protocol)


def _roundtrip(method: Method) -> dict:
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def _tiny(k: int, seed: int = 0):
    torch.manual_seed(seed)
    shared = nn.Sequential(nn.Linear(4, FEATURE_DIM), nn.Tanh())
    heads = nn.ModuleList([nn.Linear(FEATURE_DIM, 1) for _ in range(k)])
    x, y = torch.randn(8, 4), torch.randn(8, k)

    def forward():
        rep = shared(x)
        losses = torch.stack(
            [((h(rep).squeeze(1) - y[:, i]) ** 2).mean() for i, h in enumerate(heads)]
        )
        return rep, losses

    return shared, heads, forward


def _loss_step(method: LossWeighting, forward, params, step: int):
    """One training step of a loss-weighting method; returns (loss, weights) detached."""
    _seeded(method, 1000 + step)
    rep, losses = forward()
    ctx = StepContext(step=step, features=rep if method.uses_features else None)
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
    return out.loss.detach(), out.weights.detach()


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", ALL)
def test_state_survives_a_checkpoint(name, k):
    first = _build(name, k)
    first.on_epoch_start(0)
    if isinstance(first, LossWeighting):
        shared, heads, forward = _tiny(k)
        params = list(shared.parameters()) + list(heads.parameters())
        for step in range(3):
            _loss_step(first, forward, params, step)
        state = _roundtrip(first)
        model_state = [p.detach().clone() for p in params]
        expected = [_loss_step(first, forward, params, s) for s in (3, 4)]
        with torch.no_grad():
            for p, v in zip(params, model_state, strict=True):
                p.copy_(v)
        second = _build(name, k)
        second.load_state_dict(state)
        got = [_loss_step(second, forward, params, s) for s in (3, 4)]
    else:
        for step in range(3):
            _seeded(first, step)
            first.aggregate(*_problem(k, seed=step))
        state = _roundtrip(first)
        second = _build(name, k)
        second.load_state_dict(state)
        expected, got = [], []
        for step in (3, 4):
            for method, out in ((first, expected), (second, got)):
                _seeded(method, step)
                agg = method.aggregate(*_problem(k, seed=step))
                out.append((agg.update, agg.weights, agg.head_weights))
    for a, b in zip(expected, got, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y), f"{name}: state lost in the checkpoint"


# -- gradient methods -------------------------------------------------------------------------


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", _gradient_names())
def test_aggregate_shapes_and_finiteness(name, k):
    method = _build(name, k)
    jac, losses = _problem(k)
    _seeded(method, 0)
    agg = method.aggregate(jac, losses)
    assert agg.update.shape == (N_PARAMS,)
    assert agg.weights.shape == (k,) and agg.head_weights.shape == (k,)
    for t in (agg.update, agg.weights, agg.head_weights):
        assert torch.isfinite(t).all(), name
    if isinstance(method, GramianWeighting):
        _close(agg.update, agg.weights @ jac, float(jac.abs().max()))


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", _gradient_names())
def test_permutation_equivariance(name, k):
    if METHODS.get(name).stochastic:
        pytest.skip(f"{name} is stochastic")
    jac, losses = _problem(k, seed=1)
    perm = torch.roll(torch.arange(k), 1)
    if METHODS.get(name).ordered_tasks:  # task 0 stays first; the others are permuted
        perm = torch.cat([torch.zeros(1, dtype=torch.long), torch.roll(torch.arange(1, k), 1)])
    a = _build(name, k).aggregate(jac, losses)
    b = _build(name, k).aggregate(jac[perm], losses[perm])
    scale = float(a.update.abs().max())
    _close(b.update, a.update, scale)
    _close(b.weights, a.weights[perm], float(a.weights.abs().max()))


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", _gradient_names())
def test_positive_scaling(name, k):
    if not METHODS.get(name).scale_equivariant:
        pytest.skip(f"{name} does not declare scale_equivariant")
    jac, losses = _problem(k, seed=2)
    method = _build(name, k)
    _seeded(method, 0)
    a = method.aggregate(jac, losses)
    method = _build(name, k)
    _seeded(method, 0)
    b = method.aggregate(3.7 * jac, losses)
    _close(b.update, 3.7 * a.update, float(b.update.abs().max()))


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", _gradient_names())
def test_non_conflicting_update(name, k):
    method = _build(name, k)
    if not method.non_conflicting:
        pytest.skip(f"{name} makes no non-conflict promise")
    for seed in range(5):
        jac, losses = _problem(k, seed=10 + seed)
        jac = jac - 1.5 * jac.mean(0)  # conflicting gradients
        fresh = _build(name, k)
        _seeded(fresh, seed)
        update = fresh.aggregate(jac, losses).update
        dots = jac @ update
        bound = 1e-6 * update.norm() * jac.norm(dim=1)
        assert (dots >= -bound).all(), (name, dots)


def _degenerate(k: int) -> dict[str, torch.Tensor]:
    jac, _ = _problem(k, seed=3)
    duplicated = jac.clone()
    duplicated[-1] = duplicated[0]
    rank_one = torch.outer(torch.linspace(0.5, 2.0, k, dtype=jac.dtype), jac[0])
    zero_row = jac.clone()
    zero_row[0] = 0.0
    return {"duplicated": duplicated, "rank_one": rank_one, "zero_row": zero_row}


@pytest.mark.parametrize("case", ["duplicated", "rank_one", "zero_row"])
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", _gradient_names())
def test_degenerate_jacobians_give_finite_updates(name, k, case):
    method = _build(name, k)
    _, losses = _problem(k, seed=3)
    _seeded(method, 0)
    agg = method.aggregate(_degenerate(k)[case], losses)
    for t in (agg.update, agg.weights, agg.head_weights):
        assert torch.isfinite(t).all(), (name, case, t)


# -- loss-weighting methods -------------------------------------------------------------------


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", _loss_names())
def test_objective_is_a_finite_scalar_with_finite_gradients(name, k):
    method = _build(name, k)
    method.on_epoch_start(0)
    shared, heads, forward = _tiny(k)
    rep, losses = forward()
    _seeded(method, 0)
    ctx = StepContext(features=rep if method.uses_features else None)
    out = method.objective(losses, ctx)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.weights.shape == (k,) and torch.isfinite(out.weights).all()
    out.loss.backward()
    params = list(shared.parameters()) + list(heads.parameters()) + list(method.parameters())
    assert any(p.grad is not None for p in shared.parameters())
    for p in params:
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name
    if method.post_step_losses:
        with torch.no_grad():
            method.after_step(forward()[1] * 0.9)
        again = method.objective(forward()[1], StepContext(features=forward()[0]))
        assert torch.isfinite(again.loss) and torch.isfinite(again.weights).all()
