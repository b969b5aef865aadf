"""Writing the files of ``torch_geometric.datasets.QM9(root)``: ``raw/`` (``gdb9.sdf``,
``gdb9.sdf.csv``, ``uncharacterized.txt`` and ``qm9_v3.pt``) and ``processed/data_v3.pt``.

``processed/data_v3.pt`` is written with ``InMemoryDataset.save``; ``raw/qm9_v3.pt`` (the raw
name PyG expects when RDKit is absent) holds the same graphs as a list of dicts, so ``QM9(root)``
loads without downloading with or without RDKit. Every file is written through a temporary file
and a rename, the processed file last.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mtlbench.datasets._qm9_rdkit import Graph
from mtlbench.datasets._qm9pack import CSV_COLUMNS, pyg_targets

MANIFEST = "mtlbench_qm9pack.json"
# Raw file names of torch_geometric.datasets.QM9: with RDKit installed it wants the first
# three, without RDKit the fourth.
RAW_SDF, RAW_CSV, RAW_SKIP, RAW_PT = "gdb9.sdf", "gdb9.sdf.csv", "uncharacterized.txt", "qm9_v3.pt"
PROCESSED = "data_v3.pt"


def to_data(graph: Graph, fields: Sequence[str], idx: int) -> Any:
    """The PyG ``Data`` of one rebuilt molecule, with the attributes ``QM9.process`` gives it
    (bond one-hot ``edge_attr``, ``y`` from the CSV fields, ``idx`` its position)."""
    from torch_geometric.data import Data

    edge_type = torch.from_numpy(graph.edge_type)
    return Data(
        x=torch.from_numpy(graph.x),
        z=torch.from_numpy(graph.z),
        pos=torch.from_numpy(graph.pos),
        edge_index=torch.from_numpy(graph.edge_index),
        smiles=graph.smiles,
        edge_attr=torch.nn.functional.one_hot(edge_type, num_classes=4).float(),
        y=pyg_targets(fields),
        name=graph.name,
        idx=idx,
    )


UNCHARACTERIZED_NOTE = """\
Written by mtlbench (datasets/_qm9_files.py) in place of QM9's uncharacterized.txt.
The original lists the 3,054 molecules that failed QM9's geometry consistency check; qm9pack
does not contain them, and gdb9.sdf here holds only the molecules that were rebuilt, so
torch_geometric's QM9.process (which skips the SDF positions listed below line 9) must skip
none. Skipped molecules and their reasons are in ../{manifest}.
Index  (none)
------------------------------------------------------------------
------------------------------------------------------------------
---
"""


def replace_file(path: Path, write: Any) -> None:
    """Write ``path`` through a temporary file and a rename (no half-written files)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def as_dicts(data_list: list[Any]) -> list[dict[str, Any]]:
    """The graphs as the list of dicts of PyG's pre-processed ``qm9_v3.pt``; the tensors are
    views of one collated storage per key, so the file is not much larger than
    ``data_v3.pt``."""
    from torch_geometric.data import InMemoryDataset

    data, slices = InMemoryDataset.collate(data_list)
    out = []
    for i in range(len(data_list)):
        item: dict[str, Any] = {}
        for key, value in data.to_dict().items():
            a, b = int(slices[key][i]), int(slices[key][i + 1])
            if key == "edge_index":
                item[key] = value[:, a:b]
            elif isinstance(value, torch.Tensor):
                item[key] = value[a:b]
            else:  # lists of strings (smiles, name)
                item[key] = value[i]
        item["idx"] = int(item["idx"])
        out.append(item)
    return out


def write_dataset(root: Path, data_list: list[Any], blocks: list[str], rows: list[str]) -> None:
    """The raw files and ``processed/data_v3.pt`` of ``QM9(root)`` (processed last)."""
    from torch_geometric.data import InMemoryDataset

    raw, processed = root / "raw", root / "processed"
    raw.mkdir(parents=True, exist_ok=True)
    processed.mkdir(parents=True, exist_ok=True)

    def text(content: str) -> Any:
        return lambda p: p.write_text(content, encoding="utf-8")

    replace_file(raw / RAW_SDF, text("".join(b + "$$$$\n" for b in blocks)))
    header = "mol_id," + ",".join(c for c, _ in CSV_COLUMNS)
    replace_file(raw / RAW_CSV, text("\n".join([header, *rows]) + "\n"))
    replace_file(raw / RAW_SKIP, text(UNCHARACTERIZED_NOTE.format(manifest=MANIFEST)))
    replace_file(raw / RAW_PT, lambda p: torch.save(as_dicts(data_list), p))
    replace_file(processed / PROCESSED, lambda p: InMemoryDataset.save(data_list, str(p)))
