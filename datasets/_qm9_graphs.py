"""QM9's molecules as graphs: the complete graphs of the protocol, and the store that holds
every molecule in flat tensors and assembles batches by index arithmetic.

**Graphs.** The complete graph of each molecule (all ordered pairs of distinct atoms), the
bond one-hot (single / double / triple / aromatic) kept on bonded pairs and zeros elsewhere,
and the Euclidean distance (Angstrom, not normalised) appended: edge features of dimension 5,
as the reference's ``Complete()`` + ``T.Distance(norm=False)`` (``Complete`` is gone from
PyG 2.8.1; :func:`complete_edges` is this module's own, vectorised over a batch, and runs when
a batch is assembled, so no complete graph is stored). ``graph="bonds"`` keeps the bonds only,
with the same 5 features.

**PyG's storage.** :meth:`GraphStore.from_pyg` reads the collated storage of an
``InMemoryDataset`` (``_data`` and ``slices``: one tensor per attribute for all molecules, and
where each molecule starts), which PyG offers no public accessor for: the public path, one
``dataset[i]`` per molecule and ``Batch.from_data_list``, took 13 s for 20,000 molecules here
(about 90 s for QM9, in every trial process) against 1 ms. The layout is that of
``InMemoryDataset.collate`` in torch-geometric 2.5 to 2.8; ``pyproject.toml`` pins that range
and ``tests/test_qm9.py::test_pyg_storage_matches_the_public_api`` fails if it changes.

Sources (read, not copied): the ``qm9_nn_conv.py`` example and
``torch_geometric/data/in_memory_dataset.py`` of PyTorch Geometric 2.8.1.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from mtlbench.datasets._qm9_targets import TARGET_INDEX

NUM_NODE_FEATURES = 11  # one-hot H/C/N/O/F, atomic number, aromatic, sp/sp2/sp3, hydrogens
EDGE_DIM = 5  # bond one-hot (4) + distance
GraphKind = Literal["complete", "bonds"]


def complete_edges(
    ptr: Tensor, edge_index: Tensor, edge_attr: Tensor, pos: Tensor
) -> tuple[Tensor, Tensor]:
    """The complete graphs of a batch: all ordered pairs ``(i, j)``, ``i != j``, within each
    graph (graph ``g`` owns nodes ``ptr[g]:ptr[g+1]``), row-major within a graph. Edge features:
    the bond attributes of ``edge_index`` on bonded pairs, zeros elsewhere, then the Euclidean
    distance ``|pos[i] - pos[j]|``. Returns ``(edge_index 2 x E, edge_attr E x (D + 1))``."""
    sizes = ptr[1:] - ptr[:-1]
    squares = sizes * sizes
    graph = torch.repeat_interleave(torch.arange(len(sizes), device=ptr.device), squares)
    first = torch.cumsum(squares, 0) - squares
    local = torch.arange(int(squares.sum()), device=ptr.device) - first[graph]
    n = sizes[graph]
    row = local // n + ptr[graph]
    col = local % n + ptr[graph]
    keep = row != col
    row, col = row[keep], col[keep]
    # Keys row * N + col increase along the list, so bonds find their place by binary search.
    total = int(ptr[-1])
    keys = row * total + col
    bond_keys = edge_index[0] * total + edge_index[1]
    where = torch.searchsorted(keys, bond_keys)
    if len(bond_keys) and not torch.equal(keys[where.clamp(max=len(keys) - 1)], bond_keys):
        raise ValueError("edge_index has self loops or edges between graphs")
    attr = edge_attr.new_zeros(len(keys), edge_attr.shape[1])
    attr[where] = edge_attr
    distance = (pos[row] - pos[col]).norm(dim=-1, keepdim=True).to(attr.dtype)
    return torch.stack([row, col]), torch.cat([attr, distance], dim=1)


def complete_graph(data: Any) -> Any:
    """A copy of one PyG graph (``Data``) with the complete edges of :func:`complete_edges`."""
    out = copy.copy(data)
    ptr = torch.tensor([0, data.num_nodes], device=data.x.device)
    out.edge_index, out.edge_attr = complete_edges(ptr, data.edge_index, data.edge_attr, data.pos)
    return out


@dataclass(frozen=True)
class GraphStore:
    """The molecules' tensors concatenated (PyG's collated storage): graph ``g`` owns nodes
    ``node_ptr[g]:node_ptr[g+1]`` and bonds ``edge_ptr[g]:edge_ptr[g+1]`` (node indices local
    to the graph); ``y`` is ``G x 11``, the selected targets in PyG's units."""

    x: Tensor
    pos: Tensor
    edge_index: Tensor
    edge_attr: Tensor
    y: Tensor
    node_ptr: Tensor
    edge_ptr: Tensor

    @classmethod
    def from_pyg(cls, dataset: Any) -> GraphStore:
        """The store of a PyG QM9 ``InMemoryDataset``, from its collated storage (``_data``,
        ``slices``: the one private access, pinned and tested; see the module docstring)."""
        data, slices = dataset._data, dataset.slices
        return cls(
            x=data.x.float(),
            pos=data.pos.float(),
            edge_index=data.edge_index.long(),
            edge_attr=data.edge_attr.float(),
            y=data.y[:, list(TARGET_INDEX)].float(),
            node_ptr=slices["x"].long(),
            edge_ptr=slices["edge_index"].long(),
        )

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, ids: Tensor, graph: GraphKind = "complete") -> Any:
        """The PyG ``Batch`` of the molecules ``ids``: complete graphs (:func:`complete_edges`)
        or, with ``graph="bonds"``, the bonds only; edge features bond one-hot + distance."""
        from torch_geometric.data import Batch

        sizes = self.node_ptr[ids + 1] - self.node_ptr[ids]
        nodes = _ranges(self.node_ptr[ids], sizes)
        ptr = torch.cat([sizes.new_zeros(1), torch.cumsum(sizes, 0)])
        n_bonds = self.edge_ptr[ids + 1] - self.edge_ptr[ids]
        bonds = _ranges(self.edge_ptr[ids], n_bonds)
        shift = torch.repeat_interleave(ptr[:-1], n_bonds)
        pos = self.pos[nodes]
        edge_index, edge_attr = self.edge_index[:, bonds] + shift, self.edge_attr[bonds]
        if graph == "complete":
            edge_index, edge_attr = complete_edges(ptr, edge_index, edge_attr, pos)
        else:
            distance = (pos[edge_index[0]] - pos[edge_index[1]]).norm(dim=-1, keepdim=True)
            edge_attr = torch.cat([edge_attr, distance], dim=1)
        return Batch(
            x=self.x[nodes],
            edge_index=edge_index,
            edge_attr=edge_attr,
            pos=pos,
            y=self.y[ids],
            batch=torch.repeat_interleave(torch.arange(len(ids)), sizes),
            ptr=ptr,
        )


def _ranges(starts: Tensor, sizes: Tensor) -> Tensor:
    """``cat([arange(s, s + n) for s, n in zip(starts, sizes)])`` without a Python loop."""
    offsets = torch.cumsum(sizes, 0) - sizes
    return torch.arange(int(sizes.sum())) + torch.repeat_interleave(starts - offsets, sizes)
