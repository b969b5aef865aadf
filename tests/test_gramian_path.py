"""The Gramian-only engine path (``jacobian_mode="gramian"``): ``G = J J^T`` without ``J``, then
one backward pass of ``sum_k w_k l_k``. Every registered Gramian method must give the batched
path's gradients (shared parameters and heads) to 1e-6, under both head policies, on an MLP and
on a small CNN (where the path cuts the graph: :mod:`mtlbench.gramian`); every cut of the graph
and every chunk size must give ``J J^T``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtlbench.gradients import GradientEngine, gramian, gramian_root, jacobian
from mtlbench.gramian import MAX_PASSES, plan, separators
from mtlbench.method import METHODS, GramianWeighting, StepContext, create, names

K = 4


def gramian_methods() -> list[str]:
    return [n for n in names() if issubclass(METHODS.get(n), GramianWeighting)]


def tiny_model(kind: str = "mlp") -> tuple[nn.Module, nn.ModuleList]:
    """A float64 trunk and K heads: ``mlp`` (inputs of 5 features) or ``cnn`` (2 x 8 x 8 images;
    its first activation is large and its first layer small, so the Gramian path cuts below)."""
    torch.manual_seed(0)
    if kind == "mlp":
        encoder = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.Tanh())
    else:
        encoder = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1, bias=False),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 6, 3, padding=1),
            nn.Tanh(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
    heads = nn.ModuleList(nn.Linear(6, 1) for _ in range(K))
    return encoder.double(), heads.double()


def task_losses(encoder: nn.Module, heads: nn.ModuleList, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    shape = (16, 5) if isinstance(encoder[0], nn.Linear) else (16, 2, 8, 8)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    y = torch.randn(16, K, generator=g, dtype=torch.float64)
    z = encoder(x)
    out = torch.cat([h(z) for h in heads], dim=1)
    return ((out - y) ** 2).mean(0) + 0.1


def run(
    name: str,
    mode: str,
    head_grads: str,
    steps: int = 3,
    kind: str = "mlp",
    chunk: int | None = None,
) -> list[torch.Tensor]:
    """The gradients of all parameters after each of ``steps`` engine steps (the method keeps
    its state between steps, as in training)."""
    encoder, heads = tiny_model(kind)
    torch.manual_seed(1)
    method = create(name, K, feature_dim=6).double()
    engine = GradientEngine(
        list(encoder.parameters()),
        list(heads.parameters()),
        mode=mode,  # type: ignore[arg-type]
        head_grads=head_grads,  # type: ignore[arg-type]
        chunk_size=chunk,
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


@pytest.mark.parametrize("name", gramian_methods())
def test_gramian_path_equals_batched_on_a_cut_cnn(name: str) -> None:
    """The CNN's graph is cut (checked in ``test_plan_cuts_below_the_large_activations``); tasks
    below the cut in chunks of 3 (K = 4: two passes) and automatically."""
    expected = run(name, "batched", "weighted", kind="cnn")
    for chunk in (3, None):
        got = run(name, "gramian", "weighted", kind="cnn", chunk=chunk)
        for a, b in zip(got, expected, strict=True):
            assert float((a - b).norm() / b.norm()) <= 1e-6


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_every_cut_and_chunk_gives_j_jt(kind: str) -> None:
    encoder, heads = tiny_model(kind)
    losses = task_losses(encoder, heads, 0)
    params = list(encoder.parameters())
    jac = jacobian(losses, params, retain_graph=True)
    cuts = separators(losses, params)
    assert len(cuts) >= 3
    for cut in [None, *cuts]:
        for chunk in (1, 3, None):
            got = gramian(losses, params, retain_graph=True, chunk_size=chunk, cut=cut)
            torch.testing.assert_close(got, jac @ jac.T, rtol=1e-12, atol=1e-12)
    assert all(p.grad is None for p in params)  # nothing accumulated, hooks removed


def test_separators_split_the_parameters_in_order() -> None:
    """Each cut puts a prefix of the trunk's parameters (the last layers) above it, the rest
    below; a cut inside the graph of the first convolution leaves only its weight below."""
    encoder, heads = tiny_model("cnn")
    losses = task_losses(encoder, heads, 0)
    params = list(encoder.parameters())
    for cut in separators(losses, params):
        assert set(map(id, cut.above)) | set(map(id, cut.below)) == set(map(id, params))
        assert {id(p) for p in cut.below} == {id(p) for p in params[: len(cut.below)]}
    assert [len(c.below) for c in separators(losses, params)][-1] == 1


def test_a_weight_used_twice_is_never_split() -> None:
    """A layer applied twice: no separator lies between its two uses (each cut has both uses
    above it, or both below), and every cut gives ``J J^T``."""
    torch.manual_seed(0)
    shared, first = nn.Linear(6, 6).double(), nn.Linear(5, 6).double()
    x = torch.randn(16, 5, dtype=torch.float64)
    z = torch.tanh(shared(torch.tanh(shared(torch.tanh(first(x))))))
    losses = torch.stack([z[:, i].pow(2).mean() for i in range(K)])
    params = [*first.parameters(), *shared.parameters()]
    jac = jacobian(losses, params, retain_graph=True)
    cuts = separators(losses, params)
    assert cuts
    for cut in cuts:
        below = {id(p) for p in shared.parameters()} & {id(p) for p in cut.below}
        assert len(below) in (0, 2)  # its weight and bias (both used twice) on one side
        got = gramian(losses, params, retain_graph=True, chunk_size=3, cut=cut)
        torch.testing.assert_close(got, jac @ jac.T)


def test_plan_cuts_below_the_large_activations() -> None:
    encoder, heads = tiny_model("cnn")
    losses = task_losses(encoder, heads, 0)
    params = list(encoder.parameters())
    auto = plan(losses, params)
    assert auto.cut is not None and len(auto.cut.below) >= 1
    assert -(-K // auto.chunk) <= MAX_PASSES
    assert plan(losses, params, chunk_size=3).chunk == 3
    assert plan(losses, params, chunk_size=100).chunk == K
    with pytest.raises(ValueError, match="chunk_size"):
        gramian(losses, params, chunk_size=0)


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
    # A chunk size no longer sends Gramian methods to the batched Jacobian: it sets the tasks
    # per pass below the cut.
    assert GradientEngine(shared, head, mode="auto", chunk_size=2).uses_gramian_path(mgda)
    assert GradientEngine(shared, head, mode="gramian", chunk_size=2).uses_gramian_path(mgda)
    assert not GradientEngine(shared, head, mode="batched").uses_gramian_path(mgda)
    # Jacobian methods under "gramian" keep the batched Jacobian: same update as "batched".
    got, expected = run("db_mtl", "gramian", "weighted"), run("db_mtl", "batched", "weighted")
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)
