"""The QM9 network of Nash-MTL, FAMO and LDC-MTL (``Net`` in ``models.py`` of
OptMN-Lab/LDC-MTL@7c39465 and ``experiments/quantum_chemistry`` of Cranial-XIX/FAMO@0a6ad06,
after PyG's ``qm9_nn_conv.py`` example), without its heads.

``lin0`` Linear(11, 64) + ReLU; NNConv(64, 64) with edge network Linear(5, 128) - ReLU -
Linear(128, 64 * 64), mean aggregation, + ReLU, then a GRU(64, 64) step, three times with
shared weights; Set2Set(64, 3 steps) -> 128; Linear(128, 64) + ReLU = the shared representation
(``feature_dim`` 64). The benchmark adds 11 heads Linear(64, 1). The NNConv parameters live in a
real ``torch_geometric.nn.NNConv`` (same initialisation); the forward pass computes the per-edge
64 x 64 weight matrices once per batch and reuses them in the three iterations, where
``NNConv.forward`` would recompute them each time: the same function (the edge features do not
change between iterations; test_qm9 checks equality with ``NNConv.forward``) at a third of the
edge-network cost, which dominates on complete graphs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtlbench.datasets._qm9_graphs import EDGE_DIM, NUM_NODE_FEATURES


class QM9Encoder(nn.Module):
    """The reference ``Net`` without its heads: a batch of complete graphs -> ``(B, 64)``."""

    def __init__(self, dim: int = 64, steps: int = 3) -> None:
        super().__init__()
        from torch_geometric.nn import NNConv, Set2Set

        self.dim, self.steps = dim, steps
        self.lin0 = nn.Linear(NUM_NODE_FEATURES, dim)
        edge_net = nn.Sequential(nn.Linear(EDGE_DIM, 128), nn.ReLU(), nn.Linear(128, dim * dim))
        self.conv = NNConv(dim, dim, edge_net, aggr="mean")
        self.gru = nn.GRU(dim, dim)
        self.set2set = Set2Set(dim, processing_steps=3)
        self.lin1 = nn.Linear(2 * dim, dim)

    def message_passing(self, x: Tensor, edge_index: Tensor, weights: Tensor) -> Tensor:
        """``NNConv.forward`` (mean aggregation, root weight, bias) with the per-edge weight
        matrices ``weights`` (E x dim x dim) given."""
        src, dst = edge_index
        messages = torch.bmm(x[src].unsqueeze(1), weights).squeeze(1)
        total = x.new_zeros(x.shape[0], messages.shape[1]).index_add_(0, dst, messages)
        count = torch.bincount(dst, minlength=x.shape[0]).clamp_(min=1).to(x.dtype)
        return total / count.unsqueeze(1) + self.conv.lin(x) + self.conv.bias

    def forward(self, batch: Any) -> Tensor:
        out = F.relu(self.lin0(batch.x))
        h = out.unsqueeze(0)
        weights = self.conv.nn(batch.edge_attr).view(-1, self.dim, self.dim)
        for _ in range(self.steps):
            m = F.relu(self.message_passing(out, batch.edge_index, weights))
            out, h = self.gru(m.unsqueeze(0), h)
            out = out.squeeze(0)
        pooled = self.set2set(out, batch.batch, dim_size=int(batch.ptr.numel() - 1))
        return F.relu(self.lin1(pooled))
