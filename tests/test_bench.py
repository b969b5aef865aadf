"""``mtlbench bench`` at small sizes: the rows and CSV columns, finite ratios, batched and
sequential Jacobians giving the same update, the printed table, the default output path that
the report reads, and clear errors. No timing assertion: times on a shared CPU are noise."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import pytest

from mtlbench.bench import default_out, mlp_workload, run_bench, update_error
from mtlbench.cli import main
from mtlbench.registry import ConfigError

COLUMNS = [
    "workload",
    "K",
    "method",
    "mode",
    "cost",
    "device",
    "batch_size",
    "threads",
    "reps",
    "step_median_s",
    "step_p25_s",
    "step_p75_s",
    "ratio_to_ls",
    "step_min_s",
    "ratio_min_to_ls",
    "speedup_vs_sequential",
    "peak_bytes",
    "peak_ratio_to_ls",
    "solver_s",
    "solver_share",
    "weights_s",
    "weights_share",
    "update_rel_err",
    "peer",
    "ratio_to_peer",
    "peer_update_rel_diff",
    "plugin",  # the plug-in whose method it is (None: a built-in)
]


def finite(x: object) -> bool:
    return isinstance(x, float) and math.isfinite(x)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return run_bench(
        "mlp",
        [2, 3],
        ["mgda", "ldc_mtl"],
        reps=3,
        warmup=1,
        device="cpu",
        batch_size=16,
        progress=lambda _: None,
    )


def test_rows(rows: list[dict]) -> None:
    assert [(r["K"], r["method"]) for r in rows] == [
        (k, m) for k in (2, 3) for m in ("ls", "mgda", "mgda@sequential", "ldc_mtl")
    ]
    for r in rows:
        assert list(r) == COLUMNS
        assert r["batch_size"] == 16 and r["reps"] == 3 and r["device"] == "cpu"
        assert finite(r["ratio_to_ls"]) and r["ratio_to_ls"] > 0
        assert finite(r["ratio_min_to_ls"]) and r["step_min_s"] <= r["step_p25_s"]
        assert r["step_p25_s"] <= r["step_median_s"] <= r["step_p75_s"]
        assert r["peak_bytes"] is None  # peak memory is measured on CUDA only
    by = {(r["K"], r["method"]): r for r in rows}
    for k in (2, 3):
        assert by[k, "ls"]["ratio_to_ls"] == by[k, "ls"]["ratio_min_to_ls"] == 1.0
        mgda = by[k, "mgda"]
        assert mgda["cost"] == "O(K)" and mgda["mode"] == "batched"
        assert finite(mgda["speedup_vs_sequential"]) and mgda["speedup_vs_sequential"] > 0
        assert finite(mgda["solver_share"]) and mgda["solver_share"] > 0
        assert finite(mgda["weights_share"]) and 0 < mgda["weights_s"] < mgda["solver_s"] * 10
        assert mgda["update_rel_err"] < 1e-5
        assert by[k, "mgda@sequential"]["mode"] == "sequential"
        ldc = by[k, "ldc_mtl"]  # O(1): one backward pass, no sequential twin, no solver
        assert ldc["cost"] == "O(1)"
        assert ldc["solver_s"] is None and ldc["update_rel_err"] is None


@pytest.mark.parametrize("method", ["upgrad", "pcgrad", "graddrop", "db_mtl", "cagrad"])
def test_batched_and_sequential_updates_agree(method: str) -> None:
    err = update_error(mlp_workload(3, batch_size=16, width=32), method, "cpu")  # type: ignore[arg-type]
    assert err is not None and err < 1e-5


def test_update_error_is_none_for_loss_weighting() -> None:
    assert update_error(mlp_workload(2, batch_size=8, width=16), "famo", "cpu") is None  # type: ignore[arg-type]


def test_cli_prints_table_and_writes_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.csv"
    args = ["bench", "--tasks", "2", "--methods", "pcgrad", "--reps", "1", "--warmup", "0"]
    assert main([*args, "--batch-size", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "× LS" in printed and "pcgrad@sequential" in printed and f"saved: {out}" in printed
    with open(out, newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == ["ls", "pcgrad", "pcgrad@sequential"]
    assert list(table[0]) == COLUMNS
    assert float(table[1]["update_rel_err"]) < 1e-5


def test_cli_with_jacobian_chunks(tmp_path: Path) -> None:
    """Chunks of 2 tasks at K = 3: the batched contenders step with two vmapped passes each
    (the chunked Jacobian itself is checked in test_framework.py)."""
    out = tmp_path / "bench.csv"
    args = ["bench", "--tasks", "3", "--methods", "mgda", "--reps", "1", "--warmup", "0"]
    assert main([*args, "--batch-size", "8", "--jacobian-chunk", "2", "--out", str(out)]) == 0
    with open(out, newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == ["ls", "mgda", "mgda@sequential"]
    assert all(float(r["step_median_s"]) > 0 for r in table)


def test_default_out_is_read_by_the_report(tmp_path: Path) -> None:
    """The default CSV lands under ``results/bench/``, where ``mtlbench report results`` looks
    for ``bench*.csv``; the scaling figure is drawn from it."""
    from mtlbench.bench import write_csv
    from mtlbench.report import figures as plots
    from mtlbench.report.load import _bench_files, read_bench_csv

    rows = run_bench(
        "mlp", [2, 3], ["famo"], reps=1, warmup=0, device="cpu", batch_size=8, progress=print
    )
    path = tmp_path / default_out("mlp")
    assert default_out("mlp") == Path("results/bench/bench-mlp.csv")
    write_csv(rows, path)
    found = _bench_files(tmp_path / "results")
    assert found == [path]
    table, notes = read_bench_csv(found, tmp_path / "results")
    assert notes == [] and table is not None
    assert set(table["method"]) == {"ls", "famo"} and set(table["K"]) == {2, 3}
    png = plots.scaling(table, tmp_path / "scaling.png")
    assert png.stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "mgdaa"], "unknown method 'mgdaa'"),
        (["--workload", "imagenet"], "unknown workload 'imagenet'"),
        (["--tasks", "2,x"], "--tasks expects comma-separated integers"),
        (["--workload", "multidigits", "--tasks", "3"], "multidigits workload has 2 tasks"),
        (["--workload", "toy", "--tasks", "2,4"], "toy workload has 2 tasks"),
        (["--jacobian-chunk", "0"], "--jacobian-chunk must be >= 1"),
    ],
)
def test_clear_errors(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["bench", *args, "--reps", "1", "--out", str(tmp_path / "b.csv")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("mtlbench: error:") and message in err
    assert not (tmp_path / "b.csv").exists()


def test_toy_workload_runs_the_methods_as_the_toy_benchmark_configures_them() -> None:
    """The toy workload creates each method as a trial on the toy does: LDC-MTL with the toy's
    bilevel softmax router and its own learning rate (a second optimizer group), FAMO with the
    toy's loss lower bounds (its losses are negative: with FAMO's default bounds of 0 the log
    would be NaN and the bench would raise). The rows are finite, LS first."""
    from mtlbench.bench import toy_workload
    from mtlbench.trial import TrialConfig, resolve

    work = toy_workload()
    ldc = work.method("ldc_mtl")
    toy = resolve(TrialConfig("toy", "ldc_mtl")).hparams
    assert (ldc.algorithm, ldc.activation, ldc.param_lr) == ("bilevel", "softmax", 0.025)
    assert toy["router_lr"] == 0.025 and work.method("famo").min_losses.tolist() == [-2.1, -21.0]
    rows = run_bench("toy", [2], ["ldc_mtl", "famo"], reps=3, warmup=1, next_step=True)
    assert [r["method"] for r in rows] == ["ls", "ldc_mtl", "famo", "famo@next_step"]
    assert all(finite(r["ratio_to_ls"]) and r["workload"] == "toy" for r in rows)
    assert rows[0]["ratio_to_ls"] == 1.0


def test_unknown_method_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="Valid: .*ldc_mtl"):
        run_bench("mlp", [2], ["nope"], reps=1)


@pytest.mark.parametrize("mode", ["batched", "sequential"])
def test_engine_reuses_its_jacobian_buffer(mode: str) -> None:
    """The engine writes J into one buffer kept between steps (no page faults of a fresh K x P
    allocation on CPU); the updates are those of a fresh Jacobian at every step."""
    import torch

    from mtlbench.gradients import GradientEngine, jacobian
    from mtlbench.method import StepContext, create, scale_factor

    work = mlp_workload(3, batch_size=8, width=16)
    model, shared = work.model, work.model.shared_parameters()
    method = create("mgda", 3)
    engine = GradientEngine(shared, model.head_parameters(), mode=mode)  # type: ignore[arg-type]
    pointers = set()
    for step in range(3):
        model.zero_grad(set_to_none=True)
        _, outputs = model(work.batch[0] * (step + 1))
        losses = work.task_losses(outputs, work.batch)
        fresh = jacobian(losses, shared, mode, retain_graph=True)  # type: ignore[arg-type]
        expected = create("mgda", 3).aggregate(fresh, losses.detach()).update
        engine.backward(method, losses, StepContext(step=step))
        got = torch.cat([p.grad.reshape(-1) for p in shared])  # type: ignore[union-attr]
        torch.testing.assert_close(got, expected * scale_factor(method, "reference"))
        assert engine._jac is not None
        pointers.add(engine._jac.data_ptr())
    assert len(pointers) == 1
    with pytest.raises(ValueError, match="out must be"):
        jacobian(losses.detach().requires_grad_(), shared, out=torch.empty(2, 2))  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.skipif(
    not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's /proc peak reset"
)
def test_cpu_memory_is_measured_per_contender(tmp_path: Path) -> None:
    """``--memory`` on the CPU: each contender's extra peak memory from a fresh process, and
    its ratio to LS's. An O(K) step keeps a K x P Jacobian, so it needs more than LS."""
    out = tmp_path / "bench.csv"
    args = ["bench", "--tasks", "8", "--methods", "mgda", "--reps", "1", "--warmup", "0"]
    assert main([*args, "--no-sequential", "--memory", "--out", str(out)]) == 0
    with open(out, newline="") as f:
        table = {r["method"]: r for r in csv.DictReader(f)}
    assert int(table["ls"]["peak_bytes"]) > 0 and float(table["ls"]["peak_ratio_to_ls"]) == 1.0
    assert float(table["mgda"]["peak_ratio_to_ls"]) > 1.0
