"""Single-task trials run first, and every plan lists them first: the dry run, ``pending``,
``mtlbench status --spec``; the sweep driver hands them to the executor in typed stages."""

from __future__ import annotations

import tiny_benchmark  # noqa: F401  (registers the "_tiny" benchmark)
from mtlbench.run.base import ELSEWHERE, Batch, Executor
from mtlbench.run.driver import SweepRun, succeeded
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


class _Recorder(Executor):
    """An executor that runs nothing: it keeps each batch and reports ``done`` for all but the
    trials named in ``elsewhere`` (which another process took)."""

    def __init__(self, elsewhere: set[str] = frozenset()) -> None:
        self.batches: list[Batch] = []
        self.elsewhere = elsewhere

    @classmethod
    def from_options(cls, options, device):  # pragma: no cover - not built from a spec here
        return cls()

    def run(self, batch: Batch, progress: bool = True) -> dict[str, str]:
        self.batches.append(batch)
        return {t.trial_id: "done" for t in batch.trials if t.trial_id not in self.elsewhere}


def test_the_driver_hands_one_typed_batch_and_accounts_for_every_trial(tmp_path):
    """An untuned sweep is one executor call, with the stages computed once (STL first); a
    trial the executor returns nothing for counts as left to another process."""
    sweep = _sweep(tmp_path / "results")
    stl_first = [t.trial_id for t in pending(sweep)]
    executor = _Recorder(elsewhere={stl_first[-1]})
    said: list[str] = []
    statuses = SweepRun(sweep, executor).run(progress=False, echo=said.append)
    (batch,) = executor.batches
    assert [s.kind for s in batch.stages] == ["stl", "mtl"]
    assert [t.trial_id for t in batch.trials] == stl_first
    assert batch.name == "order" and batch.results == tmp_path / "results"
    assert statuses[stl_first[-1]] == ELSEWHERE and len(statuses) == len(stl_first) == 8
    assert said == [
        f"sweep order: 8 trials, 0 already finished, 8 to run -> {tmp_path / 'results'}",
        "sweep order: done=7; 1 left to another process",
    ]
    assert succeeded(statuses) and not succeeded({**statuses, stl_first[0]: "failed"})


def test_the_dry_run_lists_the_stages_left(tmp_path):
    sweep = _sweep(tmp_path / "results")
    text = SweepRun(sweep, _Recorder()).describe()
    assert text.splitlines()[0] == f"sweep order: 8 of 8 trials to run -> {tmp_path / 'results'}"
    assert "stage 1 of 2: 4 single-task references" in text
    assert "stage 2 of 2: 4 multi-task trials" in text
    assert not (tmp_path / "results").exists()  # a dry run writes nothing
