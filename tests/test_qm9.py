"""QM9: complete graphs, targets and units, standardisation, splits, model, training, the offline
rebuild from qm9pack (when installed), and the missing-data message."""

from __future__ import annotations

import importlib.util
import math
import shutil
import urllib.error
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Batch, Data

from mtlbench.benchmark import DataUnavailable, get
from mtlbench.datasets import _qm9pack
from mtlbench.datasets._qm9_fixture import write_fixture
from mtlbench.datasets._qm9_graphs import GraphStore, complete_graph
from mtlbench.datasets._qm9_loading import split_indices
from mtlbench.datasets._qm9_model import QM9Encoder
from mtlbench.datasets._qm9_targets import (
    PUBLISHED_STL,
    TARGET_INDEX,
    TASKS,
    MAEEvaluator,
    Standardizer,
)
from mtlbench.registry import ConfigError

HAS_EXTRA = all(importlib.util.find_spec(m) is not None for m in ("qm9pack", "rdkit"))


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("qm9")
    get("qm9").write_fixture(root)
    return root


def make(root: Path, name: str = "qm9", seed: int = 0, **options: object):
    cls = get(name)
    sizes = {"n_test": 10, "n_val": 10, "n_train": None, "batch_size": 8}
    return cls(cls.default_protocol().replace(**{**sizes, **options}), root, seed)


# ---- complete graphs -------------------------------------------------------------------------


def three_atoms() -> Data:
    # Atoms at (0,0,0), (1,0,0), (1,2,0); bonds 0-1 single and 1-2 double, both directions.
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    edge_attr = torch.tensor([[1.0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0]])
    pos = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 2, 0]])
    return Data(x=torch.zeros(3, 11), edge_index=edge_index, edge_attr=edge_attr, pos=pos)


def test_complete_graph_by_hand() -> None:
    g = complete_graph(three_atoms())
    r5 = math.sqrt(5.0)
    expected = {  # (i, j): bond one-hot + distance
        (0, 1): [1, 0, 0, 0, 1.0],
        (0, 2): [0, 0, 0, 0, r5],
        (1, 0): [1, 0, 0, 0, 1.0],
        (1, 2): [0, 1, 0, 0, 2.0],
        (2, 0): [0, 0, 0, 0, r5],
        (2, 1): [0, 1, 0, 0, 2.0],
    }
    assert g.edge_index.shape == (2, 3 * 2) and g.edge_attr.shape == (6, 5)
    assert [tuple(e) for e in g.edge_index.t().tolist()] == list(expected)
    assert torch.allclose(g.edge_attr, torch.tensor(list(expected.values())))
    assert three_atoms().edge_index.shape == (2, 4)  # the input is not modified


def test_batch_of_complete_graphs_equals_per_graph(fixture_root: Path) -> None:
    bench = make(fixture_root)
    store = bench.store()
    ids = torch.tensor([3, 0, 7])
    batch = store.batch(ids)
    assert batch.num_graphs == 3 and batch.edge_attr.shape[1] == 5
    sizes = (store.node_ptr[ids + 1] - store.node_ptr[ids]).tolist()
    assert batch.edge_index.shape[1] == sum(n * (n - 1) for n in sizes)
    offset, start = 0, 0
    for g, n in zip(ids.tolist(), sizes, strict=True):
        a, b = int(store.edge_ptr[g]), int(store.edge_ptr[g + 1])
        a_n = int(store.node_ptr[g])
        single = complete_graph(
            Data(
                x=store.x[a_n : a_n + n],
                edge_index=store.edge_index[:, a:b],
                edge_attr=store.edge_attr[a:b],
                pos=store.pos[a_n : a_n + n],
            )
        )
        e = n * (n - 1)
        assert torch.equal(batch.edge_index[:, start : start + e], single.edge_index + offset)
        assert torch.allclose(batch.edge_attr[start : start + e], single.edge_attr)
        offset, start = offset + n, start + e
    bonds = store.batch(ids, "bonds")
    assert bonds.edge_index.shape[1] == int((store.edge_ptr[ids + 1] - store.edge_ptr[ids]).sum())
    assert bonds.edge_attr.shape[1] == 5


# ---- targets, units, standardisation --------------------------------------------------------


def test_target_selection_and_reference_order(fixture_root: Path) -> None:
    assert TARGET_INDEX == (0, 1, 2, 3, 5, 6, 12, 13, 14, 15, 11)
    bench = make(fixture_root)
    assert [m.name for m in bench.metrics] == [f"mae_{t}" for t in TASKS]
    assert not any(m.higher_is_better for m in bench.metrics)
    assert set(PUBLISHED_STL.values) == {m.name for m in bench.metrics}
    assert PUBLISHED_STL.values["mae_homo"] == 60.576 and PUBLISHED_STL.values["mae_cv"] == 0.07212
    # The store selects PyG's columns in the reference order.
    ds = Data(
        x=torch.zeros(3, 11),
        pos=torch.zeros(3, 3),
        edge_index=torch.zeros(2, 0).long(),
        edge_attr=torch.zeros(0, 4),
        y=torch.arange(19.0).view(1, 19),
    )

    class Fake:
        _data = Batch.from_data_list([ds, ds])
        slices = {"x": torch.tensor([0, 3, 6]), "edge_index": torch.tensor([0, 0, 0])}

    store = GraphStore.from_pyg(Fake())
    assert store.y[0].tolist() == [float(i) for i in TARGET_INDEX]


def test_pyg_storage_matches_the_public_api(fixture_root: Path) -> None:
    """``GraphStore.from_pyg`` reads PyG's private collated storage (``_data``, ``slices``;
    torch-geometric pinned in pyproject.toml): every molecule of the store must equal
    ``dataset[i]``, PyG's public view of it, so that a change of that layout fails here."""
    from torch_geometric.datasets import QM9

    dataset = QM9(str(fixture_root))
    store = GraphStore.from_pyg(dataset)
    assert len(store) == len(dataset) == 40
    for i in range(len(dataset)):
        graph = dataset[i]
        nodes = slice(int(store.node_ptr[i]), int(store.node_ptr[i + 1]))
        edges = slice(int(store.edge_ptr[i]), int(store.edge_ptr[i + 1]))
        assert torch.equal(store.x[nodes], graph.x.float())
        assert torch.equal(store.pos[nodes], graph.pos.float())
        assert torch.equal(store.edge_index[:, edges], graph.edge_index)
        assert torch.equal(store.edge_attr[edges], graph.edge_attr.float())
        assert torch.equal(store.y[i], graph.y[0, list(TARGET_INDEX)])


def test_mae_units_by_hand() -> None:
    """Errors of 0.001 eV read as 1 meV; other targets keep their units."""
    f64 = torch.float64
    y = torch.randn(2, 11, dtype=f64) * 5
    delta = torch.tensor(
        [0.1, 0.2, 0.003, 0.004, 0.5, 0.006, 0.007, 0.008, 0.009, 0.010, 0.011], dtype=f64
    )
    expected = [0.1, 0.2, 3.0, 4.0, 0.5, 6.0, 7.0, 8.0, 9.0, 10.0, 0.011]
    scaler = Standardizer(torch.rand(11, dtype=f64) * 10 - 5, torch.rand(11, dtype=f64) + 0.5)
    pred = torch.stack([y[0] + delta, y[1] - delta])  # |error| = delta in both rows
    outputs = list(scaler.encode(pred).split(1, dim=1))
    ev = MAEEvaluator(scaler)
    ev.update(outputs[:], Data(y=y))
    values = ev.compute()
    assert list(values) == [f"mae_{t}" for t in TASKS]
    for name, want in zip(values, expected, strict=True):
        assert values[name] == pytest.approx(want, rel=1e-9), name


def test_standardisation_round_trip_and_train_statistics(fixture_root: Path) -> None:
    y = torch.randn(50, 11) * torch.linspace(0.1, 100, 11) + torch.linspace(-50, 50, 11)
    s = Standardizer.fit(y)
    z = s.encode(y)
    assert torch.allclose(z.mean(0), torch.zeros(11), atol=1e-4)
    assert torch.allclose(z.std(0), torch.ones(11), atol=1e-4)
    assert torch.allclose(s.decode(z), y, atol=1e-4)
    bench = make(fixture_root)
    train_y = bench.store().y[bench.splits()["train"]]
    assert torch.allclose(bench.scaler().mean, train_y.mean(0))
    assert torch.allclose(bench.scaler().std, train_y.std(0))
    off = make(fixture_root, scale_y=False).scaler()
    assert torch.equal(off.mean, torch.zeros(11)) and torch.equal(off.std, torch.ones(11))


# ---- splits ---------------------------------------------------------------------------------


def test_split_sizes_and_seeding(fixture_root: Path) -> None:
    a = make(fixture_root).splits()
    assert {k: len(v) for k, v in a.items()} == {"train": 20, "val": 10, "test": 10}
    assert sorted(torch.cat(list(a.values())).tolist()) == list(range(40))
    b = make(fixture_root, seed=5).splits()  # the trial seed does not move the split
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = make(fixture_root, split_seed=1).splits()
    assert not torch.equal(a["test"], c["test"])
    # test = the first n_test of the seeded permutation, val the next n_val
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a["test"], perm[:10]) and torch.equal(a["val"], perm[10:20])
    assert len(make(fixture_root, n_train=7).splits()["train"]) == 7
    with pytest.raises(ConfigError, match="does not fit"):
        split_indices(40, 30, 10, None, 0)
    # Training batches: shuffled by (seed, epoch), evaluation batches in order.
    bench = make(fixture_root)
    first = [b.y for b in bench.batches("train", 0)]
    again = [b.y for b in make(fixture_root).batches("train", 0)]
    other = [b.y for b in bench.batches("train", 1)]
    assert all(torch.equal(p, q) for p, q in zip(first, again, strict=True))
    assert not torch.equal(torch.cat(first), torch.cat(other))
    val = torch.cat([b.y for b in bench.batches("val")])
    assert torch.equal(val, bench.store().y[a["val"]])


# ---- model and training ---------------------------------------------------------------------


def test_model_shapes_and_nnconv_equivalence(fixture_root: Path) -> None:
    bench = make(fixture_root)
    batch = next(iter(bench.batches("train")))
    model = bench.build_model()
    rep, outputs = model(bench.model_input(batch))
    assert rep.shape == (8, 64) and bench.feature_dim == 64
    assert len(outputs) == 11 and all(o.shape == (8, 1) for o in outputs)
    n_shared = sum(p.numel() for p in model.shared_parameters())
    assert n_shared == sum(p.numel() for p in model.encoder.parameters())
    # Weights computed once and reused == torch_geometric's NNConv.forward.
    enc: QM9Encoder = model.encoder  # type: ignore[assignment]
    x = torch.randn(batch.num_nodes, 64)
    weights = enc.conv.nn(batch.edge_attr).view(-1, 64, 64)
    ours = enc.message_passing(x, batch.edge_index, weights)
    theirs = enc.conv(x, batch.edge_index, batch.edge_attr)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_one_training_step(fixture_root: Path) -> None:
    torch.manual_seed(0)
    bench = make(fixture_root)
    model = bench.build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = bench.to_device(next(iter(bench.batches("train"))), torch.device("cpu"))
    _, outputs = model(bench.model_input(batch))
    losses = bench.task_losses(outputs, batch)
    assert losses.shape == (11,) and torch.isfinite(losses).all()
    before = [p.detach().clone() for p in model.parameters()]
    losses.sum().backward()
    assert all(p.grad is not None for p in model.shared_parameters())
    optimizer.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    model.eval()
    ev = bench.evaluator()
    with torch.no_grad():
        for b in bench.batches("val"):
            ev.update(model(bench.model_input(b))[1], b)
    assert set(ev.compute()) == {m.name for m in bench.metrics}


def test_protocols_and_references(fixture_root: Path) -> None:
    full = get("qm9").default_protocol()
    assert (full.epochs, full.batch_size, full.lr, full.scheduler) == (
        300,
        120,
        1e-3,
        "plateau:0.7:5:1e-5",
    )
    assert full.selection == "best_val_delta_m" and full.scale_y and full.graph == "complete"
    assert get("qm9")(full, fixture_root).reference() is PUBLISHED_STL
    assert make(fixture_root).reference() is None  # other split sizes: no published STL
    small = get("qm9-small")
    assert small(small.default_protocol()).data_root == get("qm9")(full).data_root
    assert small(small.default_protocol(), fixture_root).reference() is None


# ---- data preparation and missing data ------------------------------------------------------


def test_unit_constants_are_pygs() -> None:
    from torch_geometric.datasets import qm9 as pyg

    assert _qm9pack.HARTREE_TO_EV == pyg.HAR2EV and _qm9pack.KCALMOL_TO_EV == pyg.KCALMOL2EV
    # Both conversion vectors are in PyG's target order (applied after the reordering).
    assert _qm9pack.PYG_CONVERSION == pytest.approx(pyg.conversion.tolist(), rel=1e-7)
    assert _qm9pack.PYG_ORDER == tuple(range(3, 19)) + (0, 1, 2)
    # The atom reference energies are those of PyG's atomref (eV) for U0, U, H, G.
    for k, target in enumerate((7, 8, 9, 10)):
        for z, element in zip((1, 6, 7, 8, 9), "HCNOF", strict=True):
            ours = _qm9pack.ATOMREF_HARTREE[element][k] * pyg.HAR2EV
            assert ours == pytest.approx(pyg.atomrefs[target][(1, 6, 7, 8, 9).index(z)], abs=1e-4)


@pytest.mark.skipif(not HAS_EXTRA, reason="qm9pack and rdkit are not installed (the qm9 extra)")
def test_prepare_from_qm9pack_loads_through_pyg(tmp_path: Path) -> None:
    from torch_geometric.datasets import QM9

    from mtlbench.datasets.qm9 import prepare_from_qm9pack

    summary = prepare_from_qm9pack(tmp_path, limit=20, progress=False)
    assert (
        summary["molecules_read"] == 20
        and summary["written"] + sum(summary["skipped"].values()) == 20
    )
    ds = QM9(str(tmp_path))
    assert len(ds) == summary["written"] == 20
    by_name = {ds[i].name: ds[i] for i in range(len(ds))}
    methane, water = by_name["gdb_1"], by_name["gdb_3"]
    # Methane: C + 4 H, 4 single C-H bonds (both directions), C has 4 hydrogens.
    assert methane.z.tolist() == [6, 1, 1, 1, 1] and methane.edge_index.shape == (2, 8)
    assert methane.x[0].tolist() == [0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 4]
    assert methane.edge_attr[:, 0].sum() == 8
    # qm9pack's row 1: mu 0 D, alpha 13.21 a0^3, HOMO -0.3877 Ha, U0 -40.47893 Ha.
    y = methane.y[0]
    assert y[0] == 0 and y[1] == pytest.approx(13.21)
    assert y[2] == pytest.approx(-0.3877 * 27.211386246, rel=1e-6)
    assert y[7] == pytest.approx(-40.47893 * 27.211386246, rel=1e-6)
    # Atomisation energy U0: MoleculeNet's gdb9.sdf.csv has -395.999594594 kcal/mol.
    assert y[12] == pytest.approx(-395.999594594 * 0.04336414, rel=1e-6)
    # Water: O with 2 hydrogens, 4 directed O-H bonds.
    assert water.z.tolist() == [8, 1, 1] and water.x[0, 10] == 2 and water.edge_index.shape[1] == 4
    # torch_geometric's own QM9.process, run on the raw files written, gives the same tensors.
    shutil.copytree(tmp_path / "raw", tmp_path / "again" / "raw")
    again = QM9(str(tmp_path / "again"))
    for key in ("x", "edge_index", "edge_attr", "y", "pos", "z"):
        assert torch.equal(ds._data[key], again._data[key]), key
    assert ds._data.name == again._data.name and ds._data.smiles == again._data.smiles
    with pytest.raises(DataUnavailable, match="already exists"):
        prepare_from_qm9pack(tmp_path, limit=2, progress=False)
    # And the benchmark trains on it.
    bench = make(tmp_path, n_test=5, n_val=5)
    batch = next(iter(bench.batches("train")))
    assert torch.isfinite(bench.task_losses(bench.build_model()(batch)[1], batch)).all()


def test_missing_extra_message(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "qm9pack" else real(n, *a)
    )
    with pytest.raises(DataUnavailable, match=r"mtlbench\[qm9\]"):
        _qm9pack.qm9pack_data_dir()


def test_missing_data_is_a_one_line_message(tmp_path: Path, monkeypatch) -> None:
    """No data and no network: PyG's download fails and the benchmark says, in one line, how
    to prepare the data offline. (The download is replaced by a failing one, so that the test
    never downloads anything, with or without network.)"""
    import torch_geometric.datasets.qm9 as pyg

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(pyg, "download_url", offline)
    bench = make(tmp_path / "nothing")
    lines = bench.check_data()
    assert len(lines) == 1 and "mtlbench data prepare qm9 --from qm9pack" in lines[0]
    with pytest.raises(DataUnavailable) as error:
        next(iter(bench.batches("train")))
    message = str(error.value)
    assert "\n" not in message and "download failed (URLError: no network)" in message
    assert f"mtlbench data prepare qm9 --from qm9pack --root {tmp_path / 'nothing'}" in message


def test_fixture_writes_the_pyg_format(tmp_path: Path) -> None:
    write_fixture(tmp_path, n=5)
    names = {p.name for p in (tmp_path / "raw").iterdir()}
    assert names == {"gdb9.sdf", "gdb9.sdf.csv", "uncharacterized.txt", "qm9_v3.pt"}
    from torch_geometric.datasets import QM9

    ds = QM9(str(tmp_path))
    assert len(ds) == 5 and ds[0].x.shape[1] == 11 and ds[0].y.shape == (1, 19)
    assert ds[0].edge_attr.shape[1] == 4 and ds[0].edge_index.dtype == torch.long
    raw = torch.load(tmp_path / "raw" / "qm9_v3.pt", weights_only=True)
    assert len(raw) == 5 and torch.equal(raw[2]["x"], ds[2].x)


def test_smoke_run_through_the_trainer(fixture_root: Path, tmp_path: Path) -> None:
    """`mtlbench run --benchmark qm9 --method mgda --data-root FIXTURE --smoke` trains, evaluates
    and writes a record; per-task gradients come from K backward passes (the QM9 policy)."""
    import subprocess
    import sys

    from mtlbench.trial import TrialConfig, resolve

    for name in ("qm9", "qm9-small"):
        assert resolve(TrialConfig(name, "mgda")).policies.jacobian_mode == "sequential"
    args = ["run", "-b", "qm9", "-m", "mgda", "--data-root", str(fixture_root), "--smoke"]
    proc = subprocess.run(
        [sys.executable, "-m", "mtlbench.cli", *args, "--out", str(tmp_path), "-q"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("done")
    assert len(list(tmp_path.glob("*.json"))) == 1
