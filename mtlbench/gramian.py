"""The Gramian ``G = J J^T`` of K task losses without the K x P Jacobian ``J``, in bounded memory.

A vmapped backward pass over K tasks (``is_grads_batched``) holds K cotangents of every
activation it goes through; on a CNN the early layers have the largest activations and the
fewest parameters, the late layers the reverse. :func:`gramian` therefore cuts the backward graph
at one tensor ``h`` that every path from the lower parameters to the losses goes through (a
*separator*, found in the autograd graph, :func:`separators`), and splits ``G`` into

    G = sum_{p above h} J_p J_p^T + J_below J_below^T,

* **above** ``h``: one vmapped pass of the K unit cotangents, stopped at ``h``; a hook on every
  parameter reduces its K x P_p block ``J_p`` to ``J_p J_p^T`` as soon as autograd produces it
  and drops it (the Gramian accumulation of TorchJD's ``autogram`` engine: Quinton & Rey,
  "Jacobian Descent for Multi-Objective Optimization", 2024, section 6); 2-d convolutions and
  linear layers take that paper's per-layer rule instead where it is cheaper, their Gramian
  ``<delta_a, (U U^T) delta_b>`` from their inputs and output cotangents, without the block
  (:mod:`mtlbench.gramian_rules`); the pass returns the K cotangents ``dL_k / dh``;
* **below** ``h``: those cotangents are back-propagated ``c`` tasks per vmapped pass, and the
  rows of the lower parameters' Jacobian ``J_below`` (K x P_below, small: the early layers have
  few parameters) are kept, so that the cross terms between tasks of different passes are in
  ``J_below J_below^T``.

The backward work is that of one batched pass (the part above ``h`` runs once for all K tasks,
the part below once per task in chunks); the extra memory is bounded by the larger of the two
phases instead of K cotangents of the largest activation. The cut and ``c`` come from a cost
model on the graph's shapes (:func:`plan`); without a useful separator (or where the autograd
graph's shape metadata are unavailable) the whole pass runs above, as one reduced vmapped pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.graph import GradientEdge, Node, get_gradient_edge

from mtlbench.autograd_graph import children, numel, post_order
from mtlbench.gramian_rules import BLOCK_COPIES, LayerRule, layer_rules
from mtlbench.precision import add_gramian64

# The cost model's copies of what a vmapped backward holds at once, from the CelebA trunk's
# profile (docs/performance.md, "Memory"): a few K-batched tensors of a layer's activation size
# (the incoming cotangent, the op's result, a batching rule's temporaries), and each parameter's
# K x P_p block ``BLOCK_COPIES`` times (:mod:`mtlbench.gramian_rules`).
ACTIVATION_COPIES = 3
# Below the cut, per task: the early blocks' backward (convolution, batch norm, ReLU, max pool at
# full resolution) held about 100 MB per task on the CelebA trunk at batch 16, six times its
# largest activation (16.8 MB; docs/performance.md, "Memory: the Gramian-only path").
BELOW_ACTIVATION_COPIES = 6
# Without ``chunk_size``, at most this many vmapped passes below the cut on an accelerator: one
# pass per task would forfeit the batched pass's parallelism there. On the CPU the batched pass
# is no faster than K single ones (docs/performance.md, "Why the batched Jacobian is not faster
# on this CPU"), so the plan takes the chunk of the smallest peak, down to one task per pass.
MAX_PASSES = 8
# The rule layers' cotangents are cast to float64 (the precision policy) in this many slices of
# output channels, so that the cast copy is half the float32 cotangents' bytes.
RULE_SLICES = 4


@dataclass(frozen=True)
class Cut:
    """A separator ``h`` of the backward graph: ``edge`` is its gradient edge (the autograd node
    that consumes ``dL/dh``), ``above`` the parameters reduced in the K-task pass, ``below`` those
    whose Jacobian rows are taken ``chunk`` tasks at a time from ``dL/dh``."""

    edge: GradientEdge
    size: int
    above: tuple[Tensor, ...]
    below: tuple[Tensor, ...]
    above_activation: int
    below_activation: int


@dataclass(frozen=True)
class Plan:
    """How :func:`gramian` computes ``G``: the cut (None: one reduced pass over all K tasks),
    the tasks per vmapped pass below it and the layers above it that take the per-layer rule;
    ``cost`` is the cost model's extra peak, in elements."""

    cut: Cut | None
    chunk: int
    cost: int
    rules: tuple[LayerRule, ...] = ()


def _next_vmap_level() -> int:
    """The level of the next legacy ``vmap`` opened on this thread (the one ``is_grads_batched``
    runs). Taken before the backward pass and handed to the hooks: on CUDA the engine runs them
    on its device thread, whose vmap nesting is 0 whatever the caller's (a level read there
    left the gradients batched: "Batching rule not implemented for aten::alias", found by
    benchmarks/gpu_check.py on an H200, 2026-12-04)."""
    level = torch._C._vmapmode_increment_nesting()
    torch._C._vmapmode_decrement_nesting()
    return level


def _depths(root: Node, leaves: set[Node]) -> dict[Node, int]:
    """For every node from ``root`` that reaches one of ``leaves``: the length of its longest
    path to one; nodes that reach none are left out."""
    depth: dict[Node, int] = {}
    for node in post_order(root):
        below = [depth[c] for c in children(node) if c in depth]
        if node in leaves or below:
            depth[node] = 1 + max(below, default=-1)
    return depth


def _topological(root: Node, leaves: set[Node]) -> list[Node]:
    """The nodes from ``root`` that reach one of ``leaves`` (the parameters' gradient
    accumulators), parents before children: the reverse post-order of a depth-first search that
    visits the deepest child first, so that short side branches (a weight's transpose and
    accumulator) follow their parent and the main path comes after them."""
    depth = _depths(root, leaves)
    if root not in depth:
        return []

    def deepest_last(node: Node) -> list[Node]:
        return sorted((c for c in children(node) if c in depth), key=depth.__getitem__)

    return post_order(root, deepest_last)[::-1]


def separators(losses: Tensor, params: Sequence[Tensor]) -> list[Cut]:
    """Every tensor ``h`` of the graph of ``losses`` that separates the parameters: each path
    from a parameter below ``h`` to the losses goes through ``h``, no parameter above it is
    reached from below. Found on one topological order: node ``n`` at position ``i`` is a
    separator when every edge from the first ``i`` nodes ends at position ``i`` or before."""
    if losses.grad_fn is None:
        return []
    leaves = {get_gradient_edge(p).node: p for p in params if p.requires_grad}
    return _separators(_topological(losses.grad_fn, set(leaves)), leaves)


def _separators(order: list[Node], leaves: dict[Node, Tensor]) -> list[Cut]:
    """:func:`separators` on the topological ``order`` of the graph."""
    position = {n: i for i, n in enumerate(order)}
    sizes = [0 if n in leaves else numel(n) for n in order]
    cuts = []
    reach = 0  # furthest position an edge from the nodes so far ends at
    for i, node in enumerate(order):
        if 0 < i and reach <= i and node not in leaves and len(node._input_metadata) == 1:  # type: ignore[attr-defined]
            cuts.append(
                Cut(
                    GradientEdge(node, 0),
                    sizes[i],
                    tuple(leaves[n] for n in order[:i] if n in leaves),
                    tuple(leaves[n] for n in order[i:] if n in leaves),
                    max(sizes[: i + 1]),
                    max(sizes[i:]),
                )
            )
        for child in children(node):
            if child in position:
                reach = max(reach, position[child])
    return cuts


def _phase_cost(
    k: int,
    activation: int,
    params: Sequence[Tensor],
    keep_rows: bool,
    rules: dict[int, LayerRule] | None = None,
) -> int:
    """The cost model's peak of a vmapped pass over ``k`` tasks: ``ACTIVATION_COPIES``
    cotangents of its largest activation (``BELOW_ACTIVATION_COPIES`` below the cut, where the
    rows are kept), plus ``BLOCK_COPIES`` of its gradient blocks (all rows when they are kept,
    else the largest block while its Gramian is taken, or a rule layer's own peak,
    :meth:`~mtlbench.gramian_rules.LayerRule.cost`, where that is larger)."""
    rules = rules or {}
    sizes = [p.numel() for p in params if id(p) not in rules] or [0]
    if keep_rows:
        return k * (BELOW_ACTIVATION_COPIES * activation + BLOCK_COPIES * sum(sizes))
    layers = max((r.cost(k) for r in rules.values()), default=0)
    return k * ACTIVATION_COPIES * activation + max(k * BLOCK_COPIES * max(sizes), layers)


def plan(losses: Tensor, params: Sequence[Tensor], chunk_size: int | None = None) -> Plan:
    """The cut and chunk with the smallest modelled extra peak (elements). For a cut ``h``:

        max(phase above, K |h| + K P_below + phase below),

    phase above = K (3 A_above + 2 max_p P_p), phase below = c (6 A_below + 2 P_below), with
    ``A`` the largest activation on each side; above the cut, the layers that take the per-layer
    rule (:func:`~mtlbench.gramian_rules.layer_rules`) count their rule's peak instead of
    ``2 K P_p``. ``c`` is ``chunk_size`` when given, else the largest number of tasks whose
    phase below stays within the phase above's peak, at least 1 and, off the CPU, at least
    ``ceil(K / MAX_PASSES)``. The alternative without a cut is one pass: K (3 A + 2 max_p P_p),
    rules likewise."""
    k = losses.shape[0]
    params = [p for p in params if p.requires_grad]
    try:
        leaves = {get_gradient_edge(p).node: p for p in params}
        order = _topological(losses.grad_fn, set(leaves))
        cuts = _separators(order, leaves)
        everything = max((numel(n) for n in order if n not in leaves), default=0)
        rules = layer_rules(losses, params, None, k)
    except (AttributeError, TypeError):  # no shape metadata in this torch: one pass
        return Plan(None, k, 0)
    best = Plan(
        None,
        k,
        _phase_cost(k, everything, params, keep_rows=False, rules=rules),
        tuple(rules.values()),
    )
    fewest = 1 if losses.device.type == "cpu" else math.ceil(k / MAX_PASSES)
    for cut in cuts:
        # The rules found on the whole graph, restricted to the layers above this cut: one walk
        # of the graph, not one per cut (quadratic in depth). A layer that qualifies on the whole
        # graph also qualifies above any cut (its other input reaches the cut), so the plan's
        # rules are sound for the cut it chooses; :func:`gramian` takes them as they are.
        ids = {id(p) for p in cut.above}
        above_rules = {i: r for i, r in rules.items() if i in ids}
        above = _phase_cost(k, cut.above_activation, cut.above, keep_rows=False, rules=above_rules)
        held = k * (cut.size + sum(p.numel() for p in cut.below))
        per_task = _phase_cost(1, cut.below_activation, cut.below, keep_rows=True)
        if chunk_size is not None:
            chunk = min(chunk_size, k)
        else:
            fits = (above - held) // max(per_task, 1)
            chunk = min(k, max(fits, fewest))
        cost = max(above, held + chunk * per_task)
        if cost < best.cost:
            best = Plan(cut, chunk, cost, tuple(above_rules.values()))
    return best


def _reduce_hook(k: int, total: Tensor, level: int) -> Callable[[Tensor], Tensor]:
    """A hook that adds a parameter's K x P_p gradient block (batched at vmap ``level``) into
    ``total``'s Gramian and hands autograd a stride-0 zero in its place, so that the block is
    freed at once."""

    def reduce(grad: Tensor) -> Tensor:
        block = torch._remove_batch_dim(grad, level, k, 0)
        if block.is_contiguous():
            add_gramian64(block.reshape(k, -1), total)
        else:  # in eight slices: a reshape would copy the whole block at once
            for part in block.split(max(1, block.shape[1] // 8), dim=1):
                add_gramian64(part.reshape(k, -1), total)
        return grad.reshape(-1)[:1].mul(0).expand(grad.shape)

    return reduce


def _reduce_hooks(params: Sequence[Tensor], k: int, total: Tensor, level: int) -> list:
    """:func:`_reduce_hook` registered on each of ``params``."""
    reduce = _reduce_hook(k, total, level)
    return [p.register_hook(reduce) for p in params]


def _rule_hooks(rules: Sequence[LayerRule], k: int, total: Tensor, level: int) -> list:
    """Pre-hooks on the rule layers' nodes that add ``<delta_a, M delta_b>`` into ``total``
    from the K output cotangents (:mod:`mtlbench.gramian_rules`); the cotangents pass on
    unchanged.

    Under the precision policy the rule runs in float64 on the cotangents cast to float64,
    :data:`RULE_SLICES` slices of output channels at a time: the sum over channels is additive,
    so each slice's ``<delta_a, M delta_b>`` adds into ``total``, and the float64 copy is half the
    float32 cotangents' bytes instead of twice (``M`` is recomputed per slice)."""

    def hook(rule: LayerRule):
        def accumulate(grads: tuple[Tensor | None, ...]) -> None:
            if grads[0] is not None:
                delta = torch._remove_batch_dim(grads[0], level, k, 0)
                step = max(1, math.ceil(delta.shape[2] / RULE_SLICES))
                for start in range(0, delta.shape[2], step):
                    rule.accumulate(delta[:, :, start : start + step].to(total.dtype), total)

        return accumulate

    return [r.node.register_prehook(hook(r)) for r in rules]


def gramian(
    losses: Tensor,
    params: Sequence[Tensor],
    retain_graph: bool = False,
    chunk_size: int | None = None,
    cut: Cut | None | str = "auto",
) -> Tensor:
    """The K x K Gramian ``G = J J^T`` of ``losses`` (K,) with respect to ``params``, without the
    K x P Jacobian ``J`` (module docstring). ``cut``: ``"auto"`` (:func:`plan`), ``None`` (one
    reduced pass over everything) or one of :func:`separators`; ``chunk_size``: tasks per
    vmapped pass below the cut (when None: chosen by :func:`plan` under ``"auto"``, all K in one
    pass below a given cut). The arithmetic is that of ``J J^T``, summed in another order: equal
    to the batched Gramian up to floating-point rounding. ``G`` is float64 whatever the losses'
    dtype: every block's products are accumulated in float64 (:mod:`mtlbench.precision`)."""
    k = losses.shape[0]
    params = [p for p in params if p.requires_grad]
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of tasks, got {chunk_size}")
    if cut == "auto":  # the plan's cut, chunk and rules: one analysis of the graph
        chosen = plan(losses, params, chunk_size)
        cut, chunk = chosen.cut, chosen.chunk
        rules = {id(r.weight): r for r in chosen.rules}
    elif isinstance(cut, str):
        raise ValueError(f"cut must be 'auto', None or a Cut, got {cut!r}")
    else:
        chunk = k if chunk_size is None else min(chunk_size, k)
        try:
            stop = None if cut is None else cut.edge.node
            rules = layer_rules(losses, params if cut is None else cut.above, stop, k)
        except (AttributeError, TypeError):  # no shape metadata in this torch: blocks only
            rules = {}
    above = params if cut is None else list(cut.above)
    # Accumulated in float64 whatever the losses' dtype (mtlbench.precision).
    total = torch.zeros(k, k, dtype=torch.float64, device=losses.device)
    blocks = [p for p in above if id(p) not in rules]
    eye = torch.eye(k, device=losses.device, dtype=losses.dtype)
    level = _next_vmap_level()
    handles = _reduce_hooks(blocks, k, total, level)
    handles += _rule_hooks(list(rules.values()), k, total, level)
    try:
        inputs: list[Tensor | GradientEdge] = [*blocks, *([] if cut is None else [cut.edge])]
        grads = torch.autograd.grad(
            losses,
            inputs,  # type: ignore[arg-type]
            grad_outputs=eye,
            retain_graph=retain_graph or cut is not None,
            is_grads_batched=True,
            allow_unused=True,
        )
    finally:
        for h in handles:
            h.remove()
    if cut is not None and cut.below:
        _below_gramian(cut, grads[-1], chunk, retain_graph, total)
    return total


def _below_gramian(
    cut: Cut, cotangent: Tensor, chunk: int, retain_graph: bool, total: Tensor
) -> None:
    """Add ``J_below J_below^T`` to ``total``: the rows of ``J_below`` from the K cotangents at
    the cut, ``chunk`` tasks per vmapped pass."""
    k = cotangent.shape[0]
    below = list(cut.below)
    dtype = cotangent.dtype
    rows = torch.empty(k, sum(p.numel() for p in below), dtype=dtype, device=total.device)
    for start in range(0, k, chunk):
        stop = min(start + chunk, k)
        grads = torch.autograd.grad(
            [cut.edge],  # type: ignore[list-item]
            below,
            grad_outputs=[cotangent[start:stop]],
            retain_graph=retain_graph or stop < k,
            is_grads_batched=True,
            allow_unused=True,
        )
        parts = [
            torch.zeros(stop - start, p.numel(), dtype=dtype, device=total.device)
            if g is None
            else g.reshape(stop - start, -1)
            for g, p in zip(grads, below, strict=True)
        ]
        torch.cat(parts, dim=1, out=rows[start:stop])
    add_gramian64(rows, total)
