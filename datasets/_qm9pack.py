"""Reading the ``qm9pack`` package: QM9's molecules and properties, in MoleculeNet's and PyG's
units.

``qm9pack`` (PyPI, MIT, by an author of QM9) ships the 130,831 characterised QM9 molecules as
CSV files: B3LYP geometries (``XYZ_Ang``), the GDB SMILES and every property, in the original
units (Hartree for energies). ``import qm9pack`` fails on recent setuptools (it imports
``pkg_resources``), so the CSV files are read from the package folder, found without importing
it. Each row becomes a :class:`Record` whose ``fields`` are the 19 properties in the column
layout and units of MoleculeNet's ``gdb9.sdf.csv`` (Hartree; atomisation energies in kcal/mol),
and :func:`pyg_targets` turns them into PyG's ``y`` (reordered, eV).

The atomisation energies (PyG targets 12-15) are not in qm9pack: they are computed as the
molecule's energy minus the atom reference energies of QM9's ``atomref.txt`` (Ramakrishnan et
al., Sci. Data 1, 140022, 2014), times 627.509 kcal/mol per Hartree, the factor MoleculeNet's
``gdb9.sdf.csv`` uses (checked on gdb_1: -395.999594594 kcal/mol = 627.509 x (-0.631066 Ha)).

Sources read, not copied: ``torch_geometric/datasets/qm9.py`` (2.8.1); qm9pack's
``qm9pack_utility.py`` (column meanings). The rebuild of PyG's files from these records is in
:mod:`mtlbench.datasets._qm9_prepare`.
"""

from __future__ import annotations

import csv
import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from mtlbench.benchmark import DataUnavailable

EXTRA_HINT = "pip install 'mtlbench[qm9]' (installs qm9pack and rdkit)"
QM9PACK_PARTS = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")

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
    """Raise :class:`MissingExtra` unless RDKit is importable."""
    if importlib.util.find_spec("rdkit") is None:
        raise MissingExtra(f"RDKit is not installed: {EXTRA_HINT}")


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
    """One row of qm9pack's CSV as a :class:`Record` (with its atomisation energies)."""
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
