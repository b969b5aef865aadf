"""The record schema and its one reader (mtlbench.records)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtlbench.records import SCHEMA, SCHEMA_V1, load_results, new_record, read_record, scan, to_row


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
