"""QM9 offline: rebuild PyTorch Geometric's QM9 files from the ``qm9pack`` package with RDKit
(``mtlbench data prepare qm9 --from qm9pack``, docs/qm9.md).

For each molecule of qm9pack (:mod:`mtlbench.datasets._qm9pack`), in worker processes: the bonds
are found from the geometry, or else from the SMILES mapped onto it, and the molecule is written
as a MOL block and read back as PyG's ``QM9.process`` reads ``gdb9.sdf``
(:mod:`mtlbench.datasets._qm9_rdkit`); molecules that cannot be bonded are skipped with the
reason. The kept ones go into ``raw/`` and ``processed/`` (:mod:`mtlbench.datasets._qm9_files`),
with their 19 properties as PyG's ``y``; ``QM9(root, force_reload=True)`` rebuilds the same
``processed/data_v3.pt`` from the raw files written (tested). A summary (and a manifest with the
skipped molecules) says what became of every molecule.

Differences from PyG's download (which is MoleculeNet's ``gdb9.sdf``, bonds by Open Babel):
the bonds here are RDKit's, so a few graphs differ; the molecules RDKit cannot bond are absent
(see the summary), so positions in the dataset, and therefore seeded splits, differ; ``idx`` is
the position in the written ``gdb9.sdf`` (PyG's is the position in the 133,885-line original),
and ``name`` keeps the QM9 id (``gdb_<index>``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from mtlbench.benchmark import DataUnavailable
from mtlbench.datasets._qm9_files import MANIFEST, PROCESSED, replace_file, to_data, write_dataset
from mtlbench.datasets._qm9_rdkit import (
    Graph,
    Skip,
    bonded_molecule,
    connectivity_matches,
    graph_from_mol_block,
    mol_block,
)
from mtlbench.datasets._qm9pack import Record, qm9pack_data_dir, read_records, require_rdkit


def versions() -> dict[str, str]:
    """The installed versions of qm9pack, RDKit and torch_geometric (for the summary)."""
    out = {}
    for package in ("qm9pack", "rdkit", "torch_geometric"):
        try:
            out[package] = importlib.metadata.version(package.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            out[package] = "absent"
    return out


@dataclass
class Outcome:
    """What became of one molecule: ``graph`` and ``block`` when written, else ``reason``."""

    record: Record
    method: str | None = None
    block: str | None = None
    graph: Graph | None = None
    same_graph_as_smiles: bool | None = None
    reason: str | None = None
    detail: str | None = None


def process_record(record: Record) -> Outcome:
    """Bond, write and read back one molecule; a :class:`Skip` becomes the outcome's reason."""
    try:
        mol, method = bonded_molecule(record)
        block = mol_block(mol, record.name)
        graph = graph_from_mol_block(block)
    except Skip as skip:
        return Outcome(record, reason=skip.reason, detail=skip.detail)
    same = connectivity_matches(mol, record.smiles)
    return Outcome(record, method, block, graph, same)


def _init_worker() -> None:
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    torch.set_num_threads(1)


def _process_chunk(records: list[Record]) -> list[Outcome]:
    return [process_record(r) for r in records]


def _chunks(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    chunk: list[Record] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _rebuilt(records: Iterator[Record], workers: int) -> Iterator[list[Outcome]]:
    """The outcomes of ``records`` in chunks of 64, in order, from ``workers`` processes."""
    chunks = _chunks(records, 64)
    if workers <= 1:
        _init_worker()
        yield from map(_process_chunk, chunks)
        return
    context = get_context("fork" if sys.platform.startswith("linux") else "spawn")
    pool = context.Pool(workers, initializer=_init_worker)
    try:
        yield from pool.imap(_process_chunk, chunks)
    finally:
        pool.close()
        pool.join()


@dataclass
class Tally:
    """The molecules kept (PyG graphs, MOL blocks, CSV rows) and what became of the others."""

    read: int = 0
    skipped: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    details: dict[str, str] = field(default_factory=dict)
    methods: Counter[str] = field(default_factory=Counter)
    differs: list[str] = field(default_factory=list)
    data_list: list[Any] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)

    def add(self, out: Outcome) -> None:
        """Count one outcome; keep its graph, MOL block and CSV row when it was rebuilt."""
        self.read += 1
        if out.graph is None:
            assert out.reason is not None
            self.skipped[out.reason].append(out.record.name)
            self.details.setdefault(out.record.name, out.detail or "")
            return
        assert out.block is not None and out.method is not None
        self.methods[out.method] += 1
        if out.same_graph_as_smiles is False:
            self.differs.append(out.record.name)
        self.data_list.append(to_data(out.graph, out.record.fields, len(self.data_list)))
        self.blocks.append(out.block)
        self.rows.append(",".join((out.record.name, *out.record.fields)))

    def summary(self) -> dict[str, Any]:
        """Counts: molecules read and written, bonds by method, skips by reason."""
        return {
            "molecules_read": self.read,
            "written": len(self.data_list),
            "bonds": dict(self.methods),
            "skipped": {reason: len(names) for reason, names in sorted(self.skipped.items())},
            "connectivity_differs_from_smiles": len(self.differs),
        }

    def manifest(self, summary: dict[str, Any]) -> dict[str, Any]:
        """``summary`` with the skipped molecules and their reasons, and the molecules whose
        bonds differ from their SMILES."""
        manifest = dict(summary)
        manifest["skipped_molecules"] = {
            reason: [{"name": n, "detail": self.details[n]} for n in names]
            for reason, names in sorted(self.skipped.items())
        }
        manifest["connectivity_differs_molecules"] = self.differs
        return manifest


def prepare(
    root: Path, limit: int | None = None, progress: bool = True, workers: int | None = None
) -> dict[str, Any]:
    """Rebuild QM9 from qm9pack into ``root`` (``raw/`` and ``processed/`` as PyG's QM9) and
    return the summary (also written to ``root/mtlbench_qm9pack.json``)."""
    root = Path(root)
    folder = qm9pack_data_dir()
    require_rdkit()
    if (root / "processed" / PROCESSED).exists():
        raise DataUnavailable(
            f"{root / 'processed' / PROCESSED} already exists: remove {root / 'processed'} "
            f"(and {root / 'raw'}) to prepare QM9 again"
        )
    workers = workers or min(os.cpu_count() or 1, 8)
    start = time.perf_counter()
    tally = Tally()
    with contextlib.closing(_rebuilt(read_records(folder, limit), workers)) as results:
        for outcomes in results:
            for out in outcomes:
                tally.add(out)
            if progress and tally.read % 5120 < 64:
                rate = tally.read / (time.perf_counter() - start)
                print(
                    f"qm9pack: {tally.read} molecules read, {len(tally.data_list)} kept "
                    f"({rate:.0f}/s)",
                    file=sys.stderr,
                    flush=True,
                )
    if len(tally.data_list) < 2:
        raise DataUnavailable(
            f"only {len(tally.data_list)} molecules rebuilt: QM9 needs at least 2"
        )
    built = time.perf_counter()
    write_dataset(root, tally.data_list, tally.blocks, tally.rows)
    summary: dict[str, Any] = {
        "root": str(root),
        "source": f"qm9pack CSV files in {folder}",
        "versions": versions(),
        **tally.summary(),
        "seconds": {
            "rebuild": round(built - start, 1),
            "write": round(time.perf_counter() - built, 1),
        },
        "workers": workers,
    }
    manifest = tally.manifest(summary)
    replace_file(root / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=1) + "\n"))
    return summary
