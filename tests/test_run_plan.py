"""Single-task trials run first, and every plan lists them first: the dry run, ``pending``,
``mtlbench status --spec``."""

from __future__ import annotations

import tiny_benchmark  # noqa: F401  (registers the "_tiny" benchmark)
from mtlbench.run.state import collect, pending
from mtlbench.sweep import parse_spec


def _sweep(results):
    return parse_spec(
        {
            "name": "order",
            "results": str(results),
            "seeds": [0, 1],
            "methods": ["ls", "mgda"],
            "benchmarks": {"_tiny": {"stl": True, "protocol": {"epochs": 1}}},
        }
    )


def test_single_task_trials_are_planned_and_listed_first(tmp_path):
    sweep = _sweep(tmp_path / "results")
    assert sweep.trials[0].mode == "mtl"  # the spec lists them last ...
    todo = pending(sweep)
    modes = [t.mode for t in todo]
    assert modes == sorted(modes, key=lambda m: m != "stl") and modes[0] == "stl"  # ... run first
    lines = sweep.describe().splitlines()[1:]
    ids = [line.split()[0] for line in lines if not line.startswith("stage ")]
    assert ids == [t.trial_id for t in todo]
    (tmp_path / "results").mkdir()
    rows = collect(tmp_path / "results", sweep.trials).rows  # all pending
    stl = [t.trial_id for t in todo if t.mode == "stl"]
    assert [r.trial_id for r in rows][: len(stl)] == stl


def test_status_tells_the_toy_starts_apart(tmp_path):
    from mtlbench.run.status_cli import render

    sweep = parse_spec(
        {
            "name": "toy",
            "results": str(tmp_path),
            "methods": ["ls"],
            "seeds": [0],
            "benchmarks": {"toy": {"protocol": {"epochs": 1}, "grid": {"start": [0, 3]}}},
        }
    )
    rows = collect(tmp_path, sweep.trials).rows
    assert sorted(r.label for r in rows) == ["toy ls seed=0 start=0", "toy ls seed=0 start=3"]
    assert "start=3" in render(collect(tmp_path, sweep.trials))
