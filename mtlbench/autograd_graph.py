"""Walks of a backward (autograd) graph, shared by the Gramian-only path
(:mod:`mtlbench.gramian`) and its per-layer rules (:mod:`mtlbench.gramian_rules`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from torch.autograd.graph import Node


def children(node: Node) -> list[Node]:
    """The nodes ``node`` passes gradients to (its inputs' nodes), in order."""
    return [c for c, _ in node.next_functions if c is not None]


def numel(node: Node) -> int:
    """Elements of the cotangents ``node`` receives (its forward outputs)."""
    return sum(math.prod(m.shape) for m in node._input_metadata)  # type: ignore[attr-defined]


def post_order(
    root: Node,
    below: Callable[[Node], Iterable[Node]] = children,
    stop: Node | None = None,
) -> list[Node]:
    """Every node reached from ``root`` through ``below``, each after all the nodes it reaches
    (children first): an iterative depth-first search that expands a node when it is first
    popped, so that a node reached by two paths (a residual connection) still comes after
    everything below it. The last node ``below`` lists is visited first. ``stop`` is listed but
    not expanded."""
    post: list[Node] = []
    expanded: set[Node] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            post.append(node)
        elif node not in expanded:
            expanded.add(node)
            stack.append((node, True))
            if node is not stop:
                stack.extend((c, False) for c in below(node) if c not in expanded)
    return post
