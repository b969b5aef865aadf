"""Tuned leaderboards (issue 22): rows named by method, and the configurations the tuning stages
selected in a table of their own, with the range each value was drawn from."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from report_records import record, write_all

from mtlbench.report import build_report
from mtlbench.report.load import read_results
from mtlbench.report.selected import describe_range, edge_note, selected_configs
from mtlbench.report.variants import prepare
from mtlbench.space import Choice, IntRange, LogUniform

TUNE = {"sampler": "random", "budget": 4, "seeds": [9], "metric": "val_delta_m", "seed": 0}


def _tuned(method: str, seed: int, test: dict[str, float], selected: dict[str, Any]) -> dict:
    """A final run of ``method`` with the settings its tuning stage selected (as mtlbench.tune
    writes them: the values in the config, the keys in ``tuning.selected``)."""
    protocol = {k.split(".", 1)[1]: v for k, v in selected.items() if k.startswith("protocol.")}
    hparams = {k.split(".", 1)[1]: v for k, v in selected.items() if k.startswith("method.")}
    rec = record("_tiny", method, seed, test, protocol=protocol, hparams=hparams)
    rec["config"]["stage"] = "final"
    rec["config"]["tuning"] = {**TUNE, "selected": selected}
    return rec


def _sweep() -> list[dict]:
    """STL at the benchmark's lr (0.01); FAMO and LS tuned, each at another lr."""
    out = [
        record("_tiny", "stl", s, {t: 0.5}, task=t.split("_")[0])
        for s in (0, 1)
        for t in ("mse_a", "mse_b")
    ]
    for seed in (0, 1):
        out.append(_tuned("ls", seed, {"mse_a": 0.5, "mse_b": 0.5}, {"protocol.lr": 0.03}))
        famo = {"protocol.lr": 0.002, "method.gamma": 0.001}
        out.append(_tuned("famo", seed, {"mse_a": 0.4, "mse_b": 0.5}, famo))
    return out


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_a_tuned_leaderboard_names_methods_and_tables_their_selected_values(tmp_path: Path):
    folder = write_all(tmp_path / "results", _sweep())
    index = build_report(folder, tmp_path / "report", ["md", "csv", "tex"]).read_text()
    board = _csv(tmp_path / "report" / "tables" / "leaderboard__tiny.csv")
    assert [r["method"] for r in board if r["role"] == "method"] == ["famo", "ls"]
    assert "[lr=" not in index  # no selected value as a label
    assert "shown in brackets" not in index
    assert "### _tiny: selected configurations" in index
    rows = _csv(tmp_path / "report" / "tables" / "selected__tiny.csv")
    # Leaderboard order (FAMO's Δm% is lower), the protocol's lr first. The lr's range is the
    # protocol space, 0.1 to 10 times the lr without tuning (_tiny's 0.01): [0.001, 0.1]; FAMO's
    # gamma space is Choice(0.0, 0.001, 0.01) and its default 0.01 (methods/famo.py).
    assert [(r["method"], r["setting"], r["selected"], r["untuned"], r["range"]) for r in rows] == [
        ("famo", "lr (protocol)", "0.002", "0.01", "log-uniform [0.001, 0.1] (0.1 to 10 × 0.01)"),
        ("famo", "gamma", "0.001", "0.01", "one of 0, 0.001, 0.01"),
        ("ls", "lr (protocol)", "0.03", "0.01", "log-uniform [0.001, 0.1] (0.1 to 10 × 0.01)"),
    ]
    assert "| famo     | lr (protocol) | 0.002" in index
    assert "|          | gamma         | 0.001" in index  # the method named on its first row
    tex = (tmp_path / "report" / "tables" / "selected__tiny.tex").read_text()
    assert r"(0.1 to 10 $\times$ 0.01)" in tex


def test_tuned_variants_that_differ_only_in_selected_values_keep_their_brackets(tmp_path):
    """Two tuned sweeps of UW in one folder selected different lrs: without the brackets the
    two would share a label and be averaged together."""
    records = _sweep()
    for seed in (0, 1):
        records.append(_tuned("uw", seed, {"mse_a": 0.4, "mse_b": 0.4}, {"protocol.lr": 0.02}))
        records.append(_tuned("uw", seed, {"mse_a": 0.6, "mse_b": 0.6}, {"protocol.lr": 0.05}))
    df = prepare(read_results(write_all(tmp_path / "results", records)).frame)
    labels = set(df.loc[df["mode"] != "stl", "variant"])
    assert labels == {"ls", "famo", "uw [lr=0.02]", "uw [lr=0.05]"}
    configs = selected_configs(df)
    assert set(configs["method"]) == labels


def test_hand_made_variants_beside_a_tuned_method_keep_their_brackets(tmp_path):
    records = _sweep()
    for seed in (0, 1):
        for lr in (0.01, 0.0003):  # a grid over the protocol's lr, not tuned
            test = {"mse_a": 0.45, "mse_b": 0.5}
            records.append(record("_tiny", "mgda", seed, test, protocol={"lr": lr}))
    df = prepare(read_results(write_all(tmp_path / "results", records)).frame)
    labels = set(df.loc[df["mode"] != "stl", "variant"])
    assert labels == {"ls", "famo", "mgda", "mgda [lr=0.0003]"}
    assert "mgda" not in set(selected_configs(df)["base_method"])  # not tuned: not tabled


def test_a_value_outside_the_declared_space_is_flagged(tmp_path):
    """FAMO's gamma space is Choice(0.0, 0.001, 0.01): 0.5 cannot come from it (the space must
    have changed since the sweep ran)."""
    records = [
        _tuned("famo", s, {"mse_a": 0.4, "mse_b": 0.5}, {"method.gamma": 0.5}) for s in (0, 1)
    ]
    df = prepare(read_results(write_all(tmp_path / "results", records)).frame)
    (row,) = selected_configs(df).to_dict("records")
    assert row["range"].endswith("(the value lies outside: the space changed since the sweep ran)")


def test_an_untuned_sweep_has_no_selected_configurations(tmp_path):
    records = [record("_tiny", "ls", s, {"mse_a": 0.5, "mse_b": 0.5}) for s in (0, 1)]
    index = build_report(write_all(tmp_path / "results", records), tmp_path / "r").read_text()
    assert "selected configurations" not in index


@pytest.mark.parametrize(
    ("space", "default", "sampler", "text"),
    [
        # 0.1 x 0.003 and 10 x 0.003, at four significant digits
        (LogUniform(0.1, 10.0, relative=True), 0.003, "random",
         "log-uniform [0.0003, 0.03] (0.1 to 10 × 0.003)"),
        (LogUniform(0.1, 10.0, points=5, relative=True), 0.003, "grid",
         "log-uniform [0.0003, 0.03] (0.1 to 10 × 0.003, grid of 5)"),
        (LogUniform(0.1, 10.0, relative=True), None, "random",
         "log-uniform [0.1, 10] × the untuned value"),
        (LogUniform(0.005, 0.1), 0.025, "random", "log-uniform [0.005, 0.1]"),
        (IntRange(1, 4), 2, "random", "integers 1 to 4"),
        (Choice(0.0, 0.5, 0.9), 0.9, "grid", "one of 0, 0.5, 0.9"),
        (None, 0.1, "random", "not declared by this installation"),
    ],
)  # fmt: skip
def test_ranges_are_written_in_the_numbers_of_the_run(space, default, sampler, text):
    assert describe_range(space, default, sampler) == text


def test_edge_marks_the_extremes_of_the_trials_and_of_the_range():
    """The lr space is 0.1 to 10 x the untuned value (log-uniform): with 0.001 untuned it is
    [1e-4, 1e-2], whose top tenth in log scale starts at 1e-4 * 100 ** 0.9 = 6.31e-3."""
    lr = LogUniform(0.1, 10.0, relative=True)
    tried = [2e-4, 9e-4, 3e-3]
    assert edge_note(lr, 3e-3, 0.001, tried) == "the largest of 3 values tried"
    assert edge_note(lr, 9e-4, 0.001, tried) == ""
    assert edge_note(lr, 2e-4, 0.001, tried) == "the smallest of 3 values tried"
    top = edge_note(lr, 7e-3, 0.001, [*tried, 7e-3])
    assert top == "the largest of 4 values tried; in the top tenth of its range"
    assert edge_note(lr, 1.2e-4, 0.001, []) == "in the bottom tenth of its range"
    assert edge_note(lr, 6.0e-3, 0.001, []) == ""  # just below the top tenth
    assert edge_note(Choice(0.01, 0.05, 0.1), 0.1, None, [0.1]) == "the highest choice"
    assert edge_note(IntRange(1, 4), 1, None, [1, 1]) == "the range's low end"


def test_the_selected_table_marks_a_value_at_an_edge(tmp_path: Path):
    records = _sweep()
    for i, lr in enumerate((0.003, 0.03)):  # LS tried 0.003 and 0.03 and selected 0.03
        trial = record("_tiny", "ls", 9, {"mse_a": 0.6, "mse_b": 0.6}, protocol={"lr": lr})
        trial["trial_id"] += f"-tune{i}"
        trial["config"]["stage"] = "tune"
        records.append(trial)
    folder = write_all(tmp_path / "results", records)
    build_report(folder, tmp_path / "report", ["md", "csv"])
    rows = _csv(tmp_path / "report" / "tables" / "selected__tiny.csv")
    edges = {(r["method"], r["setting"]): r["edge"] for r in rows}
    assert edges[("ls", "lr (protocol)")] == "the largest of 2 values tried"
    assert edges[("famo", "lr (protocol)")] == ""  # no tuning trials of famo in this folder


def test_an_option_that_is_not_the_papers_is_named_on_a_methods_only_variant(tmp_path):
    """LDC-MTL's ``router_warmup`` is ours (Method.not_in_paper): a run that sets it is labelled
    with it even as the method's only variant; at its default 0 the row is plain."""
    from mtlbench.report.variants import not_in_paper

    assert not_in_paper("ldc_mtl", {"router_warmup": 24000, "lamb": 0.01}) == [
        ("method.router_warmup", "router_warmup=24000")
    ]
    assert not_in_paper("ldc_mtl", {"router_warmup": 0}) == []
    assert not_in_paper("no_such_method", {"router_warmup": 1}) == []
    runs = [
        record("_tiny", m, s, {"mse_a": 0.5, "mse_b": 0.5}, hparams=h)
        for m, h in (("ldc_mtl", {"router_warmup": 10}), ("ls", {}))
        for s in (0, 1)
    ]
    index = build_report(write_all(tmp_path / "r", runs), tmp_path / "out", ["md"]).read_text()
    assert "| ldc_mtl [router_warmup=10] " in index and "| ls " in index


def test_declared_space_reads_a_method_before_anything_imported_the_built_ins():
    """A fresh interpreter that imports only the report module still finds FAMO's declared
    space (the registry fills on first use, not as a side effect of another import)."""
    import subprocess
    import sys

    code = (
        "from mtlbench.report.selected import declared_space as d;"
        "print(d('famo', 'method.gamma'), d('no_such_method', 'method.x'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "Choice(values=(0.0, 0.001, 0.01)) None"
