"""The record schema and its one reader (mtlbench.records)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtlbench.records import (
    SCHEMA,
    SCHEMA_V1,
    convergence,
    load_results,
    new_record,
    read_record,
    scan,
    to_row,
)


def _record(trial_id: str = "toy-ls-s0-abc", **changes):
    record = new_record(
        trial_id,
        {
            "benchmark": "toy",
            "method": "ls",
            "hparams": {},
            "seed": 0,
            "mode": "mtl",
            "task": None,
            "protocol": {"epochs": 2, "start": 3},
            "policies": {},
            "data_root": None,
            "device": "cpu",
        },
        sweep=None,
        environment={},
        runner={"host": "h", "pid": 1},
        started_at="2026-01-01",
    )
    record.update(changes)
    return record


def test_new_record_has_every_schema_key():
    from mtlbench.records import Record

    assert set(_record()) == set(Record.__annotations__)
    assert _record()["schema"] == SCHEMA


def test_version_1_records_load_with_metric_directions_from_the_benchmark(tmp_path: Path):
    old = _record(status="done")
    old["schema"] = SCHEMA_V1
    for key in ("metric_info", "resumes"):
        del old[key]
    (tmp_path / "old.json").write_text(json.dumps(old))
    record = read_record(tmp_path / "old.json")
    assert record["schema"] == SCHEMA and record["resumes"] == []
    assert {m["name"]: m["higher_is_better"] for m in record["metric_info"]} == {
        "L1": False,
        "L2": False,
    }


def test_scan_lists_what_it_skipped_and_why(tmp_path: Path):
    (tmp_path / "a.json").write_text(json.dumps(_record()))
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "foreign.json").write_text('{"schema": "other/1"}')
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "x.json").write_text("{")
    found = scan(tmp_path)
    assert [p.name for p, _ in found.records] == ["a.json"]
    reasons = dict((p.name, why) for p, why in found.skipped)
    assert set(reasons) == {"bad.json", "foreign.json"}
    assert "not readable JSON" in reasons["bad.json"]
    assert "'other/1'" in reasons["foreign.json"]
    with pytest.raises(ValueError, match="bad.json"):
        load_results(tmp_path, strict=True)


def test_to_row_puts_the_replicate_key_in_its_own_column():
    row = to_row(_record(status="done"), "a.json")
    assert row["start"] == 3
    assert json.loads(row["protocol"]) == {"epochs": 2}
    assert row["path"] == "a.json" and row["resumes"] == 0


def test_a_trial_in_two_folders_keeps_its_done_record(tmp_path: Path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    (tmp_path / "x" / "t.json").write_text(json.dumps(_record("t", status="done")))
    (tmp_path / "y" / "t.json").write_text(json.dumps(_record("t", status="failed")))
    assert scan(tmp_path).by_trial()["t"]["status"] == "done"


def test_convergence_marks_a_best_epoch_in_the_last_fifth_of_training():
    """The best validation epoch (lowest ``val_score``) is "at the end" when epoch + 1 >
    0.8 * epochs: of 10 epochs, 0-based epochs 8 and 9 are, 7 is not."""

    def curves(best: int, n: int = 10) -> dict:
        return {"epoch": list(range(n)), "val_score": [0.0 if e == best else 1.0 for e in range(n)]}

    assert convergence(curves(9), 10) == (9, True)
    assert convergence(curves(8), 10) == (8, True)
    assert convergence(curves(7), 10) == (7, False)
    # eval_every 5 over 20 epochs: evaluations after epochs 4, 9, 14, 19.
    sparse = {"epoch": [4, 9, 14, 19], "val_score": [3.0, 2.0, 1.0, 1.5]}
    assert convergence(sparse, 20) == (14, False)
    assert convergence({"epoch": [0, 1], "val_score": [float("nan"), 2.0]}, 2) == (1, True)
    assert convergence({}, 10) == (None, None)
    assert convergence(curves(3), None) == (None, None)


def test_to_row_derives_convergence_for_records_written_before_it_was_stored():
    record = _record()
    record["config"]["protocol"]["epochs"] = 5
    record["curves"] = {"epoch": [0, 1, 2, 3, 4], "val_score": [5.0, 4.0, 3.0, 2.0, 1.0]}
    record["selection"] = {"rule": "best_val_delta_m", "epoch": 4}
    row = to_row(record)
    assert (row["best_val_epoch"], row["selected_at_end"]) == (4, True)
    record["selection"].update(best_val_epoch=1, selected_at_end=False)  # stored wins
    assert (to_row(record)["best_val_epoch"], to_row(record)["selected_at_end"]) == (1, False)


def test_gzipped_records_are_records_and_count_as_finished(tmp_path: Path):
    """Committed leaderboards store ``gzip``-ed records (results/README.md): every reader takes
    them, a sweep over their folder finds nothing to run, and a trial written again replaces
    its ``.gz`` (one record per trial)."""
    import gzip

    from mtlbench.cli import main
    from mtlbench.records import record_path, write_record
    from mtlbench.run.state import pending, trial_status
    from mtlbench.sweep import load_spec

    results = tmp_path / "results"
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: packed\nresults: {results}\nmethods: [ls]\nexecutor: {{kind: local, workers: 1}}\n"
        "benchmarks:\n  toy:\n    protocol: {epochs: 2, steps_per_epoch: 5}\n"
    )
    assert main(["sweep", str(spec), "--device", "cpu", "-q", "--no-report"]) == 0
    (plain,) = results.glob("*.json")
    packed = plain.with_name(plain.name + ".gz")
    packed.write_bytes(gzip.compress(plain.read_bytes()))  # what `gzip results/x/*.json` does
    plain.unlink()
    trial_id = plain.name.removesuffix(".json")

    assert record_path(results, trial_id) == packed
    assert read_record(packed)["status"] == trial_status(results, trial_id) == "done"
    assert [p.name for p, _ in scan(results).records] == [packed.name]
    assert pending(load_spec(spec)) == []
    assert len(load_results(results)) == 1

    write_record(results, read_record(packed))
    assert [p.name for p in results.glob("*.json*")] == [plain.name]

    packed.write_bytes(b"\x1f\x8b not gzip")
    assert "not readable JSON" in scan(results).skipped[0][1]
