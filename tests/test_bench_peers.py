"""``mtlbench bench --peers torchjd`` and ``--gramian``: the peer's contenders beside mtlbench's
on the same model and batch, the columns relating them, the first-update agreement of the
deterministic shared methods, and the one-line errors. No timing assertion."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import pytest

from mtlbench.bench import Spec, cpu_step_memory, mlp_workload, run_bench
from mtlbench.bench.peers import peer_modes, require, shared_methods, update_difference
from mtlbench.cli import main
from mtlbench.registry import ConfigError

pytest.importorskip("torchjd", reason="the peers extra (pip install 'mtlbench[peers]')")


def finite(x: object) -> bool:
    return isinstance(x, float) and math.isfinite(x)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return run_bench(
        "mlp",
        [3],
        ["mgda", "graddrop", "ldc_mtl"],
        reps=2,
        warmup=1,
        device="cpu",
        batch_size=16,
        sequential=False,
        gramian=True,
        peers=["torchjd"],
        progress=lambda _: None,
    )


def test_peer_contenders_sit_beside_ours(rows: list[dict]) -> None:
    assert [r["method"] for r in rows] == [
        "ls",
        "mgda",
        "mgda@gramian",
        "mgda@torchjd",
        "mgda@torchjd-autogram",
        "graddrop",
        "graddrop@torchjd",  # GradDrop needs the rows of J: no autogram form
        "ldc_mtl",  # not a TorchJD aggregator: no peer
    ]
    by = {r["method"]: r for r in rows}
    assert by["mgda@torchjd"]["peer"] == "torchjd" and by["mgda@torchjd"]["mode"] == "mtl_backward"
    assert by["mgda@torchjd-autogram"]["mode"] == "autogram"
    assert by["mgda@gramian"]["peer"] is None and by["mgda@gramian"]["mode"] == "gramian"
    assert by["mgda@torchjd"]["ratio_to_peer"] == 1.0
    for label in ("mgda", "mgda@gramian", "mgda@torchjd-autogram", "graddrop"):
        assert finite(by[label]["ratio_to_peer"]) and finite(by[label]["ratio_to_ls"])
    for label in ("ls", "ldc_mtl"):
        assert by[label]["ratio_to_peer"] is None and by[label]["peer_update_rel_diff"] is None
    for label in ("mgda@torchjd", "mgda@torchjd-autogram", "graddrop@torchjd"):
        assert finite(by[label]["peer_update_rel_diff"])
    # TorchJD's MGDA stops its Frank-Wolfe at a gap of 1e-3: close to ours, not equal.
    assert by["mgda@torchjd"]["peer_update_rel_diff"] < 0.1


@pytest.mark.parametrize("method", ["upgrad", "imtl_g"])
@pytest.mark.parametrize("mode", ["mtl_backward", "autogram"])
def test_deterministic_shared_methods_agree_on_the_first_update(method: str, mode: str) -> None:
    work = mlp_workload(4, batch_size=16, width=32)
    diff = update_difference(work, Spec(method, mode, None, "torchjd"), "cpu")  # type: ignore[arg-type]
    # UPGrad: TorchJD regularises its dual-cone QP (eps 1e-4 on the Gramian), ours not by default.
    assert diff < 1e-3


def test_peer_modes() -> None:
    assert peer_modes("torchjd", "upgrad") == ["mtl_backward", "autogram"]
    assert peer_modes("torchjd", "nash_mtl") == ["mtl_backward"]  # a Jacobian weighting there
    assert peer_modes("torchjd", "ls") == [] and peer_modes("torchjd", "db_mtl") == []
    assert {"mgda", "upgrad", "cagrad", "pcgrad", "graddrop"} <= set(shared_methods("torchjd"))


def test_cli_saves_the_side_by_side_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.csv"
    args = ["bench", "--tasks", "2", "--methods", "upgrad", "--reps", "1", "--warmup", "0"]
    assert main([*args, "--batch-size", "8", "--peers", "torchjd", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "× TorchJD" in printed and "upgrad@torchjd-autogram" in printed
    with open(out, newline="") as f:
        table = [r["method"] for r in csv.DictReader(f)]
    assert table == [
        "ls",
        "upgrad",
        "upgrad@sequential",
        "upgrad@torchjd",
        "upgrad@torchjd-autogram",
    ]


def test_missing_or_unknown_peer_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from importlib import metadata

    with pytest.raises(ConfigError, match="unknown peer 'libmtl'"):
        require("libmtl")

    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    assert main(["bench", "--tasks", "2", "--methods", "mgda", "--peers", "torchjd"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == "mtlbench: error: --peers torchjd needs TorchJD 0.18: pip install 'mtlbench[peers]'"
    )


@pytest.mark.skipif(
    not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's /proc peak reset"
)
def test_cpu_memory_of_a_peer_step() -> None:
    extra = cpu_step_memory(
        "mlp", 4, {"batch_size": 16}, Spec("mgda", "mtl_backward", None, "torchjd")
    )
    assert extra is not None and extra > 0


def test_famo_next_step_losses_equal_the_post_step_forward_on_a_data_free_problem() -> None:
    """On one fixed batch (a problem without data, like the toy), the next step's losses are the
    post-step losses: ``post_step_mode=next_step`` trains FAMO to the same point with one forward
    pass fewer per step."""
    import torch

    from mtlbench.bench.measure import make_contender

    work = mlp_workload(3, batch_size=8, width=16)
    post = make_contender(work, Spec("famo"), torch.device("cpu"))
    nxt = make_contender(work, Spec("famo", "next_step"), torch.device("cpu"))
    for i in range(4):  # the losses and the weights of every step (after i logit updates)
        a, b = post.step(work.batch, i, 0), nxt.step(work.batch, i, 0)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert bool((post.method.logits != 0).any())  # type: ignore[union-attr]
