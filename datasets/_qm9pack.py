"""QM9 offline: rebuild PyTorch Geometric's QM9 files from the ``qm9pack`` package with RDKit.

``qm9pack`` (PyPI, MIT, by an author of QM9) ships the 130,831 characterised QM9 molecules as
CSV files: B3LYP geometries (``XYZ_Ang``), the GDB SMILES and every property, in the original
units (Hartree for energies). ``import qm9pack`` fails on recent setuptools (it imports
``pkg_resources``), so the CSV files are read from the package folder, found without importing
it. For each molecule:

1. ``Chem.MolFromXYZBlock`` reads the geometry; ``rdDetermineBonds.DetermineConnectivity`` and
   ``DetermineBondOrders(charge=0)`` assign the bonds from it (xyz2mol, Kim & Kim 2015, as in
   RDKit). When that fails, the molecule's SMILES (bonds, bond orders, charges) is mapped onto
   the xyz atoms by matching its graph into the bonds perceived from the geometry (see
   :func:`smiles_on_geometry` for why this, rather than ``AssignBondOrdersFromTemplate``);
   when no match exists, the molecule is skipped and reported with the reason.
2. The molecule is written as a Kekule MOL block (4-decimal coordinates, as every SDF) into
   ``raw/gdb9.sdf``, and its 19 properties in the column layout and units of MoleculeNet's
   ``gdb9.sdf.csv`` (Hartree; atomisation energies in kcal/mol) into ``raw/gdb9.sdf.csv``.
3. The PyG graph is read back from that MOL block exactly as
   ``torch_geometric.datasets.QM9.process`` (2.8.1) reads ``gdb9.sdf``: unsanitised
   (``sanitize=False, removeHs=False``), node features one-hot H/C/N/O/F, atomic number,
   aromatic, sp / sp2 / sp3, number of bonded hydrogens; edges both directions sorted by
   ``row * N + col``, bond one-hot single / double / triple / aromatic; targets ``y`` (1 x 19)
   from the CSV row, reordered and converted to eV as PyG does. Like PyG's own processing, an
   unsanitised molecule has no aromaticity or hybridisation perceived, so those four feature
   columns and the aromatic bond column are zero (pyg-team/pytorch_geometric issues #2163 and
   #8370 report the same for PyG's published files). ``QM9(root, force_reload=True)``
   rebuilds the same ``processed/data_v3.pt`` from the raw files this module writes (tested).
4. ``processed/data_v3.pt`` is written with ``InMemoryDataset.save``; ``raw/qm9_v3.pt`` (the
   raw name PyG expects when RDKit is absent) holds the same graphs as a list of dicts, so
   ``QM9(root)`` loads without downloading with or without RDKit.

The atomisation energies (PyG targets 12-15) are not in qm9pack: they are computed as the
molecule's energy minus the atom reference energies of QM9's ``atomref.txt`` (Ramakrishnan et
al., Sci. Data 1, 140022, 2014), times 627.509 kcal/mol per Hartree, the factor MoleculeNet's
``gdb9.sdf.csv`` uses (checked on gdb_1: -395.999594594 kcal/mol = 627.509 x (-0.631066 Ha)).

Differences from PyG's download (which is MoleculeNet's ``gdb9.sdf``, bonds by Open Babel):
the bonds here are RDKit's, so a few graphs differ; the molecules RDKit cannot bond are absent
(see the summary), so positions in the dataset, and therefore seeded splits, differ; ``idx`` is
the position in the written ``gdb9.sdf`` (PyG's is the position in the 133,885-line original),
and ``name`` keeps the QM9 id (``gdb_<index>``).

Sources read, not copied: ``torch_geometric/datasets/qm9.py`` (2.8.1); the RDKit documentation
of ``rdDetermineBonds`` and ``AssignBondOrdersFromTemplate``; qm9pack's ``qm9pack_utility.py``
(column meanings).
"""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import json
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlbench.benchmark import DataUnavailable

EXTRA_HINT = "pip install 'mtlbench[qm9]' (installs qm9pack and rdkit)"
QM9PACK_PARTS = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
MANIFEST = "mtlbench_qm9pack.json"

# Raw file names of torch_geometric.datasets.QM9: with RDKit installed it wants the first
# three, without RDKit the fourth.
RAW_SDF, RAW_CSV, RAW_SKIP, RAW_PT = "gdb9.sdf", "gdb9.sdf.csv", "uncharacterized.txt", "qm9_v3.pt"
PROCESSED = "data_v3.pt"

# Unit conversions of PyG's QM9 (torch_geometric 2.8.1; test_qm9 checks they are PyG's).
HARTREE_TO_EV = 27.211386246
KCALMOL_TO_EV = 0.04336414
# MoleculeNet's gdb9.sdf.csv gives the atomisation energies in kcal/mol with this factor.
HARTREE_TO_KCALMOL = 627.509

# Atom reference energies (Hartree) of QM9's atomref.txt, Ramakrishnan et al. 2014: U0, U(298.15
# K), H(298.15 K), G(298.15 K) of the free atoms.
ATOMREF_HARTREE: dict[str, tuple[float, float, float, float]] = {
    "H": (-0.500273, -0.498857, -0.497912, -0.510927),
    "C": (-37.846772, -37.845355, -37.844411, -37.861317),
    "N": (-54.583861, -54.582445, -54.581501, -54.598897),
    "O": (-75.064579, -75.063162, -75.062219, -75.079532),
    "F": (-99.718730, -99.717314, -99.716370, -99.733544),
}

# MoleculeNet's gdb9.sdf.csv columns (after mol_id), with the qm9pack column of each.
CSV_COLUMNS: tuple[tuple[str, str | None], ...] = (
    ("A", "RotA_GHz"),
    ("B", "RotB_GHz"),
    ("C", "RotC_GHz"),
    ("mu", "Dipole_debye"),
    ("alpha", "Polarizability_bohr3"),
    ("homo", "HOMO_au"),
    ("lumo", "LUMO_au"),
    ("gap", "HOMO_LUMO_gap_au"),
    ("r2", "R2_bohr2"),
    ("zpve", "ZPVE_au"),
    ("u0", "InternalEnergy_0K_au"),
    ("u298", "InternalEnergy_298K_au"),
    ("h298", "Enthalphy_298K_au"),
    ("g298", "GibbsFreeEnergy_298K_au"),
    ("cv", "Heatcapacity_Cv_cal_mol_K"),
    ("u0_atom", None),  # computed: atomisation energies, kcal/mol
    ("u298_atom", None),
    ("h298_atom", None),
    ("g298_atom", None),
)
ENERGY_SOURCES = (
    "InternalEnergy_0K_au",
    "InternalEnergy_298K_au",
    "Enthalphy_298K_au",
    "GibbsFreeEnergy_298K_au",
)
# PyG's order of the 19 targets is the CSV's columns 3..18 then 0..2 (A, B, C last); the
# factors turn Hartree into eV and kcal/mol into eV, as PyG's QM9.process.
PYG_ORDER = tuple(range(3, 19)) + (0, 1, 2)
PYG_CONVERSION = (
    (1.0, 1.0)
    + (HARTREE_TO_EV,) * 3
    + (1.0,)
    + (HARTREE_TO_EV,) * 5
    + (1.0,)
    + (KCALMOL_TO_EV,) * 4
    + (1.0, 1.0, 1.0)
)

ELEMENTS = ("H", "C", "N", "O", "F")
ATOMIC_NUMBER = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}


class MissingExtra(DataUnavailable):
    """qm9pack or RDKit is not installed."""


def qm9pack_data_dir() -> Path:
    """The folder of qm9pack's CSV files, found without importing the package."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtra(f"the qm9pack package is not installed: {EXTRA_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    missing = [p for p in QM9PACK_PARTS if not (folder / p).is_file()]
    if missing:
        raise MissingExtra(f"qm9pack at {folder.parent} lacks {', '.join(missing)}: reinstall it")
    return folder


def require_rdkit() -> None:
    if importlib.util.find_spec("rdkit") is None:
        raise MissingExtra(f"RDKit is not installed: {EXTRA_HINT}")


def versions() -> dict[str, str]:
    out = {}
    for package in ("qm9pack", "rdkit", "torch_geometric"):
        try:
            out[package] = importlib.metadata.version(package.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            out[package] = "absent"
    return out


# --------------------------------------------------------------------------------------------
# Reading qm9pack.


@dataclass(frozen=True)
class Record:
    """One molecule of qm9pack: its QM9 index (1-based), SMILES, elements, xyz (Angstrom) and
    the MoleculeNet CSV fields (text, in MoleculeNet's units)."""

    index: int
    smiles: str
    elements: tuple[str, ...]
    xyz: tuple[tuple[float, float, float], ...]
    fields: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"gdb_{self.index}"


def atomization_kcalmol(elements: Sequence[str], energies: Sequence[float]) -> list[float]:
    """U0, U, H, G of the molecule minus those of its free atoms, in kcal/mol."""
    refs = [sum(ATOMREF_HARTREE[e][k] for e in elements) for k in range(4)]
    return [(energies[k] - refs[k]) * HARTREE_TO_KCALMOL for k in range(4)]


def parse_row(row: dict[str, str]) -> Record:
    elements = tuple(e.strip().strip("'\"") for e in row["Elements"].strip("[]").split(","))
    # Coordinates as "[[x,y,z],...]", numbers such as "0." or "2.1997E-6" (not always JSON).
    flat = [float(v) for v in row["XYZ_Ang"].replace("[", "").replace("]", "").split(",")]
    if len(flat) != 3 * len(elements):
        raise ValueError(f"molecule {row['Index']}: {len(elements)} elements, {len(flat)} numbers")
    xyz = tuple(tuple(flat[i : i + 3]) for i in range(0, len(flat), 3))
    given = [row[col] for _, col in CSV_COLUMNS if col is not None]
    energies = [float(row[column]) for column in ENERGY_SOURCES]
    atom = atomization_kcalmol(elements, energies)
    fields = tuple(given) + tuple(repr(v) for v in atom)
    return Record(int(row["Index"]), row["SMILES"], elements, xyz, fields)  # type: ignore[arg-type]


def read_records(folder: Path | None = None, limit: int | None = None) -> Iterator[Record]:
    """qm9pack's molecules in QM9 order (the three part files are consecutive index ranges)."""
    folder = folder or qm9pack_data_dir()
    old = csv.field_size_limit()
    csv.field_size_limit(1 << 30)
    try:
        count = 0
        for part in QM9PACK_PARTS:
            with (folder / part).open(newline="") as f:
                for row in csv.DictReader(f):
                    if limit is not None and count >= limit:
                        return
                    yield parse_row(row)
                    count += 1
    finally:
        csv.field_size_limit(old)


def pyg_targets(fields: Sequence[str]) -> torch.Tensor:
    """The 1 x 19 ``y`` of PyG's QM9 from one MoleculeNet CSV row (without ``mol_id``):
    float32 values reordered (A, B, C last) and converted to eV, as PyG's ``QM9.process``."""
    y = torch.tensor([float(v) for v in fields], dtype=torch.float)
    y = y[list(PYG_ORDER)] * torch.tensor(PYG_CONVERSION, dtype=torch.float)
    return y.unsqueeze(0)


# --------------------------------------------------------------------------------------------
# RDKit (imported in the functions: only the preparation needs it).


def xyz_block(record: Record) -> str:
    # Fixed-point coordinates: RDKit's XYZ reader rejects exponents such as 2.1997e-06.
    lines = [str(len(record.elements)), record.name]
    lines += [
        f"{e} {x:.10f} {y:.10f} {z:.10f}"
        for e, (x, y, z) in zip(record.elements, record.xyz, strict=True)
    ]
    return "\n".join(lines) + "\n"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:160]


class Skip(Exception):
    """A molecule that cannot be rebuilt; ``reason`` is a short category, ``detail`` the
    error."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def bonded_molecule(record: Record) -> tuple[Any, str]:
    """The RDKit molecule of a record with bonds and bond orders, atoms in the xyz order, and
    how the bonds were found (``"geometry"`` or ``"smiles"``); raises :class:`Skip`."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    raw = Chem.MolFromXYZBlock(xyz_block(record))
    if raw is None:
        raise Skip("unreadable geometry", "MolFromXYZBlock returned None")
    mol = Chem.Mol(raw)
    try:
        rdDetermineBonds.DetermineConnectivity(mol)
        rdDetermineBonds.DetermineBondOrders(mol, charge=0)
        return mol, "geometry"
    except Exception as error:  # noqa: BLE001  (RDKit raises several types)
        plain = _first_line(error)
    try:
        return smiles_on_geometry(raw, record.smiles), "smiles"
    except Skip as skip:
        raise Skip(skip.reason, f"{plain} | SMILES: {skip.detail}") from None


def smiles_on_geometry(raw: Any, smiles: str) -> Any:
    """The molecule of ``smiles`` (bonds, bond orders, charges) on the atoms and coordinates of
    ``raw`` (a molecule without bonds, in xyz order).

    The SMILES graph with hydrogens is matched, as a skeleton of single bonds, into the bonds
    perceived from the geometry; the match maps each SMILES atom onto an xyz atom. Bonds the
    geometry suggests but the SMILES lacks are dropped: in strained bicyclic molecules (e.g.
    bicyclo[1.1.0]butane, gdb_105) the short transannular C...C distance reads as a bond, which
    makes bond-order determination fail and which ``AssignBondOrdersFromTemplate`` would keep
    (a five-valent carbon). The perceived connectivity is retried with a larger covalent
    factor when a SMILES bond is longer than the default tolerance.
    """
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    template = Chem.MolFromSmiles(smiles)
    if template is None:
        raise Skip("bond orders not determined, SMILES unreadable", smiles)
    template = Chem.AddHs(template)
    if template.GetNumAtoms() != raw.GetNumAtoms():
        raise Skip(
            "bond orders not determined, SMILES formula differs",
            f"{template.GetNumAtoms()} atoms in the SMILES, {raw.GetNumAtoms()} in xyz",
        )
    skeleton = Chem.RWMol(template)
    for atom in skeleton.GetAtoms():
        atom.SetIsAromatic(False)
        atom.SetFormalCharge(0)
    for bond in skeleton.GetBonds():
        bond.SetBondType(Chem.BondType.SINGLE)
        bond.SetIsAromatic(False)
    match: tuple[int, ...] = ()
    for factor in (1.3, 1.45):
        connected = Chem.Mol(raw)
        rdDetermineBonds.DetermineConnectivity(connected, covFactor=factor)
        match = connected.GetSubstructMatch(skeleton)
        if match:
            break
    if not match:
        raise Skip(
            "bond orders not determined, SMILES graph not found in the geometry",
            "no substructure match of the SMILES skeleton",
        )
    # match[i] = the xyz atom of SMILES atom i; renumber the SMILES molecule into xyz order.
    order = [0] * len(match)
    for i, j in enumerate(match):
        order[j] = i
    mol = Chem.RenumberAtoms(template, order)
    conformer = Chem.Conformer(raw.GetConformer())
    mol.RemoveAllConformers()
    mol.AddConformer(conformer, assignId=True)
    return mol


def mol_block(mol: Any, name: str) -> str:
    from rdkit import Chem

    mol = Chem.Mol(mol)
    mol.SetProp("_Name", name)
    try:
        return Chem.MolToMolBlock(mol, kekulize=True)
    except Exception as error:  # noqa: BLE001
        raise Skip("not kekulisable", _first_line(error)) from error


@dataclass
class Graph:
    """A PyG QM9 graph as numpy arrays (cheap to send between processes)."""

    x: np.ndarray  # N x 11 float32
    z: np.ndarray  # N int64
    pos: np.ndarray  # N x 3 float32
    edge_index: np.ndarray  # 2 x E int64
    edge_type: np.ndarray  # E int64 (0 single, 1 double, 2 triple, 3 aromatic)
    name: str
    smiles: str


def graph_from_mol_block(block: str) -> Graph:
    """The graph ``QM9.process`` makes of one ``gdb9.sdf`` record (unsanitised reading)."""
    from rdkit import Chem
    from rdkit.Chem.rdchem import BondType, HybridizationType

    mol = Chem.MolFromMolBlock(block, sanitize=False, removeHs=False)
    if mol is None:
        raise Skip("MOL block unreadable", "MolFromMolBlock returned None")
    n = mol.GetNumAtoms()
    bond_index = {BondType.SINGLE: 0, BondType.DOUBLE: 1, BondType.TRIPLE: 2, BondType.AROMATIC: 3}
    hybrid = (HybridizationType.SP, HybridizationType.SP2, HybridizationType.SP3)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    symbols = [a.GetSymbol() for a in mol.GetAtoms()]
    rows, cols, types = [], [], []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        if bond.GetBondType() not in bond_index:
            raise Skip("bond type outside PyG's four", str(bond.GetBondType()))
        t = bond_index[bond.GetBondType()]
        rows += [i, j]
        cols += [j, i]
        types += [t, t]
    edge_index = np.array([rows, cols], dtype=np.int64).reshape(2, -1)
    order = np.argsort(edge_index[0] * n + edge_index[1], kind="stable")
    edge_index, edge_type = edge_index[:, order], np.array(types, dtype=np.int64)[order]
    x = np.zeros((n, 11), dtype=np.float32)
    x[np.arange(n), [ELEMENTS.index(s) for s in symbols]] = 1.0
    x[:, 5] = z
    for k, atom in enumerate(mol.GetAtoms()):
        x[k, 6] = float(atom.GetIsAromatic())
        h = atom.GetHybridization()
        x[k, 7:10] = [float(h == t) for t in hybrid]
    # Number of hydrogens bonded to each atom (PyG: scatter of (z == 1) over the edges).
    np.add.at(x[:, 10], edge_index[1], (z[edge_index[0]] == 1).astype(np.float32))
    pos = mol.GetConformer().GetPositions().astype(np.float32)
    smiles = Chem.MolToSmiles(mol, isomericSmiles=True)
    return Graph(x, z, pos, edge_index, edge_type, mol.GetProp("_Name"), smiles)


def connectivity_matches(mol: Any, smiles: str) -> bool | None:
    """Whether the heavy-atom graph (bonds without orders) equals that of the SMILES (None when
    the SMILES cannot be read)."""
    from rdkit import Chem

    ref = Chem.MolFromSmiles(smiles)
    if ref is None:
        return None

    def skeleton(m: Any) -> str:
        m = Chem.RWMol(Chem.RemoveAllHs(m, sanitize=False))
        for atom in m.GetAtoms():
            atom.SetFormalCharge(0)
            atom.SetNoImplicit(True)
            atom.SetNumExplicitHs(0)
            atom.SetIsAromatic(False)
        for bond in m.GetBonds():
            bond.SetBondType(Chem.BondType.SINGLE)
            bond.SetIsAromatic(False)
        return Chem.MolToSmiles(m, canonical=True, isomericSmiles=False)

    try:
        return skeleton(mol) == skeleton(ref)
    except Exception:  # noqa: BLE001
        return None


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


# --------------------------------------------------------------------------------------------
# Writing the PyG files.


def to_data(graph: Graph, fields: Sequence[str], idx: int) -> Any:
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
Written by mtlbench (datasets/_qm9pack.py) in place of QM9's uncharacterized.txt.
The original lists the 3,054 molecules that failed QM9's geometry consistency check; qm9pack
does not contain them, and gdb9.sdf here holds only the molecules that were rebuilt, so
torch_geometric's QM9.process (which skips the SDF positions listed below line 9) must skip
none. Skipped molecules and their reasons are in ../{manifest}.
Index  (none)
------------------------------------------------------------------
------------------------------------------------------------------
---
"""


def _replace(path: Path, write: Any) -> None:
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

    _replace(raw / RAW_SDF, text("".join(b + "$$$$\n" for b in blocks)))
    header = "mol_id," + ",".join(c for c, _ in CSV_COLUMNS)
    _replace(raw / RAW_CSV, text("\n".join([header, *rows]) + "\n"))
    _replace(raw / RAW_SKIP, text(UNCHARACTERIZED_NOTE.format(manifest=MANIFEST)))
    _replace(raw / RAW_PT, lambda p: torch.save(as_dicts(data_list), p))
    _replace(processed / PROCESSED, lambda p: InMemoryDataset.save(data_list, str(p)))


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
    counts: Counter[str] = Counter()
    skipped: dict[str, list[str]] = defaultdict(list)
    details: dict[str, str] = {}
    methods: Counter[str] = Counter()
    differs: list[str] = []
    data_list: list[Any] = []
    blocks: list[str] = []
    rows: list[str] = []

    chunks = _chunks(read_records(folder, limit), 64)
    context = get_context("fork" if sys.platform.startswith("linux") else "spawn")
    pool = context.Pool(workers, initializer=_init_worker) if workers > 1 else None
    results = pool.imap(_process_chunk, chunks) if pool else map(_process_chunk, chunks)
    if pool is None:
        _init_worker()
    try:
        for outcomes in results:
            for out in outcomes:
                counts["read"] += 1
                if out.graph is None:
                    assert out.reason is not None
                    skipped[out.reason].append(out.record.name)
                    details.setdefault(out.record.name, out.detail or "")
                    continue
                assert out.block is not None and out.method is not None
                methods[out.method] += 1
                if out.same_graph_as_smiles is False:
                    differs.append(out.record.name)
                data_list.append(to_data(out.graph, out.record.fields, len(data_list)))
                blocks.append(out.block)
                rows.append(",".join((out.record.name, *out.record.fields)))
            if progress and counts["read"] % 5120 < 64:
                rate = counts["read"] / (time.perf_counter() - start)
                print(
                    f"qm9pack: {counts['read']} molecules read, {len(data_list)} kept "
                    f"({rate:.0f}/s)",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    if len(data_list) < 2:
        raise DataUnavailable(f"only {len(data_list)} molecules rebuilt: QM9 needs at least 2")
    built = time.perf_counter()
    write_dataset(root, data_list, blocks, rows)
    summary: dict[str, Any] = {
        "root": str(root),
        "source": f"qm9pack CSV files in {folder}",
        "versions": versions(),
        "molecules_read": counts["read"],
        "written": len(data_list),
        "bonds": dict(methods),
        "skipped": {reason: len(names) for reason, names in sorted(skipped.items())},
        "connectivity_differs_from_smiles": len(differs),
        "seconds": {
            "rebuild": round(built - start, 1),
            "write": round(time.perf_counter() - built, 1),
        },
        "workers": workers,
    }
    manifest = dict(summary)
    manifest["skipped_molecules"] = {
        reason: [{"name": n, "detail": details[n]} for n in names]
        for reason, names in sorted(skipped.items())
    }
    manifest["connectivity_differs_molecules"] = differs
    _replace(root / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=1) + "\n"))
    return summary
