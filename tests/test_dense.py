"""NYU-v2 and Cityscapes: metrics on hand-computed cases, losses, augmentation, loaders on their
fixtures, SegNet-MTAN, a training step, missing data and the published references."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtlbench.benchmark import DataUnavailable, get
from mtlbench.datasets._dense_data import NpyDataset, carve_validation
from mtlbench.datasets._dense_losses import depth_loss, normal_loss, segmentation_loss
from mtlbench.datasets._dense_metrics import (
    DenseEvaluator,
    DepthAccumulator,
    NormalAccumulator,
    confusion_matrix,
    miou,
    normal_angles,
    pixel_accuracy,
)
from mtlbench.datasets._dense_transforms import ScaleCropFlip, augment, draw_augmentation
from mtlbench.datasets._sampling import EpochSampler, epoch_batches, epoch_order
from mtlbench.datasets._segnet_mtan import segnet_mtan
from mtlbench.registry import ConfigError


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """SegNet-MTAN steps are much slower with two threads when other processes share the two
    cores (OpenMP oversubscription); one thread keeps this file fast either way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    roots = {}
    for name in ("nyuv2", "cityscapes"):
        root = tmp_path_factory.mktemp(name)
        get(name).write_fixture(root)
        roots[name] = root
    return roots


def make(name: str, root: Path, seed: int = 0, **options: object):  # noqa: ANN201
    cls = get(name)
    protocol = cls.default_protocol().replace(num_workers=0, **options)
    return cls(protocol, root, seed)


# ---- metrics ---------------------------------------------------------------------------------


def test_confusion_matrix_miou_and_pixel_accuracy_by_hand() -> None:
    # Valid pairs (gt, pred): (0,0) (0,1) (1,1) (1,1) (2,0); -1 and 5 are ignored.
    target = torch.tensor([0, 0, 1, 1, 2, -1, 5])
    pred = torch.tensor([0, 1, 1, 1, 0, 2, 0])
    m = confusion_matrix(pred, target, 3)
    assert m.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # IoU: class 0: 1 / (2 + 2 - 1); class 1: 2 / (2 + 3 - 2); class 2: 0 / (1 + 0 - 0).
    assert miou(m) == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert pixel_accuracy(m) == pytest.approx(3 / 5)
    # Accumulating over two batches is the same as one pass.
    split = confusion_matrix(pred[:3], target[:3], 3) + confusion_matrix(pred[3:], target[3:], 3)
    assert torch.equal(split, m)
    # A class in neither labels nor predictions is left out of the mean.
    m4 = confusion_matrix(pred, target, 4)
    assert miou(m4) == pytest.approx(1 / 3)


def test_depth_errors_by_hand_per_batch_and_pooled() -> None:
    pred1 = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    gt1 = torch.tensor([[2.0, 0.0], [1.0, 4.0]]).view(1, 1, 2, 2)  # 0 = missing
    pred2 = torch.tensor([[5.0, 9.0]]).view(1, 1, 1, 2)
    gt2 = torch.tensor([[1.0, 0.0]]).view(1, 1, 1, 2)
    # Batch 1: |1-2| = 1, |3-1| = 2, |4-4| = 0 -> abs 1, rel (1/2 + 2/1 + 0) / 3.
    # Batch 2: |5-1| = 4 -> abs 4, rel 4.
    per_batch = DepthAccumulator("per_batch")
    pooled = DepthAccumulator("pooled")
    for acc in (per_batch, pooled):
        acc.update(pred1, gt1)
        acc.update(pred2, gt2)
    assert per_batch.compute() == pytest.approx(((1 + 4) / 2, (2.5 / 3 + 4) / 2))
    assert pooled.compute() == pytest.approx(((3 + 4) / 4, (2.5 + 4) / 4))
    empty = DepthAccumulator()
    empty.update(pred2, torch.zeros_like(gt2))  # no valid pixel: skipped, not NaN
    empty.update(pred1, gt1)
    assert empty.compute() == pytest.approx((1.0, 2.5 / 3))


def _normals(angles_deg: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions at the given angles from gt (0, 0, 1), plus one invalid (zero) gt pixel."""
    rad = torch.tensor(angles_deg, dtype=torch.float64).deg2rad()
    pred = torch.stack([rad.sin(), torch.zeros_like(rad), rad.cos()])
    pred = torch.cat([pred, torch.tensor([[1.0], [0.0], [0.0]], dtype=torch.float64)], dim=1)
    gt = torch.zeros_like(pred)
    gt[2, :-1] = 1.0
    return pred.float().view(1, 3, 1, -1), gt.float().view(1, 3, 1, -1)


def test_normal_angles_at_known_vectors() -> None:
    pred, gt = _normals([0.0, 90.0, 45.0])
    assert normal_angles(pred, gt).tolist() == pytest.approx([0.0, 90.0, 45.0], abs=1e-3)
    acc = NormalAccumulator("per_batch")
    acc.update(pred, gt)
    mean, med, w11, w22, w30 = acc.compute()
    assert (mean, med) == pytest.approx((45.0, 45.0), abs=1e-3)
    assert (w11, w22, w30) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    # An even count: numpy's median (mean of the two middle values); thresholds are strict.
    pred, gt = _normals([0.0, 10.0, 45.0, 90.0, 25.0, 29.0])
    acc = NormalAccumulator("per_batch")
    acc.update(pred, gt)
    mean, med, w11, w22, w30 = acc.compute()
    assert mean == pytest.approx(199 / 6, abs=1e-3)
    assert med == pytest.approx((25 + 29) / 2, abs=1e-3)
    assert (w11, w22, w30) == pytest.approx((2 / 6, 2 / 6, 4 / 6))


def test_normal_statistics_per_batch_average_versus_pooled() -> None:
    a = _normals([0.0, 90.0, 45.0])
    b = _normals([10.0, 20.0])
    per_batch, pooled = NormalAccumulator("per_batch"), NormalAccumulator("pooled")
    for acc in (per_batch, pooled):
        acc.update(*a)
        acc.update(*b)
    # Per batch: (mean 45, median 45, 1/3 within) and (15, 15, 1/2), averaged.
    mean, med, w11, w22, w30 = per_batch.compute()
    assert (mean, med) == pytest.approx((30.0, 30.0), abs=1e-3)
    assert w11 == pytest.approx((1 / 3 + 1 / 2) / 2)
    # Pooled over the five angles 0, 10, 20, 45, 90; the median from the 0.01-degree histogram.
    mean, med, w11, w22, w30 = pooled.compute()
    assert mean == pytest.approx(165 / 5, abs=1e-3)
    assert med == pytest.approx(20.0, abs=0.01)
    assert (w11, w22, w30) == pytest.approx((2 / 5, 3 / 5, 3 / 5))


def test_evaluator_on_perfect_predictions() -> None:
    label = torch.tensor([[[0, 1], [2, -1]]])
    log_probs = F.one_hot(label.clamp_min(0), 3).permute(0, 3, 1, 2).float().log()
    depth = torch.tensor([[[[1.0, 0.0], [2.0, 3.0]]]])
    normal = torch.zeros(1, 3, 2, 2)
    normal[:, 2] = 1.0
    ev = DenseEvaluator(3, normals=True)
    ev.update([log_probs, depth, normal], (None, label, depth, normal))
    values = ev.compute()
    assert values["seg_miou"] == 1 and values["seg_pixacc"] == 1
    assert values["depth_abs_err"] == 0 and values["depth_rel_err"] == 0
    assert values["normal_mean"] == pytest.approx(0, abs=1e-2)
    assert values["normal_within_11_25"] == 1


# ---- losses ----------------------------------------------------------------------------------


def test_losses_by_hand() -> None:
    log_probs = torch.log_softmax(
        torch.randn(1, 3, 2, 2, generator=torch.Generator().manual_seed(0)), 1
    )
    label = torch.tensor([[[0, 2], [-1, 1]]])
    expected = -(log_probs[0, 0, 0, 0] + log_probs[0, 2, 0, 1] + log_probs[0, 1, 1, 1]) / 3
    assert segmentation_loss(log_probs, label) == pytest.approx(float(expected))
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    gt = torch.tensor([[[[2.0, 0.0], [1.0, 4.0]]]])
    assert float(depth_loss(pred, gt)) == pytest.approx(1.0)
    pred_n, gt_n = _normals([0.0, 90.0])
    # dots 1 and 0 over the two valid pixels.
    assert float(normal_loss(pred_n, gt_n)) == pytest.approx(1 - 0.5, abs=1e-6)


# ---- augmentation ----------------------------------------------------------------------------


def _sample(h: int = 6, w: int = 6) -> dict[str, torch.Tensor]:
    cols = torch.arange(w, dtype=torch.float32).expand(h, w)
    return {
        "image": torch.stack([cols, cols * 2, cols * 3]),
        "label": torch.arange(h * w, dtype=torch.float32).view(h, w),
        "depth": torch.full((1, h, w), 3.0),
        "normal": torch.tensor([0.6, 0.0, 0.8]).view(3, 1, 1).expand(3, h, w).clone(),
    }


def test_scale_crop_divides_depth_and_flip_negates_normal_x() -> None:
    s = _sample()
    out = augment(s, ScaleCropFlip(scale=1.5, top=1, left=2, flip=True))
    assert torch.allclose(out["depth"], torch.full((1, 6, 6), 2.0))  # 3 / 1.5
    assert torch.allclose(out["normal"][0], torch.full((6, 6), -0.6))
    assert torch.allclose(out["normal"][1:], s["normal"][1:])
    # Nearest resize of the 4 x 4 crop at (1, 2): source index floor(i * 4 / 6); then flip.
    src = torch.tensor([0, 0, 1, 2, 2, 3])
    crop = s["label"][1:5, 2:6]
    assert torch.equal(out["label"], crop[src][:, src].flip(-1))
    # Bilinear with align_corners maps the crop's end columns (2 and 5) to the image's ends.
    assert out["image"][0, 0, 0] == pytest.approx(5.0) and out["image"][0, 0, -1] == pytest.approx(
        2.0
    )
    # Scale 1, no flip: the identity.
    same = augment(s, ScaleCropFlip(scale=1.0, top=0, left=0, flip=False))
    assert all(torch.equal(same[k], s[k]) for k in s)


def test_draw_augmentation_is_seeded_and_in_range() -> None:
    draws = [draw_augmentation(torch.Generator().manual_seed(i), 288, 384) for i in range(200)]
    again = [draw_augmentation(torch.Generator().manual_seed(i), 288, 384) for i in range(200)]
    assert draws == again
    assert {d.scale for d in draws} == {1.0, 1.2, 1.5}
    assert 0.35 < np.mean([d.flip for d in draws]) < 0.65
    for d in draws:
        assert 0 <= d.top <= 288 - int(288 / d.scale) and 0 <= d.left <= 384 - int(384 / d.scale)


def test_carve_validation() -> None:
    train, val = carve_validation(795, 0.1, 0)
    assert len(val) == 80 and len(train) == 715 and not set(train) & set(val)
    assert carve_validation(795, 0.1, 0) == (train, val)
    assert carve_validation(795, 0.1, 1)[1] != val
    assert carve_validation(8, 0.0, 0) == (list(range(8)), [])


# ---- loaders on the fixtures -----------------------------------------------------------------


def test_one_epoch_order_for_every_benchmark() -> None:
    """Epoch ``e`` of seed ``s`` visits ``randperm(n)`` drawn from a generator seeded by
    numpy's ``SeedSequence([s, e])`` (datasets/_sampling.py), whether through a loader's
    sampler (NYU-v2, Cityscapes, CelebA), in-memory tensors (MultiDigits, MultiMNIST, Yeast)
    or QM9's index batches; evaluation splits are in order."""
    n, seed, epoch = 10, 3, 2
    state = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    want = torch.randperm(n, generator=torch.Generator().manual_seed(state))
    assert torch.equal(epoch_order(n, seed, epoch), want)
    sampler = EpochSampler(n, True, seed)
    sampler.set_epoch(epoch)
    assert list(sampler) == [(i, epoch) for i in want.tolist()]
    batches = epoch_batches([torch.arange(n)], 4, True, seed, epoch)
    assert torch.equal(torch.cat([b[0] for b in batches]), want)
    assert torch.equal(epoch_order(n, seed, epoch, shuffle=False), torch.arange(n))
    assert not torch.equal(epoch_order(n, seed, epoch + 1), want)


def test_fixture_files_are_in_mtan_format(fixtures: dict[str, Path]) -> None:
    root = fixtures["nyuv2"]
    image = np.load(root / "train/image/0.npy")
    assert image.shape == (32, 64, 3) and image.dtype == np.float64
    assert 0 <= image.min() and image.max() <= 1
    label = np.load(root / "train/label/0.npy")
    assert label.shape == (32, 64) and set(np.unique(label)) <= set(range(-1, 13))
    assert np.load(root / "train/depth/0.npy").shape == (32, 64, 1)
    normal = np.load(root / "train/normal/0.npy")
    norms = np.linalg.norm(normal, axis=-1)
    assert np.allclose(norms[norms > 0], 1) and (norms == 0).any()
    assert (fixtures["cityscapes"] / "val/label_7/3.npy").is_file()
    for r in fixtures.values():
        assert sum(p.stat().st_size for p in r.rglob("*.npy")) < 5e6


@pytest.mark.parametrize("name", ["nyuv2", "cityscapes"])
def test_loader_shapes_dtypes_ranges_and_splits(fixtures: dict[str, Path], name: str) -> None:
    bench = make(name, fixtures[name], batch_size=3)
    n_classes = bench.n_classes
    sizes = {}
    for split in ("train", "val", "test"):
        sizes[split] = 0
        for batch in bench.batches(split, 0):
            image, label, depth, *rest = batch
            b = image.shape[0]
            sizes[split] += b
            assert image.shape == (b, 3, 32, 64) and image.dtype == torch.float32
            assert label.shape == (b, 32, 64) and label.dtype == torch.int64
            assert depth.shape == (b, 1, 32, 64) and depth.dtype == torch.float32
            assert -1 <= label.min() and label.max() < n_classes and depth.min() >= 0
            assert len(rest) == (1 if name == "nyuv2" else 0)
            if rest:
                assert rest[0].shape == (b, 3, 32, 64)
    # 8 training files: round(0.1 * 8) = 1 held out; MTAN's 4 val files are the test split.
    assert sizes == {"train": 7, "val": 1, "test": 4}
    # Evaluation batches are the stored arrays, unchanged and in file order.
    test = next(iter(bench.batches("test")))
    raw = np.load(fixtures[name] / "val/image/0.npy")
    assert torch.equal(test[0][0], torch.from_numpy(raw).float().permute(2, 0, 1))


def test_training_batches_are_augmented_and_reproducible(fixtures: dict[str, Path]) -> None:
    root = fixtures["nyuv2"]
    bench = make("nyuv2", root)
    data = NpyDataset(root / "train", [0], bench.folders, augmented=True, seed=3)
    plain = NpyDataset(root / "train", [0], bench.folders, augmented=False, seed=3)
    epochs = [data[(0, e)] for e in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(epochs[0], data[(0, 0)], strict=True))
    assert any(not torch.equal(e[0], plain[(0, 0)][0]) for e in epochs)
    # Unaugmented sample = the file; normals keep unit length or zero.
    raw = torch.from_numpy(np.load(root / "train/normal/0.npy")).float().permute(2, 0, 1)
    assert torch.equal(plain[(0, 0)][3], raw)
    # Same (seed, epoch): same order and same augmentation; another epoch: another order.
    a = [b[0] for b in make("nyuv2", root, seed=1).batches("train", 2)]
    b = [b[0] for b in make("nyuv2", root, seed=1).batches("train", 2)]
    c = [b[0] for b in make("nyuv2", root, seed=1).batches("train", 3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    # augment=False: the training batches are stored files.
    off = make("nyuv2", root, augment=False, batch_size=8)
    images = next(iter(off.batches("train", 0)))[0]
    files = {tuple(np.load(p).ravel()[:5]) for p in (root / "train/image").glob("*.npy")}
    for x in images:
        assert tuple(x.permute(1, 2, 0).numpy().ravel()[:5].astype(np.float64)) in {
            tuple(np.float32(v) for v in f) for f in files
        }


def test_validation_fraction_zero(fixtures: dict[str, Path]) -> None:
    root = fixtures["cityscapes"]
    with pytest.raises(ConfigError, match="no validation split"):
        make("cityscapes", root, val_fraction=0.0)
    bench = make("cityscapes", root, val_fraction=0.0, selection="last10_test_mean")
    files = bench.split_files()
    assert files["val"] == files["test"] == ("val", [0, 1, 2, 3])
    assert files["train"] == ("train", list(range(8)))


# ---- model and a training step ---------------------------------------------------------------


def test_segnet_mtan_shapes_and_parameter_split() -> None:
    torch.manual_seed(0)
    model = segnet_mtan([(13, "log_softmax"), (1, "none"), (3, "l2_normalize")]).eval()
    n_shared = sum(p.numel() for p in model.shared_parameters())
    assert 44_000_000 < n_shared < 44_200_000  # MTAN on SegNet: about 44M parameters
    heads = [sum(p.numel() for p in h.parameters()) for h in model.heads]
    assert heads == [64 * 64 * 9 + 64 + 64 * c + c for c in (13, 1, 3)]
    with torch.no_grad():
        rep, (seg, depth, normal) = model(torch.rand(1, 3, 32, 64))
    assert rep.shape == (1, 64, 32, 64)
    assert seg.shape == (1, 13, 32, 64) and depth.shape == (1, 1, 32, 64)
    assert torch.allclose(seg.exp().sum(1), torch.ones(1, 32, 64), atol=1e-5)
    assert torch.allclose(normal.norm(dim=1), torch.ones(1, 32, 64), atol=1e-5)
    with pytest.raises(ValueError, match="divisible by 32"):
        model(torch.rand(1, 3, 48, 64))


@pytest.mark.parametrize("name", ["nyuv2", "cityscapes"])
def test_training_step_on_fixture(fixtures: dict[str, Path], name: str) -> None:
    torch.manual_seed(0)
    bench = make(name, fixtures[name])
    model = bench.build_model()
    assert bench.feature_dim == 64
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = bench.to_device(next(iter(bench.batches("train", 0))), torch.device("cpu"))
    rep, outputs = model(bench.model_input(batch))
    losses = bench.task_losses(outputs, batch)
    assert losses.shape == (bench.n_tasks,) and bool(torch.isfinite(losses).all())
    assert rep.shape[1] == bench.feature_dim
    losses.sum().backward()
    for params in (model.shared_parameters(), model.head_parameters()):
        assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in params)
    optimizer.step()
    model.eval()
    ev = bench.evaluator()
    with torch.no_grad():
        for batch in bench.batches("val"):
            ev.update(model(bench.model_input(batch))[1], batch)
    values = ev.compute()
    assert set(values) == {m.name for m in bench.metrics}
    assert all(math.isfinite(v) for v in values.values())


# ---- missing data and references -------------------------------------------------------------


def test_missing_data_raises_with_helpful_lines(tmp_path: Path, fixtures: dict[str, Path]) -> None:
    bench = make("nyuv2", tmp_path / "absent")
    with pytest.raises(DataUnavailable, match="dropbox.com/sh/86nssgwm6hm3vkb"):
        bench.batches("train", 0)
    root = tmp_path / "partial"
    shutil.copytree(fixtures["cityscapes"], root)
    shutil.rmtree(root / "val" / "depth")
    (root / "train" / "image" / "2.npy").unlink()
    lines = make("cityscapes", root).check_data()
    assert any("val/{depth}" in line and "gaw6vh6qusoyms6" in line for line in lines)
    assert any("lacks 2.npy" in line for line in lines)
    assert any("different numbers of files" in line for line in lines)
    with pytest.raises(DataUnavailable, match="data not ready"):
        make("cityscapes", root).batches("test")
    nested = tmp_path / "outer"
    shutil.copytree(fixtures["cityscapes"], nested / "cityscapes")
    assert any("pass --data-root" in line for line in make("cityscapes", nested).check_data())


@pytest.mark.parametrize(
    ("name", "first", "last"),
    [
        ("nyuv2", ("seg_miou", 0.3830), ("normal_within_30", 0.6915)),
        ("cityscapes", ("seg_miou", 0.7401), ("depth_rel_err", 27.77)),
    ],
)
def test_published_references(name: str, first: tuple, last: tuple) -> None:
    cls = get(name)
    ref = cls(cls.default_protocol(), None).reference()
    assert ref is not None and "FAMO" in ref.source
    names = [m.name for m in cls.metrics]
    assert list(ref.values) == names and len(set(names)) == len(names)
    assert ref.values[first[0]] == first[1] and ref.values[last[0]] == last[1]
