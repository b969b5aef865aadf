"""Loading QM9 through ``torch_geometric.datasets.QM9``, the messages when its files are
missing, and the split of the molecules.

**Data.** ``QM9(root)``: ``raw/`` and ``processed/data_v3.pt``; PyG downloads its files at first
use where there is network. Offline, ``mtlbench data prepare qm9 --from qm9pack`` rebuilds these
files from the ``qm9pack`` package with RDKit (:mod:`mtlbench.datasets._qm9_prepare`,
docs/qm9.md); without data and network, loading fails with a one-line
:class:`~mtlbench.benchmark.DataUnavailable` that says so.

**Split.** The molecules are permuted by a generator seeded with ``split_seed``; test = the
first ``n_test`` (10,000), validation = the next ``n_val`` (10,000), training = the rest (or
the next ``n_train``). The reference (``experiments/quantum_chemistry/trainer.py`` of
Cranial-XIX/FAMO@0a6ad06) permutes with the global RNG after ``set_seed(seed)``, so its split
changes with the trial seed; here it is fixed across trials, so that seeds differ only in
initialisation and batch order.
"""

from __future__ import annotations

import functools
import urllib.error
from pathlib import Path

from torch import Tensor

from mtlbench.benchmark import DataUnavailable
from mtlbench.datasets._qm9_graphs import GraphStore
from mtlbench.datasets._sampling import permutation
from mtlbench.registry import ConfigError

PYG_PROCESSED_URL = "https://data.pyg.org/datasets/qm9_v3.zip"
PREPARE_HINT = "mtlbench data prepare qm9 --from qm9pack --root {root}"


def raw_names() -> list[str]:
    """The raw file names ``torch_geometric.datasets.QM9`` requires before it skips its
    download: they depend on whether RDKit is importable."""
    import importlib.util

    if importlib.util.find_spec("rdkit") is not None:
        return ["gdb9.sdf", "gdb9.sdf.csv", "uncharacterized.txt"]
    return ["qm9_v3.pt"]


def check_files(root: Path) -> list[str]:
    """Why ``QM9(root)`` would have to download (one line, with what to do), or nothing."""
    processed = root / "processed" / "data_v3.pt"
    needed = raw_names()
    missing = [n for n in needed if not (root / "raw" / n).is_file()]
    prepare = PREPARE_HINT.format(root=root)
    if not processed.is_file() and missing:
        return [
            f"no QM9 data in {root}: run `{prepare}` (offline, needs `pip install "
            f"'mtlbench[qm9]'`), or with network let torch_geometric download it: "
            f"`python -c \"from torch_geometric.datasets import QM9; QM9('{root}')\"`, or "
            f"unzip PyG's {PYG_PROCESSED_URL} into {root / 'raw'} (qm9_v3.pt; used as is "
            f"when RDKit is not installed)"
        ]
    if missing:
        rdkit = "with" if "gdb9.sdf" in needed else "without"
        return [
            f"{processed} exists but {', '.join(missing)} not in {root / 'raw'}: "
            f"torch_geometric's QM9 ({rdkit} RDKit installed) would try to download the "
            f"missing raw files; re-run `{prepare}` into an empty folder, or put them there"
        ]
    return []


class DownloadFailed(DataUnavailable):
    """torch_geometric's QM9 found no data and could not download it."""


@functools.lru_cache(maxsize=2)
def _load_store(root: str, stamp: float) -> GraphStore:
    """``QM9(root)`` as a :class:`GraphStore`. Where the files are missing, PyG downloads them
    (network permitting); a failed download raises :class:`DownloadFailed`."""
    from torch_geometric.datasets import QM9 as PygQM9

    try:
        dataset = PygQM9(root)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadFailed(f"the download failed ({type(error).__name__}: {reason})") from None
    return GraphStore.from_pyg(dataset)


def load_store(root: Path) -> GraphStore:
    """``QM9(root)`` as a :class:`GraphStore`, read once per process while
    ``processed/data_v3.pt`` is unchanged; raises :class:`DownloadFailed` as ``_load_store``."""
    processed = root / "processed" / "data_v3.pt"
    stamp = processed.stat().st_mtime if processed.exists() else 0.0
    return _load_store(str(root), stamp)


def split_indices(
    n: int, n_test: int, n_val: int, n_train: int | None, seed: int
) -> dict[str, Tensor]:
    """Permute ``range(n)`` with a generator seeded by ``seed``; test = the first ``n_test``,
    validation = the next ``n_val``, training = the next ``n_train`` (``None``: the rest)."""
    rest = n - n_test - n_val
    if n_test < 1 or n_val < 1 or rest < 1 or (n_train is not None and not 1 <= n_train <= rest):
        raise ConfigError(
            f"qm9 split n_test={n_test}, n_val={n_val}, n_train={n_train} does not fit the "
            f"{n} molecules of the dataset"
        )
    perm = permutation(n, seed)
    train = perm[n_test + n_val :]
    return {
        "train": train if n_train is None else train[:n_train],
        "val": perm[n_test : n_test + n_val],
        "test": perm[:n_test],
    }
