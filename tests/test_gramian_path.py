"""The Gramian-only engine path (``jacobian_mode="gramian"``): ``G = J J^T`` without ``J``, then
one backward pass of ``sum_k w_k l_k``. Every registered Gramian method must give the batched
path's gradients (shared parameters and heads) to 1e-6, under both head policies, on an MLP and
on a small CNN (where the path cuts the graph: :mod:`mtlbench.gramian`); every cut of the graph
and every chunk size must give ``J J^T``."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mtlbench import gramian as gramian_module
from mtlbench.gradients import GradientEngine, gramian, gramian_root, jacobian
from mtlbench.gramian import MAX_PASSES, plan, separators
from mtlbench.gramian_rules import LayerRule, layer_rules
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


def test_residual_blocks_are_ordered_and_cut_at_their_inputs() -> None:
    """A residual block ``tanh(x + f(x))`` reaches the node of ``x`` by two paths. The order
    the separators are read on must be topological (every edge goes forward: a node visited by
    the long path first still comes after everything below it), so that each block's input is
    found as a separator; every cut gives ``J J^T``."""
    from mtlbench.gramian import _topological

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.f = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(x + self.f(x))

    torch.manual_seed(0)
    blocks = [Residual(), Residual()]
    encoder = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), *blocks, nn.Linear(8, 6)).double()
    inputs = {}
    for i, block in enumerate(blocks):
        block.register_forward_hook(lambda m, a, out, i=i: inputs.__setitem__(i, a[0]))
    x = torch.randn(5, 4, dtype=torch.float64)
    w = torch.randn(6, K, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    losses = ((encoder(x) @ w) ** 2).mean(0)
    params = list(encoder.parameters())
    leaves = {torch.autograd.graph.get_gradient_edge(p).node for p in params}
    order = _topological(losses.grad_fn, leaves)
    position = {n: i for i, n in enumerate(order)}
    for node in order:
        for child, _ in node.next_functions:
            assert child is None or child not in position or position[child] > position[node]
    cut_nodes = {c.edge.node for c in separators(losses, params)}
    assert all(inputs[i].grad_fn in cut_nodes for i in range(len(blocks)))
    jac = jacobian(losses, params, retain_graph=True)
    for cut in separators(losses, params):
        got = gramian(losses, params, retain_graph=True, chunk_size=3, cut=cut)
        torch.testing.assert_close(got, jac @ jac.T)


def test_plan_cuts_below_the_large_activations() -> None:
    encoder, heads = tiny_model("cnn")
    losses = task_losses(encoder, heads, 0)
    params = list(encoder.parameters())
    auto = plan(losses, params)
    assert auto.cut is not None and len(auto.cut.below) >= 1
    assert -(-K // auto.chunk) <= MAX_PASSES
    assert plan(losses, params, chunk_size=1).chunk == 1
    three = plan(losses, params, chunk_size=3)  # a chunk given is kept where a cut is taken
    assert three.cut is None or three.chunk == 3
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


def rule_cnn() -> tuple[nn.Module, torch.Tensor]:
    """A float64 CNN whose layers cover the per-layer rule's cases: a convolution fed by the
    data (with a bias, so that its node runs without the weight), stride 2 with padding,
    dilation, no bias, groups = 2 (falls back to the block), and two linear layers."""
    torch.manual_seed(0)
    encoder = nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.Tanh(),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2),
        nn.Tanh(),
        nn.Conv2d(8, 8, 3, padding=1, groups=2),
        nn.Tanh(),
        nn.Conv2d(8, 10, (3, 2), stride=(2, 1), padding=(1, 0), bias=False),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(10 * 2 * 3, 12),
        nn.Tanh(),
        nn.Linear(12, 6, bias=False),
        nn.Tanh(),
    ).double()
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    return encoder, x


def rule_losses(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    z = encoder(x)
    w = torch.randn(z.shape[1], K, generator=torch.Generator().manual_seed(3), dtype=z.dtype)
    return ((z @ w - 0.5) ** 2).mean(0)


@pytest.fixture
def every_rule(monkeypatch: pytest.MonkeyPatch) -> dict[int, int]:
    """The rule taken wherever it is sound (its cost model set to nothing); returns the number
    of pre-hook calls per weight, counted."""
    calls: dict[int, int] = {}
    accumulate = LayerRule.accumulate

    def counted(rule: LayerRule, delta: torch.Tensor, total: torch.Tensor) -> None:
        calls[id(rule.weight)] = calls.get(id(rule.weight), 0) + 1
        accumulate(rule, delta, total)

    monkeypatch.setattr(LayerRule, "cost", lambda rule, k: 0)
    monkeypatch.setattr(LayerRule, "accumulate", counted)
    return calls


def test_layer_rule_cases(every_rule: dict[int, int]) -> None:
    """Without a cut: every convolution with groups 1 and both linear layers take the rule,
    the first convolution too (its bias keeps its node running); groups = 2 does not, and
    without its bias the first convolution would not run: it keeps the block."""
    encoder, x = rule_cnn()
    losses = rule_losses(encoder, x)
    params = list(encoder.parameters())
    taken = layer_rules(losses, params, None, K)
    weights = [m.weight for m in encoder if isinstance(m, nn.Conv2d | nn.Linear)]
    grouped = encoder[7].weight
    assert {id(w) for w in weights if w is not grouped} == set(taken)
    assert {type(r.node).__name__ for r in taken.values()} == {
        "ConvolutionBackward0",
        "AddmmBackward0",
        "MmBackward0",
    }
    without_bias = list(encoder[1:])
    assert id(encoder[0].weight) not in layer_rules(
        rule_losses(
            nn.Sequential(nn.Conv2d(2, 6, 3, padding=1, bias=False).double(), *without_bias), x
        ),
        params,
        None,
        K,
    )


@pytest.mark.parametrize("chunk", [1, K])
def test_layer_rules_give_j_jt(every_rule: dict[int, int], chunk: int) -> None:
    """The rule against the explicit ``J J^T`` (float64, 1e-6 relative) without a cut, at every
    cut and with the automatic plan; the rule layers' weights are left out of the vmapped pass
    (no block reduced for them) and their pre-hooks ran once per pass."""
    encoder, x = rule_cnn()
    losses = rule_losses(encoder, x)
    params = list(encoder.parameters())
    jac = jacobian(losses, params, retain_graph=True)
    expected = jac @ jac.T
    reduced: list[set[int]] = []
    reduce_hooks = gramian_module._reduce_hooks

    def recorded(ps, k, total, level):  # type: ignore[no-untyped-def]
        reduced.append({id(p) for p in ps})
        return reduce_hooks(ps, k, total, level)

    cuts = separators(losses, params)
    assert len(cuts) >= 3
    engaged = 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gramian_module, "_reduce_hooks", recorded)
        for cut in [None, plan(losses, params, chunk).cut, *cuts]:
            above = params if cut is None else cut.above
            rules = layer_rules(losses, above, None if cut is None else cut.edge.node, K)
            every_rule.clear()
            got = gramian(losses, params, retain_graph=True, chunk_size=chunk, cut=cut)
            assert float((got - expected).norm() / expected.norm()) <= 1e-6
            # one pre-hook call per pass, which runs the rule on RULE_SLICES channel slices
            once = set(range(1, gramian_module.RULE_SLICES + 1))
            assert set(every_rule) == set(rules) and set(every_rule.values()) <= once
            assert not set(rules) & reduced[-1]  # no block reduced for a rule layer
            engaged += bool(rules)
    assert engaged >= 3
    assert all(p.grad is None for p in params)  # nothing accumulated, hooks removed


def test_whole_graph_rules_hold_above_every_cut(every_rule: dict[int, int]) -> None:
    """``plan`` finds the rules once on the whole graph and restricts them to each cut's upper
    part (one walk of the graph, not one per cut); that is sound only if every layer that
    qualifies on the whole graph also qualifies above each cut where it lies, as
    :func:`gramian` decides with the cut: checked on every separator of the rule CNN."""
    encoder, x = rule_cnn()
    losses = rule_losses(encoder, x)
    params = list(encoder.parameters())
    whole = layer_rules(losses, params, None, K)
    for cut in separators(losses, params):
        above = {id(p) for p in cut.above}
        restricted = {i for i in whole if i in above}
        assert restricted <= set(layer_rules(losses, cut.above, cut.edge.node, K))


def test_layer_rule_engages_on_its_own() -> None:
    """With the real cost model: the wide late convolution at a small batch takes the rule, the
    first (few weights, many rows) does not; the Gramian is ``J J^T``."""
    torch.manual_seed(0)
    encoder = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(4),
        nn.Conv2d(8, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1, bias=False),
        nn.Flatten(),
    ).double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    z = encoder(x)
    w = torch.randn(z.shape[1], 16, generator=torch.Generator().manual_seed(1), dtype=z.dtype)
    losses = (z @ w).pow(2).mean(0)
    params = list(encoder.parameters())
    taken = layer_rules(losses, params, None, 16)
    assert id(encoder[5].weight) in taken and id(encoder[0].weight) not in taken
    jac = jacobian(losses, params, retain_graph=True)
    for cut in (None, "auto"):
        got = gramian(losses, params, retain_graph=True, cut=cut)  # type: ignore[arg-type]
        torch.testing.assert_close(got, jac @ jac.T, rtol=1e-10, atol=1e-12)


def test_engine_with_layer_rules_equals_batched(every_rule: dict[int, int]) -> None:
    """The engine's Gramian path on the rule CNN gives the batched path's MGDA update."""
    encoder, x = rule_cnn()
    grads = []
    for mode in ("batched", "gramian"):
        model = copy.deepcopy(encoder)
        heads = list(model[-2].parameters())
        shared = [p for p in model.parameters() if all(p is not h for h in heads)]
        method = create("mgda", K).double()
        engine = GradientEngine(shared, heads, mode=mode)  # type: ignore[arg-type]
        engine.backward(method, rule_losses(model, x), StepContext(step=0))
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))  # type: ignore[union-attr]
    assert every_rule
    assert float((grads[1] - grads[0]).norm() / grads[0].norm()) <= 1e-6


def test_layer_rules_skip_shared_weights_and_free_the_graph(every_rule: dict[int, int]) -> None:
    """A convolution applied twice (its weight has two uses) keeps the block, the other layers
    take the rule; and the rule's saved inputs are read before a graph that is not retained is
    freed."""
    torch.manual_seed(0)
    first, shared = nn.Conv2d(2, 4, 3, padding=1).double(), nn.Conv2d(4, 4, 3, padding=1).double()
    last = nn.Linear(4 * 4 * 4, 6).double()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    params = [*first.parameters(), *shared.parameters(), *last.parameters()]

    def losses_() -> torch.Tensor:
        z = torch.tanh(shared(torch.tanh(shared(torch.tanh(first(x))))))
        return torch.tanh(last(z.flatten(1)))[:, :K].pow(2).mean(0)

    losses = losses_()
    jac = jacobian(losses, params, retain_graph=True)
    taken = layer_rules(losses, params, None, K)
    assert id(shared.weight) not in taken and {id(first.weight), id(last.weight)} <= set(taken)
    got = gramian(losses_(), params, cut=None)  # retain_graph=False
    torch.testing.assert_close(got, jac @ jac.T, rtol=1e-10, atol=1e-12)
    assert set(every_rule) == set(taken)


def test_the_reduce_hook_works_on_another_thread() -> None:
    """On CUDA the autograd engine runs the Gramian's hooks on its device thread, whose legacy
    vmap nesting is 0: a level read there left the blocks batched ("Batching rule not implemented
    for aten::alias", benchmarks/gpu_check.py on an H200, 2026-12-04). The hook takes the level
    from the caller, so that it gives ``J J^T`` on any thread."""
    import threading

    k = 3
    torch.manual_seed(0)
    block = torch.randn(k, 4, 5, dtype=torch.float64)
    total = torch.zeros(k, k, dtype=torch.float64)
    hook = gramian_module._reduce_hook(k, total, gramian_module._next_vmap_level())
    errors: list[BaseException] = []

    def on_another_thread(batched: torch.Tensor) -> torch.Tensor:
        def call() -> None:
            try:
                hook(batched)
            except BaseException as error:  # noqa: BLE001 (re-raised on the test's thread)
                errors.append(error)

        worker = threading.Thread(target=call)
        worker.start()
        worker.join()
        return batched

    torch._vmap_internals._vmap(on_another_thread, 0, 0)(block)
    assert not errors, errors
    flat = block.reshape(k, -1)
    torch.testing.assert_close(total, flat @ flat.T)
