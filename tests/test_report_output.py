"""The report's output: every figure drawn and embedded, the toy's per-start table, one number
format per column, LaTeX through pandas' Styler, the command line (skipped files on stderr,
``--strict``), records of a real trainer run, and 10,000 records (behaviour only: the time is
measured by tests/bench_report.py and written in docs/reports.md)."""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from report_records import info, record, ten_thousand_records, toy_records, write_all
from test_report import csv_row, results_with_curves, table_line

from mtlbench.cli import main
from mtlbench.records import scan
from mtlbench.report import build_report


def check_image(path: Path) -> None:
    assert path.is_file(), path
    assert path.stat().st_size > 5_000, f"{path} is suspiciously small"
    image = mpimg.imread(path)
    assert image.shape[0] >= 200 and image.shape[1] >= 200
    assert float(np.var(image[..., :3])) > 1e-3, f"{path} looks blank"


def test_every_figure_is_drawn_and_embedded(tmp_path: Path):
    results = results_with_curves(tmp_path)
    bench = results / "bench"
    bench.mkdir()
    pd.DataFrame(
        {
            "workload": ["mlp"] * 6,
            "K": [2, 10, 40] * 2,
            "method": ["ls"] * 3 + ["mgda"] * 3,
            "mode": ["batched"] * 6,
            "step_median_s": [0.001, 0.0012, 0.0015, 0.002, 0.006, 0.02],
        }
    ).to_csv(bench / "bench.csv", index=False)
    out = tmp_path / "report"
    index = build_report(results, out, ["md", "html"])
    figures = [
        "runtime.png",
        "accuracy_cost.png",
        "scaling.png",
        "ranks.png",
        "metrics_synthbench.png",
        "toy_trajectories.png",
        "dynamics_toy.png",
        "dynamics_synthbench.png",
    ]
    md = index.read_text()
    page = (out / "index.html").read_text()
    for name in figures:
        check_image(out / "figures" / name)
        assert f"](figures/{name})" in md
        assert f'<img src="figures/{name}"' in page
    assert "could not be drawn" not in md
    # relative links only: the folder can be moved
    assert str(tmp_path) not in re.sub(r"`[^`]*`", "", md.split("\n", 2)[2])
    assert "<table>" in page and "<b>" in page


def test_scaling_plot_is_skipped_with_a_note_without_bench_csv(tmp_path: Path):
    records = [record("_tiny", "ls", s, {"mse_a": 0.4, "mse_b": 0.5}) for s in range(2)]
    md = build_report(write_all(tmp_path / "results", records), tmp_path / "report").read_text()
    assert "no `bench*.csv`" in md
    assert not (tmp_path / "report" / "figures" / "scaling.png").exists()


def test_toy_runtime_in_seconds_and_pareto_front(tmp_path: Path):
    results = write_all(tmp_path / "results", toy_records())
    md = build_report(results, tmp_path / "report", published=True).read_text()
    assert "toy: trajectories in loss space" in md
    assert "shorter than the standard 50,000 steps" in md
    # published toy runtimes become ratios to the paper's LS (60 s / 33 s for MGDA)
    line = table_line(md.split("toy: this suite beside the LDC-MTL paper")[1], "mgda")
    assert f"{60 / 33:.2f}" in line
    assert f"{2.0 - 60 / 33:.2f}" in line  # ours: total time 12 s / 6 s


def test_toy_table_gives_each_starting_point_its_final_point(tmp_path: Path):
    """n = 5 starting points are not seeds: the page shows each start's final (L1, L2), not a
    mean ± std across starts; the leaderboard CSV keeps the averages."""
    records = toy_records()
    out = tmp_path / "report"
    md = build_report(write_all(tmp_path / "results", records), out, ["md", "csv"]).read_text()
    section = md.split("## Benchmark: toy")[1].split("###")[0]
    assert "start 0: L1 ↓, L2 ↓" in section and "start 4: L1 ↓, L2 ↓" in section
    assert "±" not in table_line(section, "mgda").split("|")[3]
    final = {
        (r["config"]["method"], r["config"]["protocol"]["start"]): r["metrics"]["test"]
        for r in records
    }
    l1, l2 = final[("mgda", 2)]["L1"], final[("mgda", 2)]["L2"]
    cells = [c.strip() for c in table_line(section, "mgda").strip("|").split("|")]
    assert cells[1] == "5"
    assert cells[4] == f"{l1:.3f}, {l2:.2f}"  # L1 values reach 1.x: 3 decimals; L2 10.x: 2
    points = pd.read_csv(out / "tables" / "final_points_toy.csv")
    assert len(points) == len(records)
    board = pd.read_csv(out / "tables" / "leaderboard_toy.csv")
    ls_l1 = [v["L1"] for (m, _), v in final.items() if m == "ls"]
    assert csv_row(board, "ls")["L1"] == pytest.approx(statistics.fmean(ls_l1))


def test_one_number_format_per_column(tmp_path: Path):
    """A mean near zero gets the column's decimals, not twice as many (issue 15:
    ``0.00007059 ± 0.48088652`` beside ``-0.01095 ± 0.47513``)."""
    runs = {"ls": (0.5, -0.4998), "famo": (-0.5, 0.478)}  # means 0.0001 and -0.011
    records = [
        record("fmt", m, s, {"a_x": v}, metrics_info=info(a_x=False))
        for m, values in runs.items()
        for s, v in enumerate(values)
    ]
    md = build_report(write_all(tmp_path / "r", records), tmp_path / "report").read_text()
    for method, values in runs.items():
        # the column's largest mean, 0.011, gets 4 significant digits: 5 decimals for all
        cell = f"{statistics.fmean(values):.5f} ± {statistics.stdev(values):.5f}"
        assert cell in table_line(md, method).split("|")[3]


def test_latex_goes_through_the_styler(tmp_path: Path):
    """booktabs rules, escaping and marks by pandas' Styler; the report's glyphs in math."""
    records = [record("_tiny", "ls", s, {"mse_a": 0.5, "mse_b": 0.5}) for s in range(3)]
    records += [
        record("_tiny", "ldc_mtl", s, {"mse_a": 0.2, "mse_b": 0.3}, protocol={"lr": 0.0003})
        for s in range(2)
    ]
    out = tmp_path / "report"
    build_report(write_all(tmp_path / "r", records), out, ["tex"])
    tex = (out / "tables" / "leaderboard__tiny.tex").read_text()
    assert r"\begin{tabular}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"\textbf{ldc\_mtl [lr=0.0003]}" not in tex  # names are never marked
    assert r"ldc\_mtl [lr=0.0003]" in tex
    assert r"$\Delta$m\% $\downarrow$ (metric-avg)" in tex
    assert r"\textbf{-50.00 $\pm$ 0.00}" in tex


def test_cli_names_skipped_files_and_strict_fails(tmp_path: Path, capsys):
    results = write_all(tmp_path / "results", toy_records()[:2])
    (results / "broken.json").write_text("{not json")
    assert main(["report", str(results), "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "broken.json: not readable JSON" in err
    assert main(["report", str(results), "--out", str(tmp_path / "b"), "--strict"]) == 1
    err = capsys.readouterr().err
    assert "broken.json" in err and "1 file(s)" in err
    assert (tmp_path / "b" / "index.md").is_file()  # the report is written all the same
    (results / "broken.json").unlink()
    assert main(["report", str(results), "--out", str(tmp_path / "c"), "--strict"]) == 0


def test_listing_methods_imports_neither_matplotlib_nor_seaborn():
    code = (
        "import sys, contextlib, io\n"
        "from mtlbench.cli import main\n"
        "import mtlbench.report\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['list', 'methods'])\n"
        "print(sorted(m for m in ('matplotlib', 'seaborn') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_figure_helpers():
    from mtlbench.report.dynamics import _log_scale
    from mtlbench.report.figures import grid, palette_for

    assert grid(11, 5) == (3, 4) and grid(6, 5) == (2, 3) and grid(3, 5) == (1, 3)
    flat = {"ls": {"a": (np.ones(5), np.zeros(5))}}
    spike = {**flat, "db_mtl": {"a": (np.array([1.0, 2.0, 220.0, 3.0, 1.0]), np.zeros(5))}}
    assert not _log_scale(flat) and _log_scale(spike)
    first, second = palette_for(["a", "b"]).values()
    palette = palette_for(["ls", "mgda", "cagrad"], {"ls": first, "famo": second})
    assert palette["ls"] == first
    assert len({str(c) for c in palette.values()} | {str(second)}) == 4


def test_family_palette_gives_each_method_one_hue_and_its_variants_shades_of_it():
    """With many tuned variants, each base method keeps one distinct hue (the colour-blind
    palette while there are at most ten methods) and its further variants are shades of it: the
    same hue, darker or lighter. Before, every label drew its own husl hue, and variants of
    different methods came out nearly the same colour."""
    import colorsys

    from mtlbench.report.figures import colors, family_palette

    variants = {"ls": "ls", "ls [lr=0.01]": "ls", "ls [lr=0.1]": "ls"}
    variants |= {f"m{i} [lr=0.{i}]": f"m{i}" for i in range(9)}
    palette = family_palette(variants)
    bases = sorted(set(variants.values()))
    assert [palette[b] for b in bases] == colors(10)  # one colour-blind hue per method
    assert palette["m0 [lr=0.0]"] == palette["m0"]  # a method's only variant keeps its hue
    shades = [palette["ls"], palette["ls [lr=0.01]"], palette["ls [lr=0.1]"]]
    assert len({str(c) for c in shades}) == 3
    hues = [colorsys.rgb_to_hls(*c[:3])[0] for c in shades]
    assert max(hues) - min(hues) < 1e-9  # darker and lighter, never another hue
    light = [colorsys.rgb_to_hls(*c[:3])[1] for c in shades]
    assert light[1] < light[0] < light[2]


def test_records_of_a_real_trainer_run(tmp_path: Path, capsys):
    """Records written by the trainer itself (``mtlbench run`` on the tiny benchmark): the
    leaderboard's means are the records' test metrics, and the trainer's stored Δm% agrees with
    the report's (no mismatch note)."""
    results = tmp_path / "results"
    for method in ("ls", "famo"):
        for seed in (0, 1):
            args = ["run", "-b", "_tiny", "-m", method, "-s", str(seed), "--out", str(results)]
            assert main([*args, "-q"]) == 0
    capsys.readouterr()
    out = tmp_path / "report"
    md = build_report(results, out, ["csv"]).read_text()
    board = pd.read_csv(out / "tables" / "leaderboard__tiny.csv")
    recs = [rec for _, rec in scan(results).records]
    for method in ("ls", "famo"):
        mine = [r for r in recs if r["config"]["method"] == method]
        row = csv_row(board, method)
        assert row["n"] == 2
        a = [r["metrics"]["test"]["mse_a"] for r in mine]
        assert row["mse_a"] == pytest.approx(statistics.fmean(a))
        assert row["mse_a_std"] == pytest.approx(statistics.stdev(a))
        stored = [r["delta_m"]["metric_avg"] for r in mine]
        assert row["delta_m"] == pytest.approx(statistics.fmean(stored))
    assert "differs from the recomputed one" not in md


@pytest.mark.slow
def test_ten_thousand_records_report_correctly(tmp_path: Path):
    """10,000 records: every record counted, failures listed, the numbers right. No deadline:
    the time is measured by tests/bench_report.py (docs/reports.md)."""
    results = tmp_path / "results"
    expected = ten_thousand_records(results)
    out = tmp_path / "report"
    build_report(results, out, ["md", "csv", "tex", "html"], task_avg=True, published=True)
    md = (out / "index.md").read_text()
    assert "from 10000 run records" in md
    assert "failed (RuntimeError: boom)" in (out / "tables" / "missing.csv").read_text()
    board = pd.read_csv(out / "tables" / "leaderboard__tiny.csv")
    ls = csv_row(board, "ls [lr_mult=None]")
    assert ls["n"] == len(expected["ls_mse_a"])
    assert ls["mse_a"] == pytest.approx(statistics.fmean(expected["ls_mse_a"]))
    for name in ("runtime.png", "accuracy_cost.png", "toy_trajectories.png", "ranks.png"):
        check_image(out / "figures" / name)
