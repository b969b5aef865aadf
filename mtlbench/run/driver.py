"""The one sweep driver: plan -> claim -> run -> summary.

:class:`SweepRun` owns the sequence that ``mtlbench sweep`` (and any caller) runs:

1. **plan**: the tuned methods whose tuning trials have all finished get their selected
   configuration and its final runs (:func:`mtlbench.run.tuning.finalize`), then the trials
   left to run, in their stages (:func:`mtlbench.run.state.pending_stages`);
2. **claim and run**: the executor gets them as one typed :class:`~mtlbench.run.base.Batch`;
   each trial is claimed before it runs (:func:`mtlbench.run.base.run_one`);
3. **again** while the run made new work: final runs selected by the tuning that just
   finished, the next wave of a sequential sweep's seeds (:mod:`mtlbench.run.seeding`), and
   the multi-task trials that waited for tuned single-task references
   (:meth:`mtlbench.sweep.Sweep.ready_stages`), go to the executor in the next batch. A trial
   goes to the executor at most once per sweep (a failed, cancelled or still-queued one waits
   for the next ``mtlbench sweep``), so an untuned sweep is one ``executor.run`` call, a tuned
   one two, one with tuned references three, and a sequential one one more per wave;
4. **summary**: one status per trial handed to the executor. A trial it returned no status
   for (another process claimed or finished it first; a Slurm job already queued, or not
   waited for) counts as :data:`~mtlbench.run.lease.ELSEWHERE`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mtlbench import benchmark as benchmarks
from mtlbench import extends, references
from mtlbench.registry import ConfigError
from mtlbench.run.base import Batch, Executor, tidy_checkpoints
from mtlbench.run.lease import ELSEWHERE
from mtlbench.run.progress import summary
from mtlbench.run.seeding import grow
from mtlbench.run.state import pending_stages
from mtlbench.run.tuning import finalize
from mtlbench.stage import Stage
from mtlbench.sweep import Sweep
from mtlbench.tune import describe_budget

SUCCEEDED = ("done", "diverged", ELSEWHERE)


def require_data(stages: list[Stage]) -> None:
    """Raise :class:`~mtlbench.benchmark.DataUnavailable` when a benchmark of ``stages`` lacks
    its data (before anything runs: one message per missing piece, with where to get it)."""
    roots = {t.benchmark: t.data_root for stage in stages for t in stage}
    for name in sorted(roots):
        cls = benchmarks.get(name)
        missing = cls(cls.default_protocol(), roots[name]).check_data()
        if missing:
            raise benchmarks.DataUnavailable(f"{name} data not ready: " + " | ".join(missing))


def require_base(sweep: Sweep) -> None:
    """For a sweep that extends a leaderboard (:mod:`mtlbench.extends`): raise
    :class:`ConfigError` unless the base's results folder holds the single-task references of
    every benchmark that needs them (no published reference), for the sweep's data protocol."""
    if sweep.base is None:
        return
    base = sweep.base.results
    if not base.is_dir():
        raise ConfigError(
            f"the base results folder {base} of {sweep.base.spec} does not exist: the references "
            "are read from there (check out or run the base leaderboard first)"
        )
    first = {t.benchmark: t for t in sweep.trials}
    for name, trial in sorted(first.items()):
        cls = benchmarks.get(name)
        if cls(trial.protocol, trial.data_root).reference() is not None:
            continue  # published: nothing to read from the base
        if references.stl_reference(base, cls, trial.protocol.to_dict()) is None:
            raise ConfigError(
                f"{base} has no single-task references of {name} for this protocol (a done stl "
                f"record of every task): run the base sweep {sweep.base.spec} first"
            )


class SweepRun:
    """One ``mtlbench sweep`` of ``sweep`` on ``executor`` (see the module docstring)."""

    def __init__(self, sweep: Sweep, executor: Executor, retry_failed: bool = False) -> None:
        self.sweep = sweep
        self.executor = executor
        self.retry_failed = retry_failed
        self._todo: list[Stage] | None = None
        self._base_checked = False

    def _check_base(self) -> None:
        if not self._base_checked:
            require_base(self.sweep)
            self._base_checked = True

    @property
    def results(self) -> Path:
        return Path(self.sweep.results)

    def plan(self) -> list[Stage]:
        """The stages left to run (read once; :meth:`run` plans again only for new trials)."""
        if self._todo is None:
            self._check_base()
            self._advance()
            self._todo = self._pending(set())
        return self._todo

    def _advance(self) -> None:
        """What the records decide now: the final runs of finished tunings, then the next
        wave of sequential seeds (:func:`mtlbench.run.seeding.grow`), both replayed from the
        records when a sweep starts again."""
        finalize(self.sweep)
        while grow(self.sweep):  # a wave whose runs are all on record decides the next one
            pass

    def _pending(self, handed: set[str]) -> list[Stage]:
        """The ready trials left to run (:func:`pending_stages`), less those ``handed`` to the
        executor earlier in this sweep."""
        stages = pending_stages(self.results, self.sweep.ready_stages(), self.retry_failed)
        kept = [Stage(s.kind, tuple(t for t in s if t.trial_id not in handed)) for s in stages]
        return [stage for stage in kept if len(stage)]

    def batch(self, stages: list[Stage]) -> Batch:
        sweep = self.sweep
        return Batch(sweep.name, self.results, tuple(stages), dict(sweep.resources), sweep.plugins)

    def describe(self) -> str:
        """The dry run: the trials left, stage by stage, the tuning budget, and what the
        executor would do beyond running them (the Slurm job arrays)."""
        todo = self.plan()
        lines = [self.sweep.describe(todo), describe_budget(self.sweep.tuning)]
        for bench, seeding in self.sweep.seeding.items():
            lines.append(
                f"{bench}: sequential seeds: {seeding.min} to start, up to {seeding.max}, "
                f"{seeding.step} a wave while the 95% CI of mean Δm% is wider than "
                f"±{seeding.ci_halfwidth:g}"
            )
        held = self.sweep.waiting()
        waiting = [t for t in self.sweep.trials if t.mode != "stl" and t.benchmark in held]
        if waiting:
            lines.append(
                f"{len(waiting)} multi-task trial(s) of {', '.join(sorted(held))} wait for the "
                "tuned single-task references (they run once those are selected)"
            )
        lines.append(self.executor.plan(self.batch(todo)) if todo else "")
        return "\n".join(line for line in lines if line)

    def run(
        self, progress: bool = True, echo: Callable[[str], None] | None = None
    ) -> dict[str, str]:
        """Run the sweep to the end (see the module docstring); returns ``{trial_id: status}``
        for every trial handed to the executor, and says the summary through ``echo``."""
        echo = echo or _say
        self._check_base()
        if self.sweep.base is not None:  # the folder names its base before anything runs
            extends.claim(self.results, self.sweep.base)
        todo = self.plan()
        tidy_checkpoints(self.results, self.sweep.trials)
        require_data(todo)
        left = sum(len(stage) for stage in todo)
        total = len(self.sweep.trials)
        held = total - sum(len(stage) for stage in self.sweep.ready_stages())
        after = f" ({held} more once the single-task references are tuned)" if held else ""
        echo(
            f"sweep {self.sweep.name}: {total} trials, {total - held - left} already finished, "
            f"{left} to run{after} -> {self.results}"
        )
        statuses: dict[str, str] = {}
        while todo:
            batch = self.batch(todo)
            statuses.update(self.executor.run(batch, progress=progress))
            for trial in batch.trials:
                statuses.setdefault(trial.trial_id, ELSEWHERE)
            self._advance()
            todo = self._pending(set(statuses))
        if statuses:
            echo(f"sweep {self.sweep.name}: {summary(statuses.values())}")
        return statuses


def _say(text: str) -> None:
    print(text, flush=True)


def succeeded(statuses: dict[str, str]) -> bool:
    """Whether every trial ended done or diverged (a diverged run is a result), or was left to
    another process."""
    return all(s in SUCCEEDED for s in statuses.values())
