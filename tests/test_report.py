"""Leaderboards from records whose tables are known by hand: means, sample stds, Δm% per seed
(the convention of docs/reports.md), ranks with ties, ratios to LS, missing cells, variants,
references, metric directions from the records, the published numbers and errors.

Records are built as the trainer builds them (tests/report_records.py)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from report_records import info, record, toy_records, write_all

from mtlbench.records import SCHEMA_V1, Record, load_results
from mtlbench.registry import ConfigError
from mtlbench.report import (
    SkippedRecordWarning,
    build_report,
    label_variants,
    leaderboard,
    load_published,
    published_comparison,
    read_results,
)


def dm_metric_avg(values: dict[str, float], ref: dict[str, float], higher: dict[str, bool]):
    """Δm% by the formula of docs/reports.md, written out independently of the report."""
    terms = [(-1.0 if higher[k] else 1.0) * (values[k] - ref[k]) / ref[k] for k in ref]
    return 100.0 * sum(terms) / len(terms)


def csv_row(table: pd.DataFrame, method: str) -> pd.Series:
    rows = table[table["method"] == method]
    assert len(rows) == 1, f"{method!r} appears {len(rows)} times in {list(table['method'])}"
    return rows.iloc[0]


def table_line(text: str, method: str) -> str:
    """The Markdown table line of ``method`` (first cell exactly ``method``)."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells and cells[0] == method:
            return line
    raise AssertionError(f"no table line for {method!r}")


# ---------------------------------------------------------------------------------------------
# A benchmark with a published reference (_tiny: mse_a, mse_b, both lower-is-better, ref 0.5)
# ---------------------------------------------------------------------------------------------

TINY = {
    # method: [(seed, mse_a, mse_b, step_s, train_s)]
    "ls": [(0, 0.4, 0.6, 0.010, 10.0), (1, 0.5, 0.6, 0.010, 12.0), (2, 0.6, 0.9, 0.010, 14.0)],
    "famo": [(0, 0.45, 0.5, 0.012, 13.0), (1, 0.55, 0.5, 0.014, 15.0)],
    "mgda": [(0, 0.3, 0.7, 0.020, 24.0), (1, 0.5, 0.7, 0.030, 36.0)],
}
TINY_REF = {"mse_a": 0.5, "mse_b": 0.5}
TINY_HIGHER = {"mse_a": False, "mse_b": False}


@pytest.fixture
def tiny_results(tmp_path: Path) -> Path:
    records = []
    for method, runs in TINY.items():
        for seed, a, b, step, train in runs:
            records.append(
                record("_tiny", method, seed, {"mse_a": a, "mse_b": b}, step_s=step, train_s=train)
            )
    records.append(
        record(
            "_tiny",
            "mgda",
            2,
            status="diverged",
            diverged={"epoch": 3, "step": 1234, "losses": [None, 1.0]},
        )
    )
    records.append(
        record(
            "_tiny",
            "famo",
            2,
            status="failed",
            error={
                "type": "RuntimeError",
                "message": "CUDA out of memory\nmore",
                "traceback": "...",
            },
        )
    )
    return write_all(tmp_path / "results", records)


def test_leaderboard_numbers_against_the_published_reference(tiny_results: Path, tmp_path: Path):
    out = tmp_path / "report"
    index = build_report(tiny_results, out, ["md", "tex", "csv"])
    assert index == out / "index.md"
    table = pd.read_csv(out / "tables" / "leaderboard__tiny.csv")
    ls_steps = statistics.fmean(r[3] for r in TINY["ls"])
    ls_train = statistics.fmean(r[4] for r in TINY["ls"])
    md = index.read_text()
    tex = (out / "tables" / "leaderboard__tiny.tex").read_text()
    for method, runs in TINY.items():
        row = csv_row(table, method)
        a = [r[1] for r in runs]
        b = [r[2] for r in runs]
        dms = [
            dm_metric_avg({"mse_a": x, "mse_b": y}, TINY_REF, TINY_HIGHER)
            for x, y in zip(a, b, strict=True)
        ]
        assert row["n"] == len(runs)
        assert row["mse_a"] == pytest.approx(statistics.fmean(a))
        assert row["mse_a_std"] == pytest.approx(statistics.stdev(a))
        assert row["mse_b"] == pytest.approx(statistics.fmean(b))
        assert row["delta_m"] == pytest.approx(statistics.fmean(dms))
        assert row["delta_m_std"] == pytest.approx(statistics.stdev(dms))
        steps = [r[3] / ls_steps for r in runs]
        assert row["step_x_ls"] == pytest.approx(statistics.fmean(steps))
        assert row["total_x_ls"] == pytest.approx(statistics.fmean(r[4] for r in runs) / ls_train)
        # the formatted cell: Δm% mean ± std with two decimals, in md and tex
        cell = f"{statistics.fmean(dms):.2f} ± {statistics.stdev(dms):.2f}"
        assert cell in table_line(md, method)
        assert cell.replace("±", r"$\pm$") in tex
    # the reference row and its provenance
    ref = csv_row(table, "STL (published)")
    assert ref["mse_a"] == 0.5 and ref["role"] == "reference"
    assert "test values" in md  # the reference's source string
    # ranks with ties: mse_a means ls 0.5, famo 0.5, mgda 0.4 -> 2, 2, 1;
    # mse_b means ls 0.7, famo 0.5, mgda 0.7 -> 2, 1, 2; so MR ls 2, famo 1.5, mgda 1.5
    assert csv_row(table, "ls")["mean_rank"] == 2.0
    assert csv_row(table, "famo")["mean_rank"] == 1.5
    assert csv_row(table, "mgda")["mean_rank"] == 1.5
    assert "**1.50**" in table_line(md, "famo") and "**1.50**" in table_line(md, "mgda")
    assert "<u>2.00</u>" in table_line(md, "ls")
    assert r"\textbf{1.50}" in tex and r"\underline{2.00}" in tex
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    # best / second per metric: mse_a best is mgda (0.4), second ls and famo (0.5, tied)
    assert "**0.4000 ± 0.1414**" in table_line(md, "mgda")
    assert "<u>0.5000 ± 0.1000</u>" in table_line(md, "ls")
    # Δm% per seed: ls 0, 10, 50; famo -5, 5; mgda 0, 20: famo best (bold), mgda second
    assert "**0.00 ± 7.07**" in table_line(md, "famo")
    assert "<u>10.00 ± 14.14</u>" in table_line(md, "mgda")
    assert "| 20.00 ± 26.46 " in table_line(md, "ls")
    # arrows for direction in the headers
    assert "mse_a ↓" in md and r"mse\_a $\downarrow$" in tex


def test_missing_runs_are_shown_as_missing_with_the_reason(tiny_results: Path, tmp_path: Path):
    # a second benchmark where famo and mgda were not run at all
    write_all(
        tiny_results / "other",
        [
            record(
                "otherbench", "ls", s, {"left_acc": 0.5 + s / 10}, metrics_info=info(left_acc=True)
            )
            for s in range(2)
        ],
    )
    out = tmp_path / "report"
    md = build_report(tiny_results, out, ["md", "csv"]).read_text()
    # n counts done runs out of all runs
    tiny = md.split("## Benchmark: _tiny")[1]
    assert "| 2/3 " in table_line(tiny, "mgda") and "| 2/3 " in table_line(tiny, "famo")
    assert "diverged at epoch 3, step 1234" in md
    assert "failed (RuntimeError: CUDA out of memory)" in md
    assert "mgda: 2 of 3 runs done (diverged 1)" in md
    # methods not run on otherbench: rows of "—", never zeros
    section = md.split("## Benchmark: otherbench")[1]
    famo = table_line(section, "famo")
    cells = [c.strip() for c in famo.strip().strip("|").split("|")]
    assert cells[1] == "0" and set(cells[2:]) == {"—"}
    assert "no test runs on otherbench: famo, mgda" in section
    missing = pd.read_csv(out / "tables" / "missing.csv")
    assert set(missing["status"]) == {"diverged", "failed"}
    board = pd.read_csv(out / "tables" / "leaderboard_otherbench.csv")
    assert board.loc[board["method"] == "famo", "role"].item() == "not run"
    assert (
        board.loc[board["method"] == "famo"]
        .drop(columns=["benchmark", "method", "base_method", "role", "n", "runs"])
        .isna()
        .all(axis=None)
    )
    # the cross-benchmark table says which benchmarks each number covers
    cross = pd.read_csv(out / "tables" / "across_benchmarks.csv")
    assert csv_row(cross, "famo")["n_mean_rank"] == 1
    assert csv_row(cross, "famo")["mean_rank_benchmarks"] == "_tiny"
    # otherbench has no reference (no Δm%): its ranks stay out of the mean (issue 21)
    assert csv_row(cross, "ls")["n_mean_rank"] == 1


def test_load_results_frames_give_the_same_leaderboard(tiny_results: Path):
    mine = leaderboard(read_results(tiny_results).frame, "_tiny")
    theirs = leaderboard(load_results(tiny_results), "_tiny")
    cols = ["method", "n", "mse_a", "mse_b", "delta_m", "delta_m_std", "mean_rank", "step_x_ls"]
    pd.testing.assert_frame_equal(mine[cols], theirs[cols])


# ---------------------------------------------------------------------------------------------
# A benchmark unknown to this installation, with STL records in the folder
# ---------------------------------------------------------------------------------------------

STL = {  # task: {seed: metrics}
    "seg": {0: {"seg_acc": 0.8, "seg_iou": 0.5}, 1: {"seg_acc": 0.9, "seg_iou": 0.6}},
    "depth": {0: {"depth_err": 0.2}, 1: {"depth_err": 0.3}, 2: {"depth_err": 0.25}},
}
SYN_HIGHER = {"seg_acc": True, "seg_iou": True, "depth_err": False}
SYN_MTL = {
    "ls": [
        {"seg_acc": 0.84, "seg_iou": 0.50, "depth_err": 0.30},
        {"seg_acc": 0.80, "seg_iou": 0.56, "depth_err": 0.20},
    ],
    "uw": [
        {"seg_acc": 0.90, "seg_iou": 0.60, "depth_err": 0.22},
        {"seg_acc": 0.86, "seg_iou": 0.58, "depth_err": 0.26},
    ],
}


def synthetic_records() -> list[Record]:
    """Records of a benchmark this installation does not register: their ``metric_info`` says
    each metric's task and direction (an STL record's, its own task's metrics)."""
    records = []
    for task, seeds in STL.items():
        own = {k: v for k, v in SYN_HIGHER.items() if k.startswith(task)}
        for seed, metrics in seeds.items():
            records.append(
                record(
                    "synthbench",
                    "stl",
                    seed,
                    metrics,
                    task=task,
                    curves={"train_loss": {task: [1.0, 0.5]}},
                    metrics_info=info(**own),
                )
            )
    for method, runs in SYN_MTL.items():
        for seed, metrics in enumerate(runs):
            step_s = 0.01 if method == "ls" else 0.02
            records.append(
                record(
                    "synthbench",
                    method,
                    seed,
                    metrics,
                    step_s=step_s,
                    metrics_info=info(**SYN_HIGHER),
                )
            )
    return records


def results_with_curves(tmp_path: Path) -> Path:
    """A results folder of the toy records and the synthetic ones, the multi-task runs with
    three epochs of training curves (what the dynamics figures draw)."""
    results = tmp_path / "results"
    write_all(results / "toy", toy_records())
    records = synthetic_records()
    for r in records:
        if r["config"]["mode"] == "mtl":
            r["curves"] = {
                "epoch": [0, 1, 2],
                "train_loss": {"seg": [1.0, 0.6, 0.4], "depth": [2.0, 1.0, 0.8]},
                "weights": {"seg": [1.0, 0.9, 0.8], "depth": [1.0, 1.1, 1.2]},
            }
    write_all(results / "synth", records)
    return results


def test_stl_reference_from_records_task_and_metric_averaged(tmp_path: Path):
    results = write_all(tmp_path / "results", synthetic_records())
    out = tmp_path / "report"
    md = build_report(results, out, ["md", "csv"], task_avg=True).read_text()
    ref = {
        "seg_acc": statistics.fmean(s["seg_acc"] for s in STL["seg"].values()),
        "seg_iou": statistics.fmean(s["seg_iou"] for s in STL["seg"].values()),
        "depth_err": statistics.fmean(s["depth_err"] for s in STL["depth"].values()),
    }
    table = pd.read_csv(out / "tables" / "leaderboard_synthbench.csv")
    stl_row = csv_row(table, "STL")
    for name, value in ref.items():
        assert stl_row[name] == pytest.approx(value)
    for method, runs in SYN_MTL.items():
        per_seed = [dm_metric_avg(r, ref, SYN_HIGHER) for r in runs]
        # task-averaged: seg's two metrics averaged first, then the two tasks
        per_task = []
        for r in runs:
            rel = {k: 100 * (-1 if SYN_HIGHER[k] else 1) * (r[k] - ref[k]) / ref[k] for k in ref}
            per_task.append(((rel["seg_acc"] + rel["seg_iou"]) / 2 + rel["depth_err"]) / 2)
        row = csv_row(table, method)
        assert row["delta_m"] == pytest.approx(statistics.fmean(per_seed))
        assert row["delta_m_std"] == pytest.approx(statistics.stdev(per_seed))
        assert row["delta_m_task"] == pytest.approx(statistics.fmean(per_task))
        assert statistics.fmean(per_task) != pytest.approx(statistics.fmean(per_seed))
        line = table_line(md, method)
        assert f"{statistics.fmean(per_task):.2f} ± {statistics.stdev(per_task):.2f}" in line
    # the labelled columns, the STL row's provenance (trial ids, seeds) and the inference note
    assert "Δm% ↓ (metric-avg)" in md and "Δm% ↓ (task-avg)" in md
    assert "2/3 seed(s) per task" in md
    for task, seeds in STL.items():
        for seed in seeds:
            assert f"synthbench-stl-{task}-s{seed}-" in md
    assert "'synthbench' is not registered" in md
    assert "seg_acc ↑" in md and "depth_err ↓" in md
    assert csv_row(table, "uw")["step_x_ls"] == pytest.approx(2.0)


def test_stored_delta_m_is_only_cross_checked(tmp_path: Path):
    records = synthetic_records()
    for r in records:
        if r["config"]["method"] == "uw":
            r["delta_m"] = {"metric_avg": 123.0, "task_avg": 123.0, "reference": None}
    results = write_all(tmp_path / "results", records)
    md = build_report(results, tmp_path / "report").read_text()
    assert "2 of 2 records carry a stored Δm% that differs" in md
    assert "e.g. computed against another reference" in md
    assert "123.00" not in md


def test_a_stored_delta_m_against_an_earlier_reference_is_explained(tmp_path: Path):
    """Sequential seeding adds reference seeds after a method's run has stored its Δm%: the
    note names the earlier state of the reference instead of a generic cause."""
    records = synthetic_records()
    for r in records:
        if r["config"]["method"] == "uw":
            r["delta_m"] = {
                "metric_avg": 123.0,
                "task_avg": 123.0,
                "reference": {"values": {"seg_acc": 0.5}, "source": "mean of 1 stl record"},
            }
    results = write_all(tmp_path / "results", records)
    md = build_report(results, tmp_path / "report").read_text()
    assert "(largest gap" in md and "2 of them against an earlier state of the reference" in md


def test_directions_come_from_the_records_metric_info(tmp_path: Path):
    """An unregistered benchmark's directions are its records' metric_info: a metric named like
    a loss but declared higher-is-better ranks as declared."""
    records = [
        record("declared", m, s, {"a_loss": v + s / 100}, metrics_info=info(a_loss=True))
        for m, v in (("ls", 0.2), ("uw", 0.9))
        for s in range(2)
    ]
    board = leaderboard(read_results(write_all(tmp_path / "r", records)).frame, "declared")
    ranks = board.set_index("method")["mean_rank"]
    assert ranks["uw"] == 1.0 and ranks["ls"] == 2.0


def test_records_of_an_earlier_metric_definition_are_tabled_as_recorded(tmp_path: Path):
    """A registered benchmark whose metrics changed since its records were made (Yeast's acc_*
    became bacc_*): the table is the records' metric_info, ranked by its declared directions,
    and the page says that the installation's benchmark scores other metrics."""
    old = info(old_err=False)  # `_tiny` scores mse_a, mse_b today
    records = [
        record("_tiny", m, s, {"old_err": v + s / 100}, metrics_info=old)
        for m, v in (("ls", 0.9), ("uw", 0.2))
        for s in range(2)
    ]
    results = write_all(tmp_path / "r", records)
    board = leaderboard(read_results(results).frame, "_tiny").set_index("method")
    assert board.loc["uw", "mean_rank"] == 1.0 and board.loc["ls", "mean_rank"] == 2.0
    md = build_report(results, tmp_path / "report").read_text()
    assert "these records score _tiny with `old_err`" in md
    assert "scores `mse_a`, `mse_b`" in md and "old_err ↓" in md


def _version1(rec: Record) -> dict[str, Any]:
    """The same record as version 1 wrote it (no metric_info, no resumes)."""
    old = {k: v for k, v in rec.items() if k not in ("metric_info", "resumes")}
    return {**old, "schema": SCHEMA_V1}


def test_version1_records_of_an_unknown_benchmark_are_shown_not_ranked(tmp_path: Path):
    """Version-1 records carry no direction: an unregistered benchmark's metrics are shown, left
    out of Δm% and ranks, and the page says why (no direction is guessed from names)."""
    from mtlbench.records import atomic_write_json

    results = tmp_path / "results"
    for r in synthetic_records():
        atomic_write_json(results / f"{r['trial_id']}.json", _version1(r))
    out = tmp_path / "report"
    md = build_report(results, out, ["csv"]).read_text()
    assert "carry no metric directions" in md
    assert "seg_acc (?)" in md
    table = pd.read_csv(out / "tables" / "leaderboard_synthbench.csv")
    ls = csv_row(table, "ls")
    assert ls["seg_acc"] == pytest.approx(statistics.fmean(r["seg_acc"] for r in SYN_MTL["ls"]))
    assert math.isnan(ls["delta_m"]) and math.isnan(ls["mean_rank"])


# ---------------------------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------------------------


def test_variants_with_different_settings_are_not_merged(tmp_path: Path):
    records = []
    for seed in range(2):
        records.append(record("_tiny", "ls", seed, {"mse_a": 0.5, "mse_b": 0.5}))
        records.append(record("_tiny", "ldc_mtl", seed, {"mse_a": 0.4, "mse_b": 0.4}))
        records.append(
            record("_tiny", "ldc_mtl", seed, {"mse_a": 0.2, "mse_b": 0.2}, protocol={"lr": 0.0003})
        )
        records.append(
            record(
                "_tiny",
                "famo",
                seed,
                {"mse_a": 0.45, "mse_b": 0.45},
                hparams={"gamma": 0.01, "w_lr": 0.025},
            )
        )
        records.append(
            record(
                "_tiny",
                "famo",
                seed,
                {"mse_a": 0.55, "mse_b": 0.55},
                hparams={"gamma": 0.001, "w_lr": 0.025},
            )
        )
        records.append(
            record(
                "_tiny",
                "mgda",
                seed,
                {"mse_a": 0.6, "mse_b": 0.6},
                policies={"clip_grad_norm": 1.0},
            )
        )
    results = write_all(tmp_path / "results", records)
    out = tmp_path / "report"
    md = build_report(results, out, ["csv"]).read_text()
    table = pd.read_csv(out / "tables" / "leaderboard__tiny.csv")
    assert csv_row(table, "ldc_mtl")["mse_a"] == pytest.approx(0.4)
    assert csv_row(table, "ldc_mtl [lr=0.0003]")["mse_a"] == pytest.approx(0.2)
    assert csv_row(table, "famo [gamma=0.01]")["mse_a"] == pytest.approx(0.45)
    assert csv_row(table, "famo [gamma=0.001]")["mse_a"] == pytest.approx(0.55)
    assert csv_row(table, "mgda [clip_grad_norm=1]")["n"] == 2
    for label in ("ldc_mtl", "ldc_mtl [lr=0.0003]", "famo [gamma=0.01]"):
        assert csv_row(table, label)["n"] == 2
    assert "not averaged together" in md
    assert "ldc_mtl: ldc_mtl, ldc_mtl [lr=0.0003]" in md
    # the same labels from the function, on load_results' frame
    labels = set(label_variants(load_results(results)))
    assert {"ldc_mtl [lr=0.0003]", "famo [gamma=0.001]", "mgda [clip_grad_norm=1]"} <= labels


def test_toy_initial_points_are_replicates_not_variants(tmp_path: Path):
    records = [
        record("toy", m, 0, {"L1": -1.0 - s / 10, "L2": -15.0}, protocol={"start": s})
        for m in ("ls", "famo")
        for s in range(5)
    ]
    board = leaderboard(read_results(write_all(tmp_path / "r", records)).frame, "toy")
    assert sorted(board.loc[board["role"] == "method", "method"]) == ["famo", "ls"]
    assert set(board.loc[board["role"] == "method", "n"]) == {5}


# ---------------------------------------------------------------------------------------------
# Published numbers
# ---------------------------------------------------------------------------------------------


def test_published_data_reproduces_the_papers_cityscapes_delta_m():
    pub = load_published()
    assert {"benchmark", "method", "quantity", "value", "paper_text", "source"} <= set(pub)
    assert pub["source"].str.len().min() > 20
    city = pub[pub["benchmark"] == "cityscapes"].pivot_table(
        index="method", columns="quantity", values="value"
    )
    higher = {"seg_miou": True, "seg_pixacc": True, "depth_abs_err": False, "depth_rel_err": False}
    base = city.loc["stl", list(higher)].to_dict()
    for method, row in city.drop(index="stl").iterrows():
        recomputed = dm_metric_avg(row[list(higher)].to_dict(), base, higher)
        # ldc-mtl.md §2.1: "within ±0.1", Nash-MTL is 0.10 off after rounding
        assert recomputed == pytest.approx(row["delta_m"], abs=0.15), method
    dm = pub[pub["quantity"] == "delta_m"].set_index(["benchmark", "method"])["value"]
    assert dm[("celeba", "ldc_mtl")] == -1.31 and dm[("qm9", "ls")] == 177.6
    assert dm[("nyuv2", "go4align")] == -6.08
    t = pub[pub["quantity"] == "time_rel_ls"].set_index(["benchmark", "method"])["value"]
    assert t[("celeba", "nash_mtl")] == 12.49 and t[("cityscapes", "ls")] == 1.0


def test_published_rows_beside_ours_with_the_difference(tmp_path: Path):
    records = [
        record(
            "cityscapes",
            "ls",
            s,
            {"seg_miou": 0.75, "seg_pixacc": 0.93, "depth_abs_err": 0.0150, "depth_rel_err": 40.0},
            train_s=100.0,
        )
        for s in range(2)
    ]
    records += [
        record(
            "cityscapes",
            "famo",
            s,
            {"seg_miou": 0.74, "seg_pixacc": 0.93, "depth_abs_err": 0.0140, "depth_rel_err": 30.0},
            train_s=120.0,
        )
        for s in range(2)
    ]
    results = write_all(tmp_path / "results", records)
    out = tmp_path / "report"
    md = build_report(results, out, ["md", "csv"], published=True).read_text()
    comp = pd.read_csv(out / "tables" / "published_cityscapes.csv")
    ls = csv_row(comp, "ls")
    assert ls["seg_miou/paper"] == pytest.approx(0.7518)
    assert ls["seg_miou/diff"] == pytest.approx(0.75 - 0.7518)
    famo = csv_row(comp, "famo")
    assert famo["time_rel_ls/ours"] == pytest.approx(1.2)
    assert famo["time_rel_ls/diff"] == pytest.approx(1.2 - 1.18)
    assert math.isnan(csv_row(comp, "mgda")["seg_miou/ours"])  # not run here: missing
    assert "figs/Cityscapes.png" in md
    board = leaderboard(read_results(results).frame, "cityscapes")
    assert len(published_comparison(board, load_published())) >= 17


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_clear_errors(tmp_path: Path, tiny_results: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        build_report(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no run records"):
        build_report(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.json").write_text('{"hello": 1}')
    with pytest.raises(ConfigError, match="no run records"):
        build_report(tmp_path / "foreign", tmp_path / "out")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="not writable"):
        build_report(tiny_results, blocker / "report")
    with pytest.raises(ConfigError, match="unknown report format 'pdf'"):
        build_report(tiny_results, tmp_path / "out", ["md", "pdf"])


def test_corrupt_and_duplicate_files_are_counted_not_fatal(tiny_results: Path, tmp_path: Path):
    (tiny_results / "broken.json").write_text("{not json")
    dup = tiny_results / "copy"
    dup.mkdir()
    first = next(tiny_results.glob("_tiny-ls-s0-*.json"))
    (dup / first.name).write_text(first.read_text())
    with pytest.warns(SkippedRecordWarning, match=r"broken\.json: not readable JSON"):
        md = build_report(tiny_results, tmp_path / "report").read_text()
    assert "1 JSON file(s) skipped: broken.json" in md
    assert "1 record(s) repeat a trial id" in md
    assert "| 3 " in table_line(md, "ls")


def test_a_report_of_references_only_renders(tmp_path: Path):
    """Mid-sweep, before any method's test run: the leaderboard has the STL row and no method
    row; the runtime section, the significance note and the seeding note say no method has run."""
    stl = [r for r in synthetic_records() if r["config"]["mode"] == "stl"]
    for r in stl:  # as a sequential sweep writes them
        r["config"]["seeding"] = {"min": 5, "max": 20, "step": 5, "until": 1.0}
    results = write_all(tmp_path / "results", stl)
    md = build_report(results, tmp_path / "report", ["md", "csv"]).read_text()
    table = pd.read_csv(tmp_path / "report" / "tables" / "leaderboard_synthbench.csv")
    assert list(table["role"]) == ["reference"]
    assert {"step_x_ls", "total_x_ls", "delta_m"} <= set(table.columns)
    assert "No runtime table: no benchmark has both timed runs and a done LS run." in md
    assert "significance tests: no method has a done test run yet" in md
    assert "at most 20: no method has a test run yet." in md
