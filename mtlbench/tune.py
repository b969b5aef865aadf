"""The tuning stage of a sweep: equal budgets, validation-only selection, then the final runs.

A sweep spec's ``tune`` block (top level, or per benchmark, which replaces it)::

    tune: {budget: 8, sampler: random, metric: val_delta_m, seeds: [100], seed: 0}

gives every tuned method of the benchmark the same ``budget`` of hyper-parameter configurations,
each run with every tuning seed, drawn from the method's declared space (``Method.search_space``)
and the protocol's learning rate (:data:`mtlbench.space.PROTOCOL_SPACE`). A config's score is
the mean over tuning seeds of its records' validation score at the selected epoch (``metrics.val``):
``val_delta_m`` is the metric-averaged Δm% against the same reference the report uses (the
benchmark's published one, else the STL records of the results folder), ``val_<metric>`` one
metric, signed so that lower is better; a diverged or failed config scores ``+inf``. The best
config (ties: the first drawn) then runs with the sweep's seeds: the test table. The test set is
never read to select.

Tuning trials are ordinary trials (records, resume, SLURM arrays, config-hash ids); their config
says ``stage: tune``, and the final runs ``stage: final`` with the tuning settings, so a report
can count them and tell tuned runs from runs at untuned defaults. The samplers are seeded
expansions (docs/tuning.md says why not optuna): ``grid`` draws ``budget`` points without
replacement from the product of the spaces' grids, ``random`` ``budget`` distinct draws from the
spaces' distributions; both are deterministic, so a resumed sweep finds the same trials. Keys a
spec fixes for a method (``methods: {famo: {gamma: 0.001}}``) leave its space.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from mtlbench import benchmark as benchmarks
from mtlbench.method import METHODS
from mtlbench.registry import ConfigError
from mtlbench.space import PROTOCOL_SPACE, Side, Space
from mtlbench.trial import STL, ResolvedTrial, StagedTrial, TrialConfig, resolve, staged
from mtlbench.tune_widen import beyond_space, edge_sides, parse_widen

Sampler = Literal["grid", "random", "stratified"]
SAMPLERS = ("grid", "random", "stratified")
TUNE_KEYS = {"budget", "sampler", "metric", "seeds", "seed", "methods", "widen"}


# ---------------------------------------------------------------------------------------------
# The tune block and the spaces
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TuneSpec:
    """A parsed ``tune`` block. ``methods``: the methods tuned (None: all of the benchmark's)."""

    budget: int
    sampler: Sampler = "random"
    metric: str = "val_delta_m"
    seeds: tuple[int, ...] = (0,)
    seed: int = 0
    methods: tuple[str, ...] | None = None
    widen: float | None = None  # the factor of one widening round (mtlbench.tune_widen)

    def tag(self) -> dict[str, Any]:
        """What a final run records about its tuning (and its id hashes; ``widen`` only when
        set, so that the ids of specs without it do not move)."""
        out: dict[str, Any] = {
            "budget": self.budget,
            "sampler": self.sampler,
            "metric": self.metric,
            "seeds": list(self.seeds),
            "seed": self.seed,
        }
        if self.widen is not None:
            out["widen"] = {"factor": self.widen}
        return out


def _int_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    )


def parse_tune(raw: Any) -> TuneSpec:
    """A ``tune`` block as a :class:`TuneSpec`; raises ConfigError listing every problem."""
    if not isinstance(raw, Mapping):
        raise ConfigError("tune must be a mapping: {budget, sampler, metric, seeds}")
    problems = [f"unknown key {k!r}" for k in raw if k not in TUNE_KEYS and not k.startswith("__")]
    budget = raw.get("budget")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        problems.append(f"budget must be a positive integer, got {budget!r}")
    sampler = raw.get("sampler", "random")
    if sampler == "tpe":
        problems.append(
            "sampler 'tpe' is not supported: it needs sequential feedback; use stratified, grid "
            "or random (docs/tuning.md)"
        )
    elif sampler not in SAMPLERS:
        problems.append(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    metric = raw.get("metric", "val_delta_m")
    if not isinstance(metric, str) or not metric.startswith("val_"):
        problems.append(f"metric must be val_delta_m or val_<metric>, got {metric!r}")
    seeds = raw.get("seeds", [0])
    if not _int_list(seeds) or not seeds:
        problems.append("seeds must be a non-empty list of integers")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        problems.append(f"seed must be an integer, got {seed!r}")
    methods = raw.get("methods")
    if methods is not None and not (
        isinstance(methods, list) and all(isinstance(m, str) for m in methods)
    ):
        problems.append("methods must be a list of method names")
    widen, widen_problems = parse_widen(raw.get("widen"))
    problems += widen_problems
    if widen is not None and sampler == "grid":
        problems.append("widen needs sampler random or stratified: a grid's values are fixed")
    if problems:
        raise ConfigError("tune: " + "; ".join(problems))
    return TuneSpec(
        budget=budget,
        sampler=sampler,
        metric=metric,
        seeds=tuple(seeds),
        seed=seed,
        methods=tuple(methods) if methods is not None else None,
        widen=widen,
    )


def method_space(method: str) -> dict[str, Space]:
    """The space a tuning stage samples for ``method``: the protocol's learning rate and the
    method's declared ``search_space``, keyed as trial overrides (``protocol.lr``,
    ``method.<name>``). The single-task reference (``stl``) has the learning rate alone."""
    if method == STL:
        return dict(PROTOCOL_SPACE)
    own = METHODS.get(method).search_space
    return {**PROTOCOL_SPACE, **{f"method.{k}": v for k, v in own.items()}}


def _bare(key: str) -> str:
    return key.rpartition(".")[2]


def _defaults(base: ResolvedTrial) -> dict[str, Any]:
    """The values the space's keys have without tuning (relative spaces scale them)."""
    out: dict[str, Any] = {f"method.{k}": v for k, v in base.hparams.items()}
    out.update({f"protocol.{k}": v for k, v in base.protocol.to_dict().items()})
    return out


def _random(
    space: Mapping[str, Space],
    keys: Sequence[str],
    budget: int,
    defaults: Mapping[str, Any],
    rng: random.Random,
) -> list[dict[str, Any]]:
    """One independent draw of every key."""
    return [{k: space[k].sample(rng, defaults.get(k)) for k in keys}]


def _stratified(
    space: Mapping[str, Space],
    keys: Sequence[str],
    budget: int,
    defaults: Mapping[str, Any],
    rng: random.Random,
) -> list[dict[str, Any]]:
    """A Latin hypercube of ``budget`` configurations (McKay, Beckman & Conover,
    Technometrics 1979): each key's range is cut into ``budget`` equal strata of its
    distribution, each stratum gets one draw, and the strata are paired at random across keys.
    Every method's learning rate then covers its range evenly, one draw per stratum, however
    many other hyper-parameters share the budget (issue 21: six random draws of LS's lr fell
    five times below 3.6e-4)."""
    columns = {}
    for k in keys:
        strata = list(range(budget))
        rng.shuffle(strata)
        columns[k] = [
            space[k].quantile((s + rng.random()) / budget, defaults.get(k)) for s in strata
        ]
    return [{k: columns[k][i] for k in keys} for i in range(budget)]


def sample_configs(
    space: Mapping[str, Space],
    tune: TuneSpec,
    defaults: Mapping[str, Any],
    stream: str,
) -> list[dict[str, Any]]:
    """``tune.budget`` distinct configurations of ``space``, deterministic in ``tune.seed`` and
    ``stream`` (the benchmark and method): ``grid`` points, ``random`` independent draws, or a
    ``stratified`` design (:func:`_stratified`). Raises ConfigError when the space has fewer
    points."""
    keys = sorted(space)
    rng = random.Random(f"{tune.seed}:{stream}")
    if tune.sampler == "grid":
        points = [
            dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(space[k].grid(defaults.get(k)) for k in keys))
        ]
        if len(points) < tune.budget:
            raise ConfigError(
                f"the grid of {stream} has {len(points)} points, fewer than the budget "
                f"{tune.budget}: lower the budget or use sampler random"
            )
        rng.shuffle(points)
        return points[: tune.budget]
    if all(space[k].finite() for k in keys):
        size = math.prod(len(space[k].grid(defaults.get(k))) for k in keys)
        if size < tune.budget:
            raise ConfigError(
                f"the space of {stream} has {size} points, fewer than the budget {tune.budget}"
            )
    draw = _stratified if tune.sampler == "stratified" else _random
    configs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range(1000 * tune.budget):
        for config in draw(space, keys, tune.budget, defaults, rng):
            key = repr(sorted(config.items()))
            if key not in seen:
                seen.add(key)
                configs.append(config)
            if len(configs) == tune.budget:
                return configs
        if tune.sampler == "stratified":  # one whole design, or none: its strata stay even
            configs.clear()
            seen.clear()
    raise ConfigError(f"could not draw {tune.budget} distinct configurations of {stream}")


# ---------------------------------------------------------------------------------------------
# The plan of a tuned method
# ---------------------------------------------------------------------------------------------


@dataclass
class TunePlan:
    """One tuned (benchmark, method[, task]): its configurations, their tuning trials, the final
    seeds. ``task`` is set for a single-task reference (``method == "stl"``): each task's
    reference is tuned on its own."""

    benchmark: str
    method: str
    tune: TuneSpec
    fixed: dict[str, Any]
    configs: list[dict[str, Any]]
    trials: list[list[StagedTrial]]  # per configuration, one trial per tuning seed
    final_seeds: list[int]
    data_root: str | None = None
    final: list[StagedTrial] = field(default_factory=list)
    selected: int | None = None
    scores: list[float] = field(default_factory=list)
    problem: str | None = None  # why no configuration could be selected
    task: str | None = None
    seeding: dict[str, Any] | None = None  # the final runs' sequential seed plan (its tag)
    space: dict[str, Space] = field(default_factory=dict)  # what the first round sampled
    defaults: dict[str, Any] = field(default_factory=dict)  # the values relative spaces scale
    rounds: list[int] = field(default_factory=list)  # each configuration's round (1 or 2)
    widened: dict[str, Side] | None = None  # None: not decided; {}: no second round

    @property
    def n_trials(self) -> int:
        return sum(len(t) for t in self.trials)

    @property
    def label(self) -> str:
        """``benchmark/method`` or, for a reference, ``benchmark/stl[task]``."""
        task = f"[{self.task}]" if self.task else ""
        return f"{self.benchmark}/{self.method}{task}"


def plan_tuning(
    benchmark: str,
    method: str,
    fixed: Mapping[str, Any],
    tune: TuneSpec,
    final_seeds: Sequence[int],
    data_root: str | None = None,
    task: str | None = None,
) -> TunePlan:
    """The tuning trials of one method on one benchmark (``fixed``: the spec's settings; ``task``:
    the task of a single-task reference)."""

    def trial(seed: int, settings: Mapping[str, Any]) -> ResolvedTrial:
        return resolve(TrialConfig(benchmark, method, seed, dict(settings), task, data_root))

    base = trial(tune.seeds[0], fixed)
    fixed_keys = {_bare(k) for k in fixed}
    space = {k: v for k, v in method_space(method).items() if _bare(k) not in fixed_keys}
    stream = f"{benchmark}/{method}" + (f"/{task}" if task else "")
    defaults = _defaults(base)
    configs = sample_configs(space, tune, defaults, stream)
    trials = [[staged(trial(s, {**fixed, **c}), "tune") for s in tune.seeds] for c in configs]
    return TunePlan(
        benchmark,
        method,
        tune,
        dict(fixed),
        configs,
        trials,
        list(final_seeds),
        data_root,
        task=task,
        space=space,
        defaults={k: defaults.get(k) for k in space},
        rounds=[1] * len(configs),
    )


def widen_round(plan: TunePlan, index: int) -> list[StagedTrial]:
    """Decide the widening round of ``plan``, whose first round selected ``index``
    (:mod:`mtlbench.tune_widen`): when a log-uniform setting's selected value sits at an edge,
    add ``budget`` configurations drawn beyond it (the other settings at their selected values)
    and their tuning trials, tagged ``{round: 2, widened: {key: side}}``; returns those trials
    (none when nothing sits at an edge, or the block has no ``widen``). Decided once."""
    if plan.widened is not None or plan.tune.widen is None:
        return []
    plan.widened = edge_sides(plan.space, plan.configs, index, plan.defaults)
    if not plan.widened:
        return []
    band = beyond_space(plan.space, plan.widened, plan.tune.widen)
    kept = {k: v for k, v in plan.configs[index].items() if k not in band}
    stream = f"{plan.benchmark}/{plan.method}" + (f"/{plan.task}" if plan.task else "")
    drawn = sample_configs(band, plan.tune, plan.defaults, f"{stream}/widen")
    tag = {"round": 2, "widened": dict(plan.widened), "factor": plan.tune.widen}
    added = []
    for config in drawn:
        settings = {**plan.fixed, **kept, **config}
        trials = [
            staged(
                resolve(
                    TrialConfig(plan.benchmark, plan.method, s, settings, plan.task, plan.data_root)
                ),
                "tune",
                tag,
            )
            for s in plan.tune.seeds
        ]
        plan.configs.append({**kept, **config})
        plan.trials.append(trials)
        plan.rounds.append(2)
        added += trials
    return added


def final_trials(plan: TunePlan, index: int) -> list[StagedTrial]:
    """The selected configuration with the sweep's seeds, marked ``stage: final``."""
    settings = {**plan.fixed, **plan.configs[index]}
    tuning = {**plan.tune.tag(), "selected": dict(sorted(plan.configs[index].items()))}
    if plan.widened:  # a second round ran: the range searched, and the selection's round
        tuning.update(widened=dict(plan.widened), round=plan.rounds[index])
    return [
        staged(
            replace(
                resolve(
                    TrialConfig(plan.benchmark, plan.method, s, settings, plan.task, plan.data_root)
                ),
                seeding=plan.seeding,
            ),
            "final",
            tuning,
        )
        for s in plan.final_seeds
    ]


def hook(
    benchmark: str,
    method: str,
    settings: Mapping[str, Any],
    tune_raw: Any,
    final_seeds: Sequence[int],
    data_root: str | None,
    has_stl: bool,
) -> list[TunePlan] | None:
    """The sweep parser's hook: the plans of ``method`` on ``benchmark`` under the ``tune`` block
    ``tune_raw`` (one per task for the single-task reference ``stl``), or None when the block
    does not tune this method. Raises ConfigError."""
    tune = parse_tune(tune_raw)
    if tune.methods is not None and method not in tune.methods:
        return None
    grids = sorted(k for k, v in settings.items() if isinstance(v, list))
    if grids:
        raise ConfigError(
            f"a tuned method takes fixed settings (its space is its search_space), "
            f"not grids: {', '.join(grids)}"
        )
    bench = benchmarks.get(benchmark)
    if method == STL:  # a reference scores its own task's validation metrics (docs/tuning.md)
        return [
            plan_tuning(benchmark, STL, settings, tune, final_seeds, data_root, task)
            for task in bench.tasks
        ]
    if tune.metric == "val_delta_m":
        if not has_stl and bench.reference is benchmarks.Benchmark.reference:
            raise ConfigError(
                "tune metric val_delta_m needs a reference: add stl: true to the benchmark"
            )
    elif tune.metric.removeprefix("val_") not in {m.name for m in bench.metrics}:
        valid = ", ".join(f"val_{m.name}" for m in bench.metrics)
        raise ConfigError(f"unknown tune metric {tune.metric!r}; valid: val_delta_m, {valid}")
    return [plan_tuning(benchmark, method, settings, tune, final_seeds, data_root)]


# ---------------------------------------------------------------------------------------------
# Descriptions: the space table and the budget of a dry run
# ---------------------------------------------------------------------------------------------


def space_rows(methods: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(method, hyper-parameter, space)`` rows for ``mtlbench list methods --space``."""
    rows = []
    for name in methods:
        for key, space in method_space(name).items():
            scope, _, bare = key.rpartition(".")
            label = f"{bare} ({scope})" if scope == "protocol" else bare
            rows.append((name, label, space.describe()))
    return rows


def describe_budget(plans: Sequence[TunePlan]) -> str:
    """The tuning budget per benchmark and method (for ``mtlbench sweep --dry-run``)."""
    if not plans:
        return ""
    lines = ["tuning (equal budget per method; selection on validation only):"]
    for plan in plans:
        t = plan.tune
        state = "selection pending"
        if plan.selected is not None:
            state = f"selected {plan.configs[plan.selected]}"
        elif plan.problem:
            state = f"no selection: {plan.problem}"
        widen = ""
        if t.widen is not None and plan.widened is None:
            widen = f"; {t.budget} more if the selection is at an edge (widen x{t.widen:g})"
        elif plan.widened:
            sides = ", ".join(f"{k} {side}" for k, side in plan.widened.items())
            widen = f", of which {t.budget} in a widening round ({sides}, x{t.widen:g})"
        finals = f"{len(plan.final_seeds)} final trial(s)"
        if plan.seeding:  # sequential: the first wave, then more while the CI is too wide
            finals = f"{len(plan.final_seeds)} to {plan.seeding['max']} final trial(s)"
        lines.append(
            f"  {plan.label}: {len(plan.configs)} configs x {len(t.seeds)} "
            f"seed(s) = {plan.n_trials} tuning trials ({t.sampler}, {t.metric}{widen}); then "
            f"{finals}, {state}"
        )
    return "\n".join(lines)
