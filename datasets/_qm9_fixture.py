"""Random molecules in the on-disk format of ``torch_geometric.datasets.QM9``, for the tests,
``--smoke`` runs and timings; needs neither qm9pack nor RDKit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mtlbench.datasets._qm9_files import as_dicts
from mtlbench.datasets._qm9_graphs import NUM_NODE_FEATURES
from mtlbench.datasets._qm9pack import ATOMIC_NUMBER, ELEMENTS

# Rough mean and spread of PyG's 19 targets (for plausible fixture values only).
_FIXTURE_Y = (
    (2.7, 1.5),
    (75.0, 8.0),
    (-6.5, 0.6),
    (0.3, 1.3),
    (6.9, 1.3),
    (1190.0, 280.0),
    (4.1, 0.9),
    (-11180.0, 1090.0),
    (-11180.0, 1090.0),
    (-11180.0, 1090.0),
    (-11180.0, 1090.0),
    (31.6, 4.0),
    (-76.1, 10.3),
    (-76.6, 10.4),
    (-77.0, 10.5),
    (-70.8, 9.5),
    (3.4, 1.2),
    (1.4, 0.4),
    (1.1, 0.3),
)


def write_fixture(root: Path, n: int = 40, seed: int = 0, atoms: tuple[int, int] = (3, 9)) -> None:
    """``n`` random molecules (:func:`random_molecule`, from ``default_rng(seed)``; ``atoms`` =
    ``(9, 27)`` gives QM9's mean number of atom pairs, for timings) in the on-disk format of
    ``QM9(root)``: ``processed/data_v3.pt`` as ``InMemoryDataset.save`` writes it, the graphs as
    a list of dicts in ``raw/qm9_v3.pt``, and placeholder ``gdb9.sdf`` / ``gdb9.sdf.csv`` /
    ``uncharacterized.txt`` (which PyG only reads to re-process). Needs neither qm9pack nor
    RDKit."""
    from torch_geometric.data import InMemoryDataset

    rng = np.random.default_rng(seed)
    data_list = [random_molecule(rng, i, atoms) for i in range(n)]
    raw, processed = root / "raw", root / "processed"
    raw.mkdir(parents=True, exist_ok=True)
    processed.mkdir(parents=True, exist_ok=True)
    note = "mtlbench QM9 fixture: the graphs are in processed/data_v3.pt and raw/qm9_v3.pt\n"
    for name in ("gdb9.sdf", "gdb9.sdf.csv", "uncharacterized.txt"):
        (raw / name).write_text(note)
    torch.save(as_dicts(data_list), raw / "qm9_v3.pt")
    InMemoryDataset.save(data_list, str(processed / "data_v3.pt"))


def random_molecule(rng: np.random.Generator, index: int, atoms: tuple[int, int]) -> Any:
    """One PyG graph with QM9's attributes: ``atoms[0]`` to ``atoms[1]`` atoms (uniform), a heavy
    first atom then H, C, N, O, F with probabilities 0.5, 0.3, 0.08, 0.08, 0.04; a random bond
    tree, bonds single / double / triple with probabilities 0.8, 0.15, 0.05, both directions
    sorted as PyG's; node features as PyG's; random targets and coordinates."""
    from torch_geometric.data import Data

    size = int(rng.integers(atoms[0], atoms[1] + 1))
    symbols = [ELEMENTS[int(rng.integers(1, 5))]] + [
        ELEMENTS[int(rng.choice(5, p=[0.5, 0.3, 0.08, 0.08, 0.04]))] for _ in range(size - 1)
    ]
    z = torch.tensor([ATOMIC_NUMBER[s] for s in symbols])
    parents = [int(rng.integers(0, k)) for k in range(1, size)]
    pairs = [(p, k + 1) for k, p in enumerate(parents)]
    rows = [a for p, c in pairs for a in (p, c)]
    cols = [b for p, c in pairs for b in (c, p)]
    kinds = [t for t in rng.choice(3, len(pairs), p=[0.8, 0.15, 0.05]) for _ in (0, 1)]
    edge_index = torch.tensor([rows, cols])
    order = (edge_index[0] * size + edge_index[1]).argsort()
    edge_index = edge_index[:, order]
    edge_attr = F.one_hot(torch.tensor(kinds)[order], 4).float()
    x = torch.zeros(size, NUM_NODE_FEATURES)
    x[torch.arange(size), [ELEMENTS.index(s) for s in symbols]] = 1.0
    x[:, 5] = z.float()
    x[:, 10].index_add_(0, edge_index[1], (z[edge_index[0]] == 1).float())
    y = torch.tensor([[rng.normal(m, s) for m, s in _FIXTURE_Y]], dtype=torch.float)
    pos = torch.from_numpy(rng.normal(0.0, 1.2, (size, 3))).float()
    name = f"fixture_{index + 1}"
    return Data(
        x=x,
        z=z,
        pos=pos,
        edge_index=edge_index,
        smiles="",
        edge_attr=edge_attr,
        y=y,
        name=name,
        idx=index,
    )
