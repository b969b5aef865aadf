"""QM9 (11 regression tasks) with the NNConv + GRU + Set2Set network, and ``qm9-small``.

Sources (read, not copied): ``experiments/quantum_chemistry/{trainer,utils}.py`` of
Cranial-XIX/FAMO@0a6ad06 and ``models.py`` of OptMN-Lab/LDC-MTL@7c39465 (the protocol of
Nash-MTL, FAMO and LDC-MTL; protocols.md 3.2 and 4.4); the ``qm9_nn_conv.py`` example and
``torch_geometric/datasets/qm9.py`` of PyTorch Geometric 2.8.1. Data: Ramakrishnan et al.,
"Quantum chemistry structures and properties of 134 kilo molecules", Sci. Data 1, 140022
(2014), in PyG's format (MoleculeNet's SDF, 130,831 molecules, 19 targets). The parts, one
module each:

- :mod:`~mtlbench.datasets._qm9_loading`: ``QM9(data_root)``, missing-data messages, the split;
- :mod:`~mtlbench.datasets._qm9_graphs`: complete / bond graphs, batches by index arithmetic;
- :mod:`~mtlbench.datasets._qm9_targets`: the 11 targets, units, standardisation, MAE, STL;
- :mod:`~mtlbench.datasets._qm9_model`: the encoder;
- :mod:`~mtlbench.datasets._qm9_fixture`: random molecules in PyG's format, for tests;
- :mod:`~mtlbench.datasets._qm9_prepare` (with ``_qm9pack``, ``_qm9_rdkit``, ``_qm9_files``):
  the offline rebuild of PyG's files from the ``qm9pack`` package (docs/qm9.md).

**Loss**: MSE per task on the standardised targets, batch mean. **Metric**: MAE per target
over the split in original units, energies x 1000 (meV): ``mae_<task>``, all lower is better.

**Protocol** (reference): Adam lr 1e-3, ReduceLROnPlateau(factor 0.7, patience 5, min_lr
1e-5) on the validation Delta m, 300 epochs, batch size 120, the test metrics at the epoch of
the best validation Delta m (the published rule, ``selection="best_val_delta_m"``). Training
batches follow the epoch order of :mod:`~mtlbench.datasets._sampling`.

**Reference**: the STL MAEs of FAMO / LDC-MTL (``BASE``), for the published split only.

**Per-task gradients** (MGDA, DB-MTL, ...) come from K = 11 backward passes (the benchmark's
trainer policy ``jacobian_mode="sequential"``): the vmapped backward fails on CUDA for the
cuDNN GRU / LSTM and is 2.4x slower on the CPU here.

**qm9-small**: the same data, model, losses and metrics on a seeded subset (3,000 / 500 / 500
molecules), 4 epochs of batches of 32, and the molecules' **bond graphs** (bond one-hot +
distance on the bonds only, ``graph="bonds"``) instead of complete graphs: on this 2-core CPU a
complete-graph step costs 8x more, and a 5-method x 3-seed sweep would take hours; docs/qm9.md
has the measurements. ``graph="complete"`` restores the published graphs. Its single-task
reference comes from the suite's STL mode (the published STL values are for 110,831 training
molecules and complete graphs).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtlbench.benchmark import (
    Benchmark,
    DataUnavailable,
    Evaluator,
    Metric,
    MultiTaskModel,
    Protocol,
    Reference,
    Split,
    default_data_root,
    register,
)
from mtlbench.datasets._qm9_graphs import GraphKind, GraphStore
from mtlbench.datasets._qm9_loading import DownloadFailed, check_files, load_store, split_indices
from mtlbench.datasets._qm9_model import QM9Encoder
from mtlbench.datasets._qm9_targets import PUBLISHED_STL, TARGETS, TASKS, MAEEvaluator, Standardizer
from mtlbench.datasets._sampling import epoch_order
from mtlbench.registry import NonNegativeInt, PositiveInt


@dataclass
class QM9Protocol(Protocol):
    """The reference protocol; ``split_seed`` fixes the split, ``n_test`` / ``n_val`` /
    ``n_train`` its sizes (``n_train=None``: all the remaining molecules), ``scale_y`` the
    target standardisation, ``graph`` the edges (``"complete"``: the reference's complete
    graphs; ``"bonds"``: the bonds only, with the same 5 edge features)."""

    epochs: int = 300
    batch_size: int = 120
    lr: float = 1e-3
    scheduler: str | None = "plateau:0.7:5:1e-5"
    scale_y: bool = True
    split_seed: NonNegativeInt = 0
    n_test: PositiveInt = 10_000
    n_val: PositiveInt = 10_000
    n_train: PositiveInt | None = None
    graph: GraphKind = "complete"


@dataclass
class QM9SmallProtocol(QM9Protocol):
    """qm9-small: a seeded subset, bond graphs, and a protocol that fits a 2-core CPU
    (docs/qm9.md)."""

    epochs: int = 4
    batch_size: int = 32
    n_test: int = 500
    n_val: int = 500
    n_train: int | None = 3000
    graph: GraphKind = "bonds"


class _QM9Base(Benchmark):
    """What ``qm9`` and ``qm9-small`` share (everything but the protocol and reference)."""

    tasks = TASKS
    metrics = tuple(Metric(f"mae_{t}", t, higher_is_better=False, unit=u) for t, _, u, _ in TARGETS)
    paper = (
        "QM9 (Ramakrishnan et al., Sci. Data 2014) in PyTorch Geometric's format; protocol of "
        "Nash-MTL (Navon et al., ICML 2022), FAMO and LDC-MTL"
    )
    feature_dim = 64
    # Per-task gradients by K = 11 backward passes: the vmapped backward fails on CUDA
    # ("Batching rule not implemented for aten::_cudnn_rnn_backward": the GRU and Set2Set's
    # LSTM) and, on the CPU, costs 2.4x more time and twice the memory (docs/qm9.md).
    policies: ClassVar[dict[str, Any]] = {"jacobian_mode": "sequential"}
    protocol: QM9Protocol

    def __init__(self, protocol: Protocol, data_root: Path | None = None, seed: int = 0) -> None:
        super().__init__(protocol, data_root, seed)
        self._splits: dict[str, Tensor] | None = None
        self._scaler: Standardizer | None = None

    @classmethod
    def smoke_protocol(cls) -> dict[str, Any]:
        return {
            "epochs": 1,
            "max_steps": 2,
            "batch_size": 8,
            "n_test": 8,
            "n_val": 8,
            "n_train": 16,
        }

    # ---- data ----------------------------------------------------------------------------

    def check_data(self) -> list[str]:
        return check_files(self.data_root)

    def store(self) -> GraphStore:
        """The molecules, loaded through ``torch_geometric.datasets.QM9(data_root)``, which
        downloads PyG's files where they are missing; without network, a one-line
        :class:`DataUnavailable` says what to do instead."""
        try:
            return load_store(self.data_root)
        except DownloadFailed as error:
            lines = self.check_data() or [f"the files in {self.data_root} are incomplete"]
            raise DataUnavailable(f"{self.name}: {error}: " + " | ".join(lines)) from None

    def splits(self) -> dict[str, Tensor]:
        if self._splits is None:
            p = self.protocol
            n = len(self.store())
            self._splits = split_indices(n, p.n_test, p.n_val, p.n_train, p.split_seed)
        return self._splits

    def scaler(self) -> Standardizer:
        if self._scaler is None:
            if self.protocol.scale_y:
                self._scaler = Standardizer.fit(self.store().y[self.splits()["train"]])
            else:
                self._scaler = Standardizer.identity(len(TASKS))
        return self._scaler

    def batches(self, split: Split, epoch: int = 0) -> Iterator[Any]:
        store, ids = self.store(), self.splits()[split]
        if split == "train":
            ids = ids[epoch_order(len(ids), self.seed, epoch)]
        size = self.protocol.batch_size
        for start in range(0, len(ids), size):
            yield store.batch(ids[start : start + size], self.protocol.graph)

    @classmethod
    def write_fixture(cls, root: Path) -> None:
        from mtlbench.datasets._qm9_fixture import write_fixture

        write_fixture(Path(root))

    # ---- model, losses, metrics ----------------------------------------------------------

    def build_model(self) -> MultiTaskModel:
        return MultiTaskModel(QM9Encoder(64), [nn.Linear(64, 1) for _ in TASKS])

    def model_input(self, batch: Any) -> Any:
        return batch

    def task_losses(self, outputs: list[Tensor], batch: Any) -> Tensor:
        pred = torch.cat(outputs, dim=1)
        target = self.scaler().encode(batch.y)
        return F.mse_loss(pred, target, reduction="none").mean(dim=0)

    def evaluator(self) -> Evaluator:
        return MAEEvaluator(self.scaler())


@register("qm9")
class QM9(_QM9Base):
    protocol_type = QM9Protocol
    description = "QM9: 11 molecular properties, NNConv+GRU+Set2Set on complete graphs"

    def reference(self) -> Reference | None:
        """The published STL MAEs, for the published split sizes only."""
        p = self.protocol
        if (p.n_test, p.n_val, p.n_train) == (10_000, 10_000, None):
            return PUBLISHED_STL
        return None


@register("qm9-small")
class QM9Small(_QM9Base):
    protocol_type = QM9SmallProtocol
    method_defaults_from = "qm9"
    description = "QM9 subset (3,000 molecules, bond graphs) for CPUs; same model and metrics"

    def __init__(self, protocol: Protocol, data_root: Path | None = None, seed: int = 0) -> None:
        # The same data as qm9 (default folder $MTLBENCH_DATA/qm9).
        super().__init__(protocol, data_root or default_data_root("qm9"), seed)


def prepare_from_qm9pack(root: Path, limit: int | None = None, progress: bool = True) -> dict:
    """Build ``QM9(root)``'s files offline from the ``qm9pack`` package with RDKit (the
    ``qm9`` extra); ``limit`` takes only the first molecules. Returns the summary: molecules
    read and written, how their bonds were found, the skipped ones by reason, timings. See
    ``datasets/_qm9_prepare.py`` and docs/qm9.md."""
    from mtlbench.datasets._qm9_prepare import prepare

    return prepare(Path(root), limit=limit, progress=progress)
