"""Sweep specs (YAML) -> trials, each with a stable id; and what is done, failed or missing.

A spec::

    name: quickstart
    results: results/quickstart        # where records go (relative to the current folder)
    report: reports/quickstart         # optional: render the report when the sweep ends
    seeds: [0, 1, 2]
    methods: [ls, ldc_mtl, famo]       # or a mapping: {ldc_mtl: {lamb: [0.01, 0.1]}}
    executor: {kind: local, workers: 2}
    benchmarks:
      toy:
        protocol: {epochs: 50}         # fixed settings (protocol options, policies, hparams)
        grid: {start: [0, 1, 2, 3, 4]} # every combination becomes a trial
      multidigits:
        stl: true                      # add the single-task reference runs (one per task, seed)
        methods: [ls, mgda]            # optional: this benchmark's own method list
        resources: {...}               # SLURM resources of this benchmark (see executors)

In a method mapping, a list value is a grid (one trial per value) and a scalar is fixed.
The whole spec is checked before anything runs; every problem is reported at once, with the
line of the spec it comes from.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtlbench import benchmark as benchmarks
from mtlbench import extends
from mtlbench.labels import trial_labels
from mtlbench.method import names as method_names
from mtlbench.plugins import Plugin, spec_plugins
from mtlbench.registry import ConfigError, coerce
from mtlbench.run.options import ExecutorOptions, benchmark_resources, parse_executor
from mtlbench.run.slurm.resources import Resources
from mtlbench.seed_plan import SeedPlan, parse_seed_plan
from mtlbench.spec_yaml import (
    SpecError,
    item_line,
    line_of,
    read_spec,
    setting_line,
    strip_lines,
)
from mtlbench.trial import (
    STL,
    ResolvedTrial,
    Seed,
    Stage,
    TrialConfig,
    resolve,
    split_stages,
)
from mtlbench.tune import TunePlan, hook

SPEC_KEYS = {
    "name",
    "results",
    "report",
    "seeds",
    "methods",
    "executor",
    "benchmarks",
    "description",
    "data_root",
    "report_formats",
    "tune",
    "plugins",
}
BENCH_KEYS = {"protocol", "grid", "stl", "methods", "resources", "data_root", "seeds", "tune"}


@dataclass
class Sweep:
    """A checked sweep spec: its trials (the final runs of tuned methods join them once their
    tuning is selected: :func:`mtlbench.run.tuning.finalize`), its typed executor options and
    per-benchmark Slurm resources, and its tuning plans."""

    name: str
    path: Path | None
    results: Path
    report: Path | None
    trials: list[ResolvedTrial]
    executor: ExecutorOptions = field(default_factory=ExecutorOptions)
    resources: dict[str, Resources] = field(default_factory=dict)  # per benchmark
    report_formats: list[str] = field(default_factory=lambda: ["md"])
    grid_keys: set[str] = field(default_factory=set)  # settings the spec gives as lists
    tuning: list[TunePlan] = field(default_factory=list)  # one per tuned benchmark and method
    seeding: dict[str, SeedPlan] = field(default_factory=dict)  # sequential benchmarks' plans
    plugins: tuple[Plugin, ...] = ()  # `plugins:` (imported as the spec loads), `--plugin`
    base: extends.BaseLink | None = None  # the leaderboard it extends (mtlbench.extends)

    def stages(self) -> list[Stage]:
        """The trials in the stages they run in (:func:`mtlbench.trial.split_stages`)."""
        return split_stages(self.trials)

    def waiting(self) -> set[str]:
        """The benchmarks whose single-task references are still being tuned: the multi-task
        trials there wait, since their validation scores need the references' final runs."""
        return {p.benchmark for p in self.tuning if p.method == STL and p.selected is None}

    def ready_stages(self) -> list[Stage]:
        """:meth:`stages` less the trials that wait for tuned references (:meth:`waiting`)."""
        held = self.waiting()
        return split_stages(t for t in self.trials if t.mode == "stl" or t.benchmark not in held)

    def describe(self, stages: list[Stage] | None = None) -> str:
        """The plan of ``stages`` (default: every trial), in the order they run, stage by stage:
        each trial's id, benchmark, method (and task), seed and the settings that tell it apart
        from the other trials of its benchmark and method (the toy's ``start``, any grid key)."""
        stages = self.stages() if stages is None else stages
        labels = trial_labels({t.trial_id: t.to_dict() for t in self.trials}, self.grid_keys)
        todo = sum(len(stage) for stage in stages)
        lines = [f"sweep {self.name}: {todo} of {len(self.trials)} trials to run -> {self.results}"]
        for number, stage in enumerate(stages, 1):
            lines.append(f"stage {number} of {len(stages)}: {len(stage)} {stage.what}")
            width = max(len(t.trial_id) for t in stage)
            lines.extend(f"  {t.trial_id:<{width}}  {labels[t.trial_id]}" for t in stage)
        return "\n".join(lines)


def _grid(settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Expand list values into their cartesian product; scalars stay fixed."""
    keys = list(settings)
    options = [v if isinstance(v, list) else [v] for v in settings.values()]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*options)]


def load_spec(
    path: str | Path, *, only: Sequence[str] | None = None, results: str | Path | None = None
) -> Sweep:
    """Read and validate a sweep spec file; raises :class:`SpecError` listing every problem.
    ``only``: run these methods alone against the spec as a base, as a spec with ``extends``
    does (:func:`_derived`); ``results``: the results folder, instead of the spec's."""
    path = Path(path)
    raw = read_spec(path)
    derived = isinstance(raw, dict) and (only is not None or "extends" in raw)
    sweep = _derived(raw, path, only) if derived else parse_spec(raw, path)
    sweep.results = Path(results) if results is not None else sweep.results
    if sweep.base is not None and sweep.results.resolve() == sweep.base.results.resolve():
        raise SpecError(
            f"{path}: the results folder {sweep.results} is the base's own: a sweep that "
            "extends a leaderboard writes into a folder of its own (give results, or --results)"
        )
    return sweep


def _derived(raw: dict[str, Any], path: Path, only: Sequence[str] | None) -> Sweep:
    """The sweep of a spec that ``extends`` another, or of a spec run ``--only`` some methods:
    those methods under the base spec's comparison, without the base's single-task references
    (read from the base's records: :mod:`mtlbench.extends`)."""
    problems = _Problems(str(path))
    base_path, overrides = extends.split(raw, path, only, problems.add)
    own_plugins = spec_plugins(raw, path, problems.add) if "extends" in raw else ()  # their methods
    extends.check_methods(overrides, method_names(), problems.add)
    problems.raise_if_any()
    base_raw = read_spec(base_path)
    if isinstance(base_raw, dict) and "extends" in base_raw:
        raise SpecError(f"{base_path}: extends another spec: extend the leaderboard's own spec")
    base = parse_spec(base_raw, base_path)  # the base's own problems, with the base's lines
    merged = extends.merge(base_raw, overrides, base.name)
    merged.pop("plugins", None)  # each spec's files are relative to its own folder: set below
    sweep = parse_spec(merged, path)
    sweep.plugins = base.plugins + tuple(p for p in own_plugins if p not in base.plugins)
    sweep.trials = [t for t in sweep.trials if t.mode != "stl"]
    sweep.tuning = [p for p in sweep.tuning if p.method != STL]
    sweep.base = extends.BaseLink.of(base_path, base.results, base_raw)
    return sweep


class _Problems:
    """The problems of one spec, each ``FILE: line N: message``, in order, without repeats."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.lines: list[str] = []

    def add(self, message: str, line: int | None) -> None:
        text = f"{self.where}:{f' line {line}:' if line else ''} {message}"
        if text not in self.lines:
            self.lines.append(text)

    def raise_if_any(self) -> None:
        if self.lines:
            raise SpecError(
                f"{len(self.lines)} problem(s) in the sweep spec:\n  " + "\n  ".join(self.lines),
                problems=self.lines,
            )


def _seeds(
    value: Any, node: dict[str, Any], key: str, problems: _Problems
) -> tuple[list[int], SeedPlan | None]:
    """The valid seeds of a ``seeds`` entry, and its sequential plan when it is one (then the
    seeds are the plan's first: :mod:`mtlbench.seed_plan`); each bad seed is a problem on its
    own line."""
    if isinstance(value, dict):
        try:
            plan = parse_seed_plan(strip_lines(value))
        except ConfigError as error:
            problems.add(str(error), line_of(node, key))
            return [], None
        return plan.first, plan
    if not isinstance(value, list):
        problems.add(
            f"{key} must be a list of integers, got {strip_lines(value)!r}", line_of(node, key)
        )
        return [], None
    if not value:
        problems.add(f"{key} is empty: no trial would run", line_of(node, key))
    valid = []
    for index, seed in enumerate(value):
        try:
            valid.append(coerce(seed, Seed, f"{key}[{index}]"))
        except ConfigError as error:
            problems.add(str(error), item_line(value, index) or line_of(node, key))
    return valid, None


def _empty_lists(settings: Any, what: str, problems: _Problems) -> bool:
    """Report grid entries given as empty lists (they would expand to no trial)."""
    empty = [k for k, v in settings.items() if isinstance(v, list) and not v]
    for key in empty:
        problems.add(
            f"{what}: {key!r} is an empty list: no trial would run", line_of(settings, key)
        )
    return bool(empty)


class _BenchContext:
    """One benchmark's entry of a spec: its trials, and its problems with their lines."""

    def __init__(
        self,
        raw: dict[str, Any],
        benches: dict[str, Any],
        name: str,
        spec: Any,
        seeds: tuple[list[int], SeedPlan | None],
        problems: _Problems,
    ) -> None:
        self.raw, self.benches, self.name = raw, benches, name
        self.spec = spec if spec is not None else {}
        (self.seeds, self.seed_plan), self.problems = seeds, problems
        self.resources: Resources | None = None
        self.grid_keys: set[str] = set()  # the settings given as lists (grid dimensions)
        self.tuning: list[TunePlan] = []  # of each tuned method

    def problem(self, message: str, line: int | None) -> None:
        self.problems.add(f"benchmark {self.name!r}: {message}", line)

    def trials(self) -> list[ResolvedTrial]:
        spec, problems = self.spec, self.problems
        try:
            benchmarks.get(self.name)
        except ConfigError as error:
            problems.add(str(error), line_of(self.benches, self.name))
            return []
        if not isinstance(spec, dict):
            self.problem("settings must be a mapping", line_of(self.benches, self.name))
            return []
        for key in spec:
            if key not in BENCH_KEYS and not key.startswith("__"):
                self.problem(
                    f"unknown key {key!r} (valid: {', '.join(sorted(BENCH_KEYS))})",
                    line_of(spec, key),
                )
        fixed, grid = spec.get("protocol") or {}, spec.get("grid") or {}
        if not isinstance(fixed, dict) or not isinstance(grid, dict):
            self.problem("protocol and grid must be mappings", line_of(spec))
            return []
        _empty_lists(grid, f"benchmark {self.name!r}, grid", problems)
        self.grid_keys.update(k for k in grid if not k.startswith("__"))
        if "seeds" in spec:
            self.seeds, self.seed_plan = _seeds(spec["seeds"], spec, "seeds", problems)
        if spec.get("resources") is not None:
            self.resources, errors = benchmark_resources(strip_lines(spec["resources"]), self.name)
            node, where = spec["resources"], line_of(spec, "resources")
            for error in errors:
                self.problems.add(str(error), line_of(node, error.key) or where)
        owner = spec if "methods" in spec else self.raw
        methods = owner.get("methods")
        trials: list[ResolvedTrial] = []
        if methods is None:
            self.problem("no methods (give methods at the top or here)", line_of(spec))
        elif not isinstance(methods, (list, dict)):
            self.problem(
                "methods must be a list of names or a mapping name -> settings",
                line_of(owner, "methods"),
            )
        elif not strip_lines(methods) and not spec.get("stl"):
            self.problem("methods is empty: no trial would run", line_of(owner, "methods"))
        else:
            names = [str(m) for m in methods if not str(m).startswith("__")]
            for index, method in enumerate(names):
                settings = methods.get(method) if isinstance(methods, dict) else None
                line = (
                    line_of(methods, method)
                    if isinstance(methods, dict)
                    else item_line(methods, index)
                )
                trials += self.method_trials(method, settings or {}, line, fixed, grid)
        if spec.get("stl"):
            stl_fixed = {k: v for k, v in {**fixed, **grid}.items() if not isinstance(v, list)}
            trials += self.method_trials(STL, {}, line_of(spec, "stl"), stl_fixed, {})
        return trials

    def method_trials(
        self,
        method: str,
        settings: Any,
        line: int | None,
        fixed: dict[str, Any],
        grid: dict[str, Any],
    ) -> list[ResolvedTrial]:
        """The trials of one method (every grid combination and seed, every task for stl)."""
        if not isinstance(settings, dict):
            self.problem(f"method {method!r}: settings must be a mapping", line)
            return []
        if _empty_lists(settings, f"benchmark {self.name!r}, method {method!r}", self.problems):
            return []
        self.grid_keys.update(k for k, v in settings.items() if isinstance(v, list))
        tune = self.spec.get("tune", self.raw.get("tune"))
        if tune is not None:
            tuned = self.tuned_trials(
                method, {**strip_lines(fixed), **strip_lines(grid), **strip_lines(settings)}
            )
            if tuned is not None:
                return tuned
        tasks = benchmarks.get(self.name).tasks if method == STL else (None,)
        trials: list[ResolvedTrial] = []
        for combo in _grid({**strip_lines(grid), **strip_lines(settings)}):
            for task in tasks:
                for seed in self.seeds:
                    config = TrialConfig(
                        self.name,
                        method,
                        seed,
                        {**strip_lines(fixed), **combo},
                        task=task,
                        data_root=self.spec.get("data_root", self.raw.get("data_root")),
                    )
                    try:
                        trials.append(self.tagged(resolve(config)))
                    except ConfigError as error:
                        self.report(method, error, line, settings, fixed, grid)
                        break  # the other seeds have the same problem
        return trials

    def tagged(self, trial: ResolvedTrial) -> ResolvedTrial:
        """``trial`` with the benchmark's sequential seed plan in its config (when it has one)."""
        if self.seed_plan is None:
            return trial
        return dataclasses.replace(trial, seeding=self.seed_plan.tag())

    def tuned_trials(self, method: str, settings: dict[str, Any]) -> list[ResolvedTrial] | None:
        """A tuned method's tuning trials (:func:`mtlbench.tune.hook`; its final runs join
        once they are selected; the reference ``stl``: each task's); None when the spec's
        tuning leaves this method out."""
        owner = self.spec if "tune" in self.spec else self.raw
        data_root = self.spec.get("data_root", self.raw.get("data_root"))
        try:
            tuned = hook(
                self.name,
                method,
                settings,
                owner["tune"],
                self.seeds,
                data_root,
                bool(self.spec.get("stl")),
            )
        except ConfigError as error:
            self.problem(f"method {method!r}: {error}", line_of(owner, "tune"))
            return []
        if tuned is None:
            return None
        for plan in tuned:  # their final runs are the sequential part
            plan.seeding = self.seed_plan.tag() if self.seed_plan else None
        self.tuning += tuned
        return [t for plan in tuned for ts in plan.trials for t in ts]

    def report(
        self,
        method: str,
        error: ConfigError,
        method_line: int | None,
        settings: dict[str, Any],
        fixed: dict[str, Any],
        grid: dict[str, Any],
    ) -> None:
        """Each problem of a trial's config, at the line that sets the value at fault: the
        method's own settings, else the benchmark's grid or protocol, else the method's name."""
        for problem in getattr(error, "errors", [error]):
            own = setting_line([settings], problem.key)
            shared = setting_line([grid, fixed], problem.key)
            message = str(problem)
            if problem.key == "method":
                self.problem(message, method_line)
            elif (
                own is None
                and shared is not None
                and message.startswith(("protocol.", "policies."))
            ):
                self.problem(message, shared)  # bad for every method: said once
            else:
                self.problem(f"method {method!r}: {message}", own or shared or method_line)


def parse_spec(raw: Any, path: Path | None = None) -> Sweep:
    """Validate a spec (as read by :func:`load_spec`, or a plain mapping) and resolve its
    trials; raises :class:`SpecError` listing every problem, each with the line it comes from."""
    problems = _Problems(str(path) if path else "<spec>")
    if not isinstance(raw, dict):
        raise SpecError(
            f"{problems.where}: a sweep spec is a mapping with name, seeds, methods, benchmarks"
        )
    for key in raw:
        if key not in SPEC_KEYS and not key.startswith("__"):
            problems.add(
                f"unknown key {key!r} (valid: {', '.join(sorted(SPEC_KEYS))})", line_of(raw, key)
            )
    before = len(problems.lines)
    plugins = spec_plugins(raw, path, problems.add)
    if len(problems.lines) > before:  # its names would be unknown: say only what is wrong
        problems.raise_if_any()
    name = raw.get("name") or (path.stem if path else "sweep")
    seeds = _seeds(raw.get("seeds", [0]), raw, "seeds", problems)
    benches = raw.get("benchmarks")
    if not isinstance(benches, dict) or not strip_lines(benches):
        problems.add(
            "benchmarks must be a mapping of benchmark name -> settings", line_of(raw, "benchmarks")
        )
        benches = {}

    trials: list[ResolvedTrial] = []
    tuning: list[TunePlan] = []
    resources: dict[str, Resources] = {}
    seeding: dict[str, SeedPlan] = {}
    grid_keys: set[str] = set()
    for bench_name, bench_spec in benches.items():
        if bench_name.startswith("__"):
            continue
        context = _BenchContext(raw, benches, bench_name, bench_spec, seeds, problems)
        trials.extend(context.trials())
        grid_keys |= context.grid_keys
        tuning += context.tuning
        if context.resources is not None:
            resources[bench_name] = context.resources
        if context.seed_plan is not None:
            seeding[bench_name] = context.seed_plan
    if not trials and not problems.lines:
        problems.add("the spec expands to no trial", line_of(raw))
    executor, errors = parse_executor(strip_lines(raw.get("executor")))
    for error in errors:
        node = raw.get("executor")
        problems.add(str(error), line_of(node, error.key) or line_of(raw, "executor"))
    problems.raise_if_any()
    seen: set[str] = set()
    trials = [t for t in trials if not (t.trial_id in seen or seen.add(t.trial_id))]
    results = Path(raw.get("results") or Path("results") / name)
    report = raw.get("report")
    return Sweep(
        name=name,
        path=path,
        results=results,
        report=Path(report) if report else None,
        trials=trials,
        executor=executor,
        resources=resources,
        report_formats=list(raw.get("report_formats") or ["md"]),
        grid_keys=grid_keys,
        tuning=tuning,
        seeding=seeding,
        plugins=plugins,
    )
