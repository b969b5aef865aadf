"""A trial: one (benchmark, method, hyper-parameters, seed) run, its resolved config and its id.

Resolution merges, in order: the benchmark's default protocol and policies, the method's
per-benchmark defaults from its reference code (``Method.benchmark_defaults``), then the
user's overrides. Everything is validated before any training starts, so a typo is a one-line
error, not a failed job. The trial id is a hash of the resolved config: two spellings of the same
trial share one id, and one record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

from mtlbench import benchmark as benchmarks
from mtlbench.method import METHODS
from mtlbench.method import names as method_names
from mtlbench.registry import (
    ConfigError,
    PositiveFloat,
    PositiveInt,
    Range,
    check_fields,
    closest,
    coerce,
    raise_all,
    unknown,
)
from mtlbench.stage import STAGE_KINDS, Stage, StageKind

STL = "stl"  # the method name of single-task runs (mode "stl"): LS on one task's loss
# A seed: what every generator takes (NumPy's seeds are 32-bit, torch's 64-bit).
Seed = Annotated[int, Range(ge=0, lt=2**32)]
T = TypeVar("T")


@dataclass(frozen=True)
class Policies:
    """Trainer policies: conventions the reference code bases differ on (methods.md, section 9),
    made explicit and recorded in every run record.

    * ``head_grads``: ``weighted`` (heads get ``sum_k c_k l_k``, the method's coefficients, as
      nash-mtl / FAMO) or ``unit`` (heads get their own unweighted loss, as LibMTL).
    * ``update_scale``: ``reference`` (each method as its reference code), ``sum`` (weights sum
      to K, like LS) or ``mean`` (weights sum to 1).
    * ``clip_grad_norm``: max norm of the model's gradient after backward, or ``None``.
    * ``jacobian_mode``: ``batched`` (one vmapped backward), ``sequential`` (K backward passes),
      ``gramian`` (Gramian methods: G without J, then one backward of the weighted loss) or
      ``auto`` (``gramian`` for Gramian methods, ``batched`` for the others).
    * ``jacobian_chunk``: at most this many tasks per vmapped backward (``batched``: bounds the
      extra memory of O(K) methods, ``None``: all K in one pass; ``gramian``: the passes below
      the graph's cut, ``None``: chosen by ``mtlbench.gramian.plan``).
    * ``grad_wrt``: ``parameters`` or ``representation`` (MGDA-UB style Gramians).
    * ``post_step_mode``: the mode of the extra forward pass of post-step-loss methods (FAMO):
      ``train`` as the reference code (BatchNorm statistics update twice), ``eval``, or
      ``next_step`` (no extra forward: the next step's losses, as FAMO's toy loop).
    """

    head_grads: Literal["weighted", "unit"] = "weighted"
    update_scale: Literal["reference", "sum", "mean"] = "reference"
    clip_grad_norm: PositiveFloat | None = None
    jacobian_mode: Literal["batched", "sequential", "gramian", "auto"] = "batched"
    jacobian_chunk: PositiveInt | None = None
    grad_wrt: Literal["parameters", "representation"] = "parameters"
    post_step_mode: Literal["train", "eval", "next_step"] = "train"

    def __post_init__(self) -> None:
        if self.jacobian_chunk is not None and self.jacobian_chunk < 1:
            raise ConfigError(
                f"policies.jacobian_chunk: expected a positive number of tasks or None, "
                f"got {self.jacobian_chunk!r}"
            )

    def replace(self, **changes: Any) -> Policies:
        """A copy with ``changes`` applied, each checked against its type and range; every bad
        policy is reported, not the first."""
        hints = typing.get_type_hints(Policies, include_extras=True)
        checked, errors = check_fields(
            changes,
            {f.name: hints[f.name] for f in dataclasses.fields(self)},
            "policy",
            lambda key: f"policies.{key}",
        )
        raise_all(errors)
        return dataclasses.replace(self, **checked)


@dataclass
class TrialConfig:
    """What a user asks for. ``overrides`` are ``key=value`` settings: a key is a method
    hyper-parameter, a protocol option or a policy, optionally prefixed ``method.``,
    ``protocol.`` or ``policies.`` where a name is ambiguous."""

    benchmark: str
    method: str
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    task: str | None = None  # the task of a single-task ("stl") run
    data_root: str | None = None
    smoke: bool = False


@dataclass(frozen=True)
class ResolvedTrial:
    """A fully resolved, validated trial; ``to_dict`` is what records store and ids hash."""

    benchmark: str
    method: str
    seed: int
    hparams: dict[str, Any]
    protocol: benchmarks.Protocol
    policies: Policies
    mode: Literal["mtl", "stl"]
    task: str | None
    data_root: str | None
    # A sequential sweep's seed plan (mtlbench.seed_plan.SeedPlan.tag); None otherwise, and
    # then left out of the config, so that other trials keep their ids.
    seeding: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "benchmark": self.benchmark,
            "method": self.method,
            "seed": self.seed,
            "mode": self.mode,
            "task": self.task,
            "hparams": dict(sorted(self.hparams.items())),
            "protocol": self.protocol.to_dict(),
            "policies": dataclasses.asdict(self.policies),
        }
        if self.seeding is not None:
            out["seeding"] = dict(self.seeding)
        return out

    @property
    def trial_id(self) -> str:
        """Stable id: the hash of the resolved config (data root and device excluded, so a
        trial keeps its id on another machine)."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        task = f"-{self.task}" if self.task else ""
        return f"{self.benchmark}-{self.method}{task}-s{self.seed}-{digest}"


def _split_overrides(
    overrides: dict[str, Any],
    hparam_names: set[str],
    protocol_names: set[str],
    policy_names: set[str],
    errors: list[ConfigError],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Sort ``overrides`` into method hyper-parameters, protocol options and policies; a key
    that is unknown or ambiguous goes to ``errors``."""
    hparams: dict[str, Any] = {}
    protocol: dict[str, Any] = {}
    policies: dict[str, Any] = {}
    targets = {"method": hparams, "protocol": protocol, "policies": policies}
    for key, value in overrides.items():
        prefix, _, name = key.rpartition(".")
        if prefix:
            if prefix not in targets:
                errors.append(unknown("setting prefix", prefix, targets, key))
            else:
                targets[prefix][name] = value
            continue
        owners = [
            t
            for t, names in (
                ("method", hparam_names),
                ("protocol", protocol_names),
                ("policies", policy_names),
            )
            if key in names
        ]
        if not owners:
            valid = hparam_names | protocol_names | policy_names
            errors.append(
                ConfigError(
                    f"unknown setting {key!r}.{closest(key, valid)} Valid: "
                    f"method: {', '.join(sorted(hparam_names)) or '(none)'}; "
                    f"protocol: {', '.join(sorted(protocol_names))}; "
                    f"policies: {', '.join(sorted(policy_names))}",
                    key,
                )
            )
        elif len(owners) > 1:
            errors.append(
                ConfigError(
                    f"setting {key!r} is ambiguous: write "
                    f"{' or '.join(o + '.' + key for o in owners)}",
                    key,
                )
            )
        else:
            targets[owners[0]][key] = value
    return hparams, protocol, policies


def _collect(errors: list[ConfigError], build: Callable[[], T], fallback: T) -> T:
    """``build()``, or ``fallback`` with its error appended to ``errors``."""
    try:
        return build()
    except ConfigError as error:
        errors.append(error)
        return fallback


def _check_names(config: TrialConfig, bench_cls: type[benchmarks.Benchmark]) -> None:
    """The method, and the task of an stl run: what the rest of the resolution depends on."""
    if config.method == STL:
        if config.task is None:
            raise ConfigError(
                f"an stl run needs a task: one of {', '.join(bench_cls.tasks)}", "task"
            )
        if config.task not in bench_cls.tasks:
            raise unknown(f"task of {config.benchmark}", config.task, bench_cls.tasks, "task")
    elif config.task is not None:
        raise ConfigError("a task is only given for single-task (stl) runs", "task")
    if config.method != STL and config.method not in method_names():
        raise unknown("method", config.method, [*method_names(), STL], "method")


def resolve(config: TrialConfig) -> ResolvedTrial:
    """Validate ``config`` and resolve every default.

    Raises :class:`ConfigError` for one problem and :class:`~mtlbench.registry.ConfigErrors`
    listing all of them (bad seed, unknown settings, values of the wrong type or out of their
    range) when there are several; each error's ``key`` names the setting at fault.
    """
    bench_cls = benchmarks.get(config.benchmark)
    _check_names(config, bench_cls)
    stl = config.method == STL
    errors: list[ConfigError] = []
    seed = _collect(errors, lambda: coerce(config.seed, Seed, "seed"), config.seed)

    hparam_names = set() if stl else set(METHODS.hparams(config.method))
    protocol_names = {f.name for f in dataclasses.fields(bench_cls.protocol_type)}
    policy_names = {f.name for f in dataclasses.fields(Policies)}
    user_h, user_p, user_pol = _split_overrides(
        config.overrides, hparam_names, protocol_names, policy_names, errors
    )

    method_defaults: dict[str, Any] = {}
    if not stl:
        method_defaults = dict(
            METHODS.get(config.method).benchmark_defaults.get(
                bench_cls.method_defaults_from or config.benchmark, {}
            )
        )
    protocol_defaults = method_defaults.pop("protocol", {})
    if "min_losses" in hparam_names and bench_cls.loss_lower_bounds is not None:
        method_defaults.setdefault("min_losses", list(bench_cls.loss_lower_bounds))
    policy_defaults = dict(getattr(bench_cls, "policies", {}))

    protocol_changes = dict(protocol_defaults)
    if config.smoke:
        protocol_changes.update(bench_cls.smoke_protocol())
    protocol_changes.update(user_p)
    default_protocol = bench_cls.default_protocol()
    protocol = _collect(
        errors, lambda: default_protocol.replace(**protocol_changes), default_protocol
    )
    policies = _collect(
        errors, lambda: Policies().replace(**{**policy_defaults, **user_pol}), Policies()
    )
    hparams: dict[str, Any] = {}
    if not stl:
        checked = _collect(
            errors, lambda: METHODS.validate(config.method, {**method_defaults, **user_h}), {}
        )
        hparams = {**METHODS.defaults(config.method), **checked}
    raise_all(errors)
    return ResolvedTrial(
        benchmark=config.benchmark,
        method=config.method,
        seed=seed,
        hparams=hparams,
        protocol=protocol,
        policies=policies,
        mode="stl" if stl else "mtl",
        task=config.task,
        data_root=config.data_root,
    )


# ---------------------------------------------------------------------------------------------
# Stages: the order trials run in, and what tells trials apart
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StagedTrial(ResolvedTrial):
    """A trial of a tuned sweep: ``stage`` (``tune`` or ``final``) and, for a final run, its
    tuning settings are part of its config, its record and its id (an untuned trial's id is
    unchanged: it is a plain :class:`ResolvedTrial`)."""

    stage: Literal["tune", "final"] = "tune"
    tuning: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["stage"] = self.stage
        if self.tuning is not None:
            out["tuning"] = dict(self.tuning)
        return out


def staged(
    trial: ResolvedTrial, stage: Literal["tune", "final"], tuning: dict[str, Any] | None = None
) -> StagedTrial:
    """``trial`` marked as a tuning trial or a final run (:class:`StagedTrial`)."""
    fields = {f.name: getattr(trial, f.name) for f in dataclasses.fields(ResolvedTrial)}
    return StagedTrial(**fields, stage=stage, tuning=tuning)


def stage_kind(trial: ResolvedTrial) -> StageKind:
    """The stage ``trial`` runs in (:class:`Stage`)."""
    tuning = isinstance(trial, StagedTrial) and trial.stage == "tune"
    if trial.mode == "stl":
        return "stl-tune" if tuning else "stl"
    return "tune" if tuning else "mtl"


def split_stages(trials: typing.Iterable[ResolvedTrial]) -> list[Stage]:
    """``trials`` in stages (:class:`Stage`), in run order; each keeps the trials' order, and
    an empty stage is left out. The one place that orders a sweep's trials."""
    by_kind: dict[StageKind, list[ResolvedTrial]] = {k: [] for k in STAGE_KINDS}
    for trial in trials:
        by_kind[stage_kind(trial)].append(trial)
    return [Stage(k, tuple(by_kind[k])) for k in STAGE_KINDS if by_kind[k]]
