"""MultiDigits: data construction, splits, determinism, model, evaluator and a short training."""

from __future__ import annotations

import itertools
import time

import pytest
import torch
import torch.nn.functional as F

from mtlbench.benchmark import get
from mtlbench.datasets.multidigits import (
    JITTER,
    LEFT_CORNER,
    RIGHT_CORNER,
    MultiDigits,
    build,
    source_digits,
)

SMALL = {"n_train": 600, "n_val": 200, "n_test": 200}


def make(seed: int = 0, **options: object) -> MultiDigits:
    cls = get("multidigits")
    protocol = cls.default_protocol().replace(**{**SMALL, **options})
    return cls(protocol, None, seed)  # type: ignore[return-value]


def test_shapes_dtypes_ranges() -> None:
    bench = make()
    images, labels = source_digits()
    for split, n in (("train", 600), ("val", 200), ("test", 200)):
        d = bench.data()[split]
        assert d.images.shape == (n, 1, 16, 16) and d.images.dtype == torch.float32
        assert d.images.min() >= 0 and d.images.max() <= 1 and d.images.max() == 1
        for y, src in ((d.left, d.left_src), (d.right, d.right_src)):
            assert y.dtype == torch.int64 and y.shape == (n,)
            assert 0 <= y.min() and y.max() <= 9
            assert torch.equal(y, labels[src])
        assert len(d.left.unique()) == 10 and len(d.right.unique()) == 10


def test_canvas_layout() -> None:
    """Each image is the pixel-wise max of its two source digits at jittered corners, / 16."""
    images, _ = source_digits()
    d = make().data()["train"]
    shifts = range(-JITTER, JITTER + 1)
    for i in range(20):
        matches = 0
        for dr, dc, er, ec in itertools.product(shifts, repeat=4):
            canvas = torch.zeros(16, 16)
            r, c = LEFT_CORNER + dr, LEFT_CORNER + dc
            canvas[r : r + 8, c : c + 8] = images[d.left_src[i]]
            right = torch.zeros(16, 16)
            r, c = RIGHT_CORNER + er, RIGHT_CORNER + ec
            right[r : r + 8, c : c + 8] = images[d.right_src[i]]
            matches += torch.equal(torch.maximum(canvas, right) / 16, d.images[i, 0])
        assert matches >= 1


def test_splits_are_disjoint_in_source_digits() -> None:
    data = make(n_train=5000, n_val=2000, n_test=2000).data()
    used = {s: set(torch.cat([d.left_src, d.right_src]).tolist()) for s, d in data.items()}
    assert not used["train"] & used["val"]
    assert not used["train"] & used["test"]
    assert not used["val"] & used["test"]
    n = len(source_digits()[1])
    assert len(used["train"]) > 0.6 * n and len(used["val"]) > 0.1 * n
    assert len(used["train"] | used["val"] | used["test"]) <= n


def test_determinism_and_shuffling() -> None:
    a = build.__wrapped__(0, 300, 50, 50)
    b = build.__wrapped__(0, 300, 50, 50)
    c = build.__wrapped__(1, 300, 50, 50)
    for split in ("train", "val", "test"):
        assert torch.equal(a[split].images, b[split].images)
        assert torch.equal(a[split].left_src, b[split].left_src)
    assert not torch.equal(a["train"].images, c["train"].images)

    def first_labels(bench: MultiDigits, split: str = "train", epoch: int = 0) -> torch.Tensor:
        return next(iter(bench.batches(split, epoch)))[1]

    one, same, other = make(seed=0), make(seed=0), make(seed=1)
    assert one.data() is other.data()  # trial seeds share the data (and the cache)
    assert torch.equal(first_labels(one), first_labels(same))
    assert not torch.equal(first_labels(one), first_labels(other))
    assert not torch.equal(first_labels(one, epoch=0), first_labels(one, epoch=1))
    assert torch.equal(first_labels(one, "val"), first_labels(other, "val", epoch=3))
    assert torch.equal(first_labels(one, "test"), one.data()["test"].left[:256])
    seen = torch.cat([b[0] for b in one.batches("train", 2)])
    assert seen.shape[0] == 600


def test_build_is_fast() -> None:
    source_digits()
    start = time.perf_counter()
    build.__wrapped__(7, 10_000, 2_000, 2_000)
    assert time.perf_counter() - start < 1.0


def test_model_and_losses() -> None:
    bench = make()
    model = bench.build_model()
    batch = next(iter(bench.batches("train")))
    rep, outputs = model(bench.model_input(batch))
    assert rep.shape == (256, MultiDigits.feature_dim) and MultiDigits.feature_dim == 64
    assert [o.shape for o in outputs] == [(256, 10), (256, 10)]
    losses = bench.task_losses(outputs, batch)
    assert losses.shape == (2,)
    assert losses[1].item() == pytest.approx(F.cross_entropy(outputs[1], batch[2]).item())
    assert bench.reference() is None
    assert [m.name for m in bench.metrics] == ["left_acc", "right_acc"]
    assert all(m.higher_is_better for m in bench.metrics)
    smoke = MultiDigits.default_protocol().replace(**MultiDigits.smoke_protocol())
    assert smoke.epochs == 1 and smoke.n_train < 1000


def test_evaluator_counts() -> None:
    ev = make().evaluator()
    eye = torch.eye(10)
    # Batch 1: left 2/3 right, right 3/3 right. Batch 2: left 0/1, right 1/1.
    ev.update([eye[[1, 2, 3]], eye[[4, 5, 6]]], (None, torch.tensor([1, 2, 0]), torch.arange(4, 7)))
    ev.update([eye[[7]], eye[[8]]], (None, torch.tensor([9]), torch.tensor([8])))
    values = ev.compute()
    assert values["left_acc"] == pytest.approx(2 / 4)
    assert values["right_acc"] == pytest.approx(1.0)
    ce = F.cross_entropy(eye[[4, 5, 6, 8]], torch.tensor([4, 5, 6, 8])).item()
    assert values["right_loss"] == pytest.approx(ce)


def test_one_epoch_learns() -> None:
    torch.manual_seed(0)
    bench = make(n_train=5000, n_val=500, n_test=500, batch_size=32)
    model = bench.build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=bench.protocol.lr)
    model.train()
    for batch in bench.batches("train", 0):
        _, outputs = model(bench.model_input(batch))
        optimizer.zero_grad()
        bench.task_losses(outputs, batch).sum().backward()
        optimizer.step()
    model.eval()
    ev = bench.evaluator()
    with torch.no_grad():
        for batch in bench.batches("test"):
            ev.update(model(bench.model_input(batch))[1], batch)
    values = ev.compute()
    assert values["left_acc"] > 0.3 and values["right_acc"] > 0.3
