"""RDKit's part of the offline QM9 rebuild: bonds from a geometry, the MOL block written into
``gdb9.sdf``, and the graph PyG's ``QM9.process`` reads back from it. RDKit is imported inside
the functions: only the preparation needs it (the ``qm9`` extra).

1. ``Chem.MolFromXYZBlock`` reads the geometry; ``rdDetermineBonds.DetermineConnectivity`` and
   ``DetermineBondOrders(charge=0)`` assign the bonds from it (xyz2mol, Kim & Kim 2015, as in
   RDKit). When that fails, the molecule's SMILES (bonds, bond orders, charges) is mapped onto
   the xyz atoms by matching its graph into the bonds perceived from the geometry (see
   :func:`smiles_on_geometry` for why this, rather than ``AssignBondOrdersFromTemplate``);
   when no match exists, the molecule is skipped (:class:`Skip`) with the reason.
2. The molecule is written as a Kekule MOL block (4-decimal coordinates, as every SDF).
3. The PyG graph is read back from that MOL block exactly as
   ``torch_geometric.datasets.QM9.process`` (2.8.1) reads ``gdb9.sdf``: unsanitised
   (``sanitize=False, removeHs=False``), node features one-hot H/C/N/O/F, atomic number,
   aromatic, sp / sp2 / sp3, number of bonded hydrogens; edges both directions sorted by
   ``row * N + col``, bond one-hot single / double / triple / aromatic. Like PyG's own
   processing, an unsanitised molecule has no aromaticity or hybridisation perceived, so those
   four feature columns and the aromatic bond column are zero (pyg-team/pytorch_geometric
   issues #2163 and #8370 report the same for PyG's published files).

Sources read, not copied: ``torch_geometric/datasets/qm9.py`` (2.8.1); the RDKit documentation
of ``rdDetermineBonds`` and ``AssignBondOrdersFromTemplate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mtlbench.datasets._qm9pack import ELEMENTS, Record


def xyz_block(record: Record) -> str:
    """The record as an XYZ block (atom count, name, one ``element x y z`` line per atom)."""
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
    """The Kekule MOL block of ``mol`` titled ``name``; raises :class:`Skip` if not kekulisable."""
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
