"""Per-layer Gramian rules: a layer's K x K Gramian from its inputs and output cotangents.

For a layer whose output is linear in its weight, ``y[r] = W u[r]`` for rows ``r`` (a linear
layer: the samples; a 2-d convolution: the (sample, position) pairs, ``u[r]`` the unfolded input
patch), task ``k``'s weight gradient is ``J_k = delta_k^T U`` with ``U`` the R x F matrix of the
rows ``u[r]`` and ``delta_k`` the R x C_out output cotangent. Hence, with ``M = U U^T`` (R x R),

    <J_a, J_b> = < delta_a , M delta_b >     (Frobenius, over rows x C_out),

the per-layer Gramian rule of TorchJD's ``autogram`` engine (Quinton & Rey, "Jacobian Descent
for Multi-Objective Optimization", 2024, section 6). It needs ``M`` and a few task chunks of
cotangents instead of the K x P_p block ``J``: far less memory (and arithmetic) where R is small
against the layer's weights, as in the late layers of a CNN at a small batch.

:func:`layer_rules` finds the layers of a backward graph that take the rule: 2-d convolutions
(groups 1, not transposed) and matrix products (a linear layer on a 2-d input), whose weight is a
parameter used by that layer only, whose autograd node is sure to run without the weight (it has
another input that is still needed) and where the rule is cheaper than the block. The caller
takes those weights out of the backward pass's inputs (autograd then skips their gradients) and
hooks :meth:`LayerRule.accumulate` on the node (:func:`mtlbench.gramian.gramian`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.graph import Node, get_gradient_edge

from mtlbench.autograd_graph import children, post_order

# The rule's cotangents go through M this many chunks of tasks at a time: a chunk's cotangents
# are copied twice (into rows x (tasks x C_out) for the product with M, and back).
RULE_PASSES = 4
RULE_COPIES = 2
# The cost model's copies of a parameter's K x P_p gradient block in a vmapped backward: the
# legacy vmap's fallback for the convolution's backward computes the tasks one by one and stacks
# them (K results, then their stack; docs/performance.md, "Memory").
BLOCK_COPIES = 2


@dataclass(frozen=True)
class LayerRule:
    """A layer whose Gramian is taken by the rule: its autograd ``node`` (whose cotangent a
    pre-hook receives), its ``weight``, ``rows`` R, ``features`` F, the ``outputs`` C_out and
    the convolution's geometry (``kernel`` None for a matrix product)."""

    node: Node
    weight: Tensor
    rows: int
    features: int
    outputs: int
    kernel: tuple[int, ...] | None = None
    stride: tuple[int, ...] = (1, 1)
    padding: tuple[int, ...] = (0, 0)
    dilation: tuple[int, ...] = (1, 1)

    def cost(self, k: int) -> int:
        """The rule's extra peak in elements: ``M``, the unfolded rows and a chunk's copies."""
        chunk = math.ceil(k / RULE_PASSES)
        return (
            self.rows**2
            + self.rows * self.features
            + RULE_COPIES * chunk * self.rows * self.outputs
        )

    def block_cost(self, k: int) -> int:
        return BLOCK_COPIES * k * self.weight.numel()

    def _patches(self) -> Tensor:
        """``U``: R x F, the rows the weight multiplies (from the node's saved input)."""
        if self.kernel is None:
            x = getattr(self.node, "_saved_mat1", None)
            return self.node._saved_self if x is None else x  # type: ignore[attr-defined]
        x = self.node._saved_input  # type: ignore[attr-defined]
        u = torch.nn.functional.unfold(x, self.kernel, self.dilation, self.padding, self.stride)
        return u.transpose(1, 2).reshape(self.rows, self.features)

    def accumulate(self, delta: Tensor, total: Tensor) -> None:
        """Add ``<delta_a, M delta_b>`` for all task pairs into ``total`` (K x K), ``delta`` the
        K output cotangents (K x B x C_out x ... : rows are (sample, position))."""
        k = delta.shape[0]
        u = self._patches().to(delta.dtype)
        m = u @ u.T
        del u
        b, c = delta.shape[1], delta.shape[2]
        d = delta.reshape(k, b, c, -1)  # K x B x C_out x L: rows (b, l)
        flat = d.reshape(k, -1)
        step = math.ceil(k / RULE_PASSES)
        for start in range(0, k, step):
            part = d[start : start + step]
            n = part.shape[0]
            rows = part.permute(1, 3, 0, 2).reshape(self.rows, n * c)  # (b, l) x (task, C_out)
            md = (m @ rows).view(b, -1, n, c).permute(2, 0, 3, 1).reshape(n, -1)
            del rows
            total[:, start : start + n].addmm_(flat, md.T)


def _graph(root: Node, stop: Node | None) -> tuple[list[Node], dict[Node, int]]:
    """The nodes from ``root`` in post-order (children first), not below ``stop``, and the
    number of edges into each."""
    post = post_order(root, stop=stop)
    edges: dict[Node, int] = {}
    for node in post:
        if node is not stop:
            for child in children(node):
                edges[child] = edges.get(child, 0) + 1
    return post, edges


def _weight_leaf(edge: Node | None, edges: dict[Node, int]) -> Node | None:
    """The ``AccumulateGrad`` of a matrix product's weight operand: directly, or through one
    transpose (``x @ W.T``, a linear layer), each used by this product only."""
    if edge is not None and type(edge).__name__ == "TBackward0" and edges.get(edge) == 1:
        edge = edge.next_functions[0][0]
    if edge is not None and type(edge).__name__ == "AccumulateGrad" and edges.get(edge) == 1:
        return edge
    return None


def _candidate(
    node: Node, leaves: dict[Node, Tensor], edges: dict[Node, int]
) -> tuple[LayerRule, list[Node | None]] | None:
    """The rule of ``node`` and its other inputs' nodes, or None where it does not apply."""
    name = type(node).__name__
    nexts = [c for c, _ in node.next_functions]
    if name == "ConvolutionBackward0":
        leaf = nexts[1]
        if leaf not in leaves or edges.get(leaf) != 1:
            return None
        weight = leaves[leaf]
        x = node._saved_input  # type: ignore[attr-defined]
        if (
            node._saved_groups != 1  # type: ignore[attr-defined]
            or node._saved_transposed  # type: ignore[attr-defined]
            or x.dim() != 4
            or weight.dim() != 4
        ):
            return None
        out = node._input_metadata[0].shape  # type: ignore[attr-defined]
        rule = LayerRule(
            node,
            weight,
            rows=out[0] * math.prod(out[2:]),
            features=weight.numel() // weight.shape[0],
            outputs=weight.shape[0],
            kernel=tuple(weight.shape[2:]),
            stride=tuple(node._saved_stride),  # type: ignore[attr-defined]
            padding=tuple(node._saved_padding),  # type: ignore[attr-defined]
            dilation=tuple(node._saved_dilation),  # type: ignore[attr-defined]
        )
        return rule, [nexts[0], nexts[2]]
    if name == "AddmmBackward0":
        if node._saved_alpha != 1 or node._saved_beta != 1:  # type: ignore[attr-defined]
            return None
        x, others, weight_edge = node._saved_mat1, [nexts[0], nexts[1]], nexts[2]  # type: ignore[attr-defined]
    elif name == "MmBackward0":
        x, others, weight_edge = node._saved_self, [nexts[0]], nexts[1]  # type: ignore[attr-defined]
    else:
        return None
    leaf = _weight_leaf(weight_edge, edges)
    if leaf not in leaves or x is None or x.dim() != 2:
        return None
    out = node._input_metadata[0].shape  # type: ignore[attr-defined]
    rule = LayerRule(node, leaves[leaf], rows=out[0], features=x.shape[1], outputs=out[1])
    return rule, others


def layer_rules(
    losses: Tensor, params: Sequence[Tensor], stop: Node | None, k: int
) -> dict[int, LayerRule]:
    """The layers of the graph of ``losses`` whose Gramian the rule takes when ``params`` are
    the inputs of the K-task backward pass (stopped at the node ``stop``, whose cotangent is
    also an input), keyed by ``id`` of their weight. A layer qualifies when its weight is used
    by it alone, another of its inputs is needed by the pass (so that its node runs without the
    weight: decided on the graph bottom-up, the other layers' weights taken out too), and the
    rule costs less memory than the block. Layers whose saved attributes this torch does not
    expose are left to the block."""
    if losses.grad_fn is None:
        return {}
    leaves = {get_gradient_edge(p).node: p for p in params if p.requires_grad}
    post, edges = _graph(losses.grad_fn, stop)
    needed: dict[Node, bool] = {}
    rules: dict[int, LayerRule] = {}
    for node in post:  # children first
        needed[node] = (
            node is stop
            or node in leaves
            or any(needed.get(c, False) for c, _ in node.next_functions if c is not None)
        )
        if node is stop:
            continue
        try:
            found = _candidate(node, leaves, edges)
        except (AttributeError, RuntimeError):  # attribute missing, or saved tensor freed
            continue
        if found is None:
            continue
        rule, others = found
        # A rule layer's node still runs (needed) since another input is; a block layer's runs
        # since its weight is an input: ``needed`` is the same either way.
        if any(needed.get(c, False) for c in others if c is not None) and rule.cost(
            k
        ) < rule.block_cost(k):
            rules[id(rule.weight)] = rule
    return rules
