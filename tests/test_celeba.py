"""CelebA: F1 by hand, the loader on its fixture (layouts, +-1 -> {1, 0}, splits, resize, cache,
workers), the model, the loss, a training step, missing data and the published reference."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mtlbench.benchmark import DataUnavailable, get
from mtlbench.datasets import _celeba_files as celeba_files
from mtlbench.datasets.celeba import ATTRIBUTES, CelebA, F1Evaluator, f1_scores


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One thread: steps get much slower with two when other processes share two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("celeba")
    get("celeba").write_fixture(path)
    return path


def make(root: Path | None, seed: int = 0, **options: object) -> CelebA:
    cls = get("celeba")
    defaults = {"num_workers": 0, "batch_size": 8, "cache": False}
    protocol = cls.default_protocol().replace(**{**defaults, **options})
    return cls(protocol, root, seed)  # type: ignore[return-value]


def file_labels(root: Path) -> dict[str, list[int]]:
    lines = (root / "Anno/list_attr_celeba.txt").read_text().splitlines()
    return {ln.split()[0]: [int(v) for v in ln.split()[1:]] for ln in lines[2:]}


# ---- metric ----------------------------------------------------------------------------------


def test_f1_by_hand_over_two_batches() -> None:
    ev = F1Evaluator()
    # Attribute 0. Batch 1: y = 1 1 0 0, predicted 1 0 1 0 -> TP 1, FN 1, FP 1.
    # Batch 2: y = 1 0, predicted 1 1 -> TP 1, FP 1. Totals TP 2, FP 2, FN 1.
    # Attribute 1 is never predicted positive (logit 0 -> sigmoid 0.5, not > 0.5): F1 = 0.
    for y0, z0 in (([1, 1, 0, 0], [3.0, -3.0, 2.0, -1.0]), ([1, 0], [1.0, 0.5])):
        n = len(y0)
        y = torch.zeros(n, 40)
        y[:, 0] = torch.tensor(y0, dtype=torch.float32)
        y[:, 1] = 1.0
        z = torch.full((n, 40), -5.0)
        z[:, 0] = torch.tensor(z0)
        z[:, 1] = 0.0
        ev.update(list(z.split(1, dim=1)), (None, y))
    values = ev.compute()
    p, r = 2 / 4, 2 / 3
    assert values["f1_5_o_Clock_Shadow"] == pytest.approx(2 * p * r / (p + r))
    assert values["f1_Arched_Eyebrows"] == 0.0
    assert values["f1_Attractive"] == 0.0  # no positives at all: 0 with the 1e-8 guards
    assert values["f1_mean"] == pytest.approx(sum(values[f"f1_{a}"] for a in ATTRIBUTES) / 40)
    counts = torch.tensor([[10.0], [5.0], [0.0]])
    assert float(f1_scores(*counts)[0]) == pytest.approx(2 * (10 / 15) / (10 / 15 + 1), abs=1e-7)


# ---- data ------------------------------------------------------------------------------------


def test_fixture_is_in_the_published_format(root: Path) -> None:
    lines = (root / "Anno/list_attr_celeba.txt").read_text().splitlines()
    assert lines[0] == "30" and lines[1].split() == ATTRIBUTES
    assert lines[2].startswith("000001.jpg ") and set(lines[2].split()[1:]) <= {"1", "-1"}
    assert (root / "Eval/list_eval_partition.txt").read_text().splitlines()[0] == "000001.jpg 0"
    with Image.open(root / "Img/img_align_celeba/000030.jpg") as image:
        assert image.size == (178, 218) and image.format == "JPEG"
    assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) < 5e6


def test_splits_labels_and_images(root: Path) -> None:
    bench = make(root)
    sizes = {}
    labels = file_labels(root)
    for split in ("train", "val", "test"):
        names, y = bench.splits()[split]
        sizes[split] = len(names)
        # +-1 -> {1, 0}, attribute order kept.
        expected = torch.tensor([[1.0 if v == 1 else 0.0 for v in labels[n]] for n in names])
        assert torch.equal(y, expected)
    assert sizes == {"train": 16, "val": 7, "test": 7}
    assert bench.splits()["train"][0][0] == "000001.jpg"
    assert bench.splits()["test"][0][0] == "000024.jpg"
    batch = next(iter(bench.batches("test")))
    assert batch[0].shape == (7, 3, 64, 64) and batch[0].dtype == torch.uint8
    assert batch[1].shape == (7, 40) and batch[1].dtype == torch.float32
    # The resize is PIL's bilinear to 64 x 64 (torchvision's Resize on a PIL image), then / 255.
    with Image.open(root / "Img/img_align_celeba/000024.jpg") as image:
        ref = np.array(image.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR))
    x = bench.model_input(batch)
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x[0], torch.from_numpy(ref).permute(2, 0, 1).float() / 255)


def test_shuffling_is_seeded_by_epoch(root: Path) -> None:
    def labels(seed: int, epoch: int) -> torch.Tensor:
        return torch.cat([b[1] for b in make(root, seed).batches("train", epoch)])

    assert torch.equal(labels(1, 0), labels(1, 0))
    assert not torch.equal(labels(1, 0), labels(1, 1))
    assert torch.equal(labels(1, 0).sum(0), labels(2, 5).sum(0))  # same images, other order


def test_flat_and_kaggle_layouts(root: Path, tmp_path: Path) -> None:
    reference = make(root).splits()
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copytree(root / "Img/img_align_celeba", flat / "img_align_celeba")
    shutil.copy(root / "Anno/list_attr_celeba.txt", flat)
    shutil.copy(root / "Eval/list_eval_partition.txt", flat)
    kaggle = tmp_path / "kaggle"
    shutil.copytree(root / "Img/img_align_celeba", kaggle / "img_align_celeba/img_align_celeba")
    rows = [ln.split() for ln in (root / "Anno/list_attr_celeba.txt").read_text().splitlines()]
    csv = ["image_id," + ",".join(ATTRIBUTES)] + [",".join(r) for r in rows[2:]]
    (kaggle / "list_attr_celeba.csv").write_text("\n".join(csv) + "\n")
    parts = (root / "Eval/list_eval_partition.txt").read_text().split()
    pairs = [f"{a},{b}" for a, b in zip(parts[::2], parts[1::2], strict=True)]
    (kaggle / "list_eval_partition.csv").write_text("image_id,partition\n" + "\n".join(pairs))
    for other in (flat, kaggle):
        bench = make(other)
        assert bench.check_data() == []
        for split, (names, y) in bench.splits().items():
            assert names == reference[split][0] and torch.equal(y, reference[split][1])
        assert next(iter(bench.batches("val")))[0].shape == (7, 3, 64, 64)


def test_cache_gives_the_same_batches_and_is_built_once(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = [b for b in make(root, seed=3).batches("train", 1)]
    cached_bench = make(root, seed=3, cache=True, cache_dir=str(tmp_path))
    cached = list(cached_bench.batches("train", 1))
    assert (tmp_path / "cache_64x64_train.pt").is_file()
    assert len(plain) == len(cached) == 2
    for (x, y), (cx, cy) in zip(plain, cached, strict=True):
        assert torch.equal(x, cx) and torch.equal(y, cy)

    def no_decoding(*args: object) -> None:
        raise AssertionError("the cache should have been read, not rebuilt")

    monkeypatch.setattr(celeba_files, "load_image", no_decoding)
    again = list(make(root, seed=3, cache=True, cache_dir=str(tmp_path)).batches("train", 1))
    assert torch.equal(again[0][0], cached[0][0])


def test_unwritable_cache_folder_warns_and_keeps_the_cache_in_memory(
    root: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    bench = make(root, cache=True, cache_dir=str(blocker / "cache"))
    with pytest.warns(UserWarning, match="could not write the CelebA cache"):
        batch = next(iter(bench.batches("val")))
    assert batch[0].shape == (7, 3, 64, 64)


def test_worker_processes_give_the_same_batches(root: Path) -> None:
    single = list(make(root, seed=4).batches("train", 2))
    workers = make(root, seed=4, num_workers=2)
    next(iter(workers.batches("train", 0)))  # an epoch cut short (max_steps), then re-used
    for _ in range(2):  # the persistent loader is re-used across epochs
        multi = list(workers.batches("train", 2))
        for (x, y), (mx, my) in zip(single, multi, strict=True):
            assert torch.equal(x, mx) and torch.equal(y, my)


def test_missing_data_raises_with_helpful_lines(root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataUnavailable, match="mmlab.ie.cuhk.edu.hk"):
        make(tmp_path / "absent").batches("train", 0)
    partial = tmp_path / "partial"
    (partial / "Img").mkdir(parents=True)
    (partial / "Img/img_align_celeba.zip").write_bytes(b"")
    lines = make(partial).check_data()
    assert len(lines) == 3
    assert any("Anno/list_attr_celeba.txt" in ln for ln in lines)
    assert any("Eval/list_eval_partition.txt" in ln for ln in lines)
    assert any("unzip it there" in ln and "Img/img_align_celeba/" in ln for ln in lines)
    gaps = tmp_path / "gaps"
    shutil.copytree(root, gaps)
    (gaps / "Img/img_align_celeba/000005.jpg").unlink()
    (lines,) = make(gaps).check_data()
    assert "1 of the 30 images" in lines and "000005.jpg" in lines
    with pytest.raises(DataUnavailable, match="000005.jpg"):
        make(gaps).batches("test")


# ---- model, loss, training -------------------------------------------------------------------


def test_model_shapes_and_loss_matches_bce_on_sigmoid(root: Path) -> None:
    torch.manual_seed(0)
    bench = make(root)
    model = bench.build_model()
    assert len(model.heads) == 40 and bench.feature_dim == 512
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 7 and all(c.bias is None for c in convs)
    batch = next(iter(bench.batches("train", 0)))
    rep, outputs = model(bench.model_input(batch))
    assert rep.shape == (8, 512) and len(outputs) == 40 and outputs[0].shape == (8, 1)
    losses = bench.task_losses(outputs, batch)
    reference = torch.stack(
        [
            torch.nn.functional.binary_cross_entropy(torch.sigmoid(z), batch[1][:, k : k + 1])
            for k, z in enumerate(outputs)
        ]
    )
    assert losses.shape == (40,)
    assert torch.allclose(losses, reference, atol=1e-6)


def test_training_step_and_evaluation(root: Path) -> None:
    torch.manual_seed(0)
    bench = make(root)
    model = bench.build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    batch = next(iter(bench.batches("train", 0)))
    _, outputs = model(bench.model_input(batch))
    losses = bench.task_losses(outputs, batch)
    losses.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    optimizer.step()
    model.eval()
    ev = bench.evaluator()
    with torch.no_grad():
        for batch in bench.batches("val"):
            ev.update(model(bench.model_input(batch))[1], batch)
    values = ev.compute()
    assert {m.name for m in bench.metrics} <= set(values)
    assert all(0 <= v <= 1 for v in values.values())


def test_published_reference_and_protocol() -> None:
    cls = get("celeba")
    bench = cls(cls.default_protocol(), None)
    ref = bench.reference()
    assert ref is not None and "FAMO/issues/2" in ref.source
    assert list(ref.values) == [m.name for m in cls.metrics] == [f"f1_{a}" for a in ATTRIBUTES]
    assert ref.values["f1_5_o_Clock_Shadow"] == 0.6736886 and ref.values["f1_Young"] == 0.91907
    assert ref.values["f1_Male"] == 0.97034
    assert all(m.higher_is_better for m in cls.metrics)
    p = cls.default_protocol()
    assert (p.epochs, p.batch_size, p.lr, p.scheduler) == (15, 256, 3e-4, None)
    assert p.selection == "best_val_delta_m" and p.cache
    assert cls.smoke_protocol()["cache"] is False


def test_gradient_methods_back_propagate_eight_tasks_at_a_time() -> None:
    """CelebA's policy default: chunks of 8 of the 40 tasks per vmapped backward (memory,
    docs/performance.md); a run can still ask for one pass."""
    from mtlbench.trial import TrialConfig, resolve

    assert resolve(TrialConfig("celeba", "mgda", 0)).policies.jacobian_chunk == 8
    one_pass = resolve(TrialConfig("celeba", "mgda", 0, {"jacobian_chunk": None}))
    assert one_pass.policies.jacobian_chunk is None
