"""The ``Benchmark`` interface: tasks, metrics, data, model, losses, references and protocol.

A benchmark module (under ``datasets/``, installed as ``mtlbench.datasets``) registers one
subclass of :class:`Benchmark`. The trainer knows benchmarks only through this interface.

The model of every benchmark is a :class:`MultiTaskModel`: a shared ``encoder`` and one head
per task. ``forward`` returns the shared representation (for MGDA-UB and feature-conditioned
routers) and the list of per-task outputs.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from mtlbench.plugins import load_installed
from mtlbench.registry import (
    ConfigError,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Range,
    Registry,
    check_fields,
    coerce,
    raise_all,
)

Split = Literal["train", "val", "test"]


@dataclass(frozen=True)
class Metric:
    """One evaluation metric of one task (``name`` is unique within a benchmark)."""

    name: str
    task: str
    higher_is_better: bool
    unit: str = ""


@dataclass(frozen=True)
class Reference:
    """Single-task reference values with their provenance (a citation, a file, trial ids).

    ``values`` are the references' test metrics, the denominators of the reported Δm%.
    ``validation`` are their validation metrics where the suite ran them (STL records), the
    denominators of every selection score (epochs, tuning), so that no test metric enters a
    choice (:func:`mtlbench.selection.selection_reference`); ``None`` for published values."""

    values: dict[str, float]
    source: str
    details: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, float] | None = None


# The arguments of each ``scheduler`` form, with their types and ranges (the trainer's
# ``build_scheduler`` reads the same forms): StepLR's step size and decay, ReduceLROnPlateau's
# factor, patience and floor.
SCHEDULERS: dict[str, tuple[tuple[str, Any], ...]] = {
    "step": (("STEP", PositiveInt), ("GAMMA", Annotated[float, Range(gt=0, le=1)])),
    "plateau": (
        ("FACTOR", Annotated[float, Range(gt=0, lt=1)]),
        ("PATIENCE", NonNegativeInt),
        ("MIN_LR", NonNegativeFloat),
    ),
}


def _check_option(key: str, value: Any) -> None:
    """The format of a protocol option that its type cannot say (the scheduler's spelling)."""
    if key == "scheduler":
        check_scheduler(value)


def check_scheduler(spec: str | None) -> str | None:
    """``spec`` if it is ``None`` or one of the :data:`SCHEDULERS` forms with every argument of
    the right type and in range; else a :class:`ConfigError` naming the form."""
    if spec is None:
        return None
    kind, *args = spec.split(":")
    forms = "; ".join(f"{k}:{':'.join(n for n, _ in fields)}" for k, fields in SCHEDULERS.items())
    fields = SCHEDULERS.get(kind)
    if fields is None or len(args) != len(fields):
        raise ConfigError(f"protocol.scheduler: {spec!r} not understood: use {forms}", "scheduler")
    for (name, hint), text in zip(fields, args, strict=True):
        base = typing.get_args(hint)[0]
        try:
            coerce(base(text), hint, f"protocol.scheduler {kind} {name}")
        except (ValueError, ConfigError):
            raise ConfigError(
                f"protocol.scheduler: {spec!r}: {name} must be {_range_text(hint)}, got {text!r}",
                "scheduler",
            ) from None
    return spec


def _range_text(hint: Any) -> str:
    base, *extras = typing.get_args(hint)
    ranges = [e.describe() for e in extras if isinstance(e, Range)]
    return f"{'an int' if base is int else 'a number'} {' and '.join(ranges)}".strip()


@dataclass
class Protocol:
    """The training protocol shared by all benchmarks; benchmarks subclass it to add options.

    ``scheduler``: ``None``, ``"step:STEP_SIZE:GAMMA"`` (StepLR, per epoch) or
    ``"plateau:FACTOR:PATIENCE:MIN_LR"`` (ReduceLROnPlateau on the selection score); the
    arguments' ranges are in :data:`SCHEDULERS`.
    ``selection``: ``"best_val_delta_m"`` (validation Delta m%, the leak-free default),
    ``"last"``, or ``"last10_test_mean"`` (the published rule of NYU-v2 / Cityscapes; it reads
    the test set and is labelled so in records and reports).
    ``max_steps``: stop each epoch after this many steps (``None``: the whole split); smoke runs
    and quickstarts use it, and records keep it.
    ``patience``: early stopping, training ends after this many evaluations without a new best
    validation score (``None``, the default on every paper protocol: off). Long protocols can
    then converge without paying for every epoch.

    Each numeric option declares its valid range in its type hint (``PositiveInt``: ``>= 1``;
    ``PositiveFloat``: ``> 0``; ``NonNegativeFloat``: ``>= 0``), checked by :meth:`replace`
    when a spec or ``--set`` is read; subclasses declare their own options' ranges the same way.
    """

    epochs: PositiveInt = 1
    batch_size: PositiveInt = 32
    lr: PositiveFloat = 1e-3
    optimizer: Literal["adam", "sgd"] = "adam"
    weight_decay: NonNegativeFloat = 0.0
    scheduler: str | None = None
    selection: Literal["best_val_delta_m", "last", "last10_test_mean"] = "best_val_delta_m"
    max_steps: PositiveInt | None = None
    eval_every: PositiveInt = 1
    patience: PositiveInt | None = None

    @classmethod
    def field_hints(cls) -> dict[str, Any]:
        """Each option's type hint with its range. A subclass that only changes a default
        (``epochs: int = 500``) keeps the range its base class declared for that type."""
        hints: dict[str, Any] = {}
        plain_hints: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            if not issubclass(klass, Protocol):
                continue
            rich = typing.get_type_hints(klass, include_extras=True)
            plain = typing.get_type_hints(klass)
            for key, hint in rich.items():
                if key in hints and hint == plain[key] == plain_hints[key]:
                    continue  # the same type, written without its range: keep the range
                hints[key], plain_hints[key] = hint, plain[key]
        return hints

    def replace(self, **changes: Any) -> Protocol:
        """A copy with ``changes`` applied, each checked against the field's type and range;
        every bad option is reported (:class:`~mtlbench.registry.ConfigErrors`), not the first."""
        hints = type(self).field_hints()
        checked, errors = check_fields(
            changes,
            {f.name: hints[f.name] for f in dataclasses.fields(self)},
            f"protocol option of {type(self).__name__}:",
            lambda key: f"protocol.{key}",
            _check_option,
        )
        raise_all(errors)
        return dataclasses.replace(self, **checked)

    def to_dict(self) -> dict[str, Any]:
        """The options as a dict; ``patience`` only when set (it came later: the trials that
        do not use it keep their ids)."""
        out = dataclasses.asdict(self)
        if out.get("patience") is None:
            out.pop("patience", None)
        return out


class MultiTaskModel(nn.Module):
    """A shared encoder and one head per task; ``forward`` returns ``(representation, outputs)``."""

    def __init__(self, encoder: nn.Module, heads: Sequence[nn.Module]) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleList(heads)

    def forward(self, x: Any) -> tuple[Tensor, list[Tensor]]:
        rep = self.encoder(x)
        return rep, [head(rep) for head in self.heads]

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.heads.parameters())


class Evaluator:
    """Accumulates one split's outputs; ``compute`` returns ``{metric or diagnostic: value}``."""

    def update(self, outputs: list[Tensor], batch: Any) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError


class DataUnavailable(ConfigError):
    """The benchmark's data is missing; the message says where to get it and where to put it."""


class Benchmark:
    """Base class of benchmarks. Subclasses set the class attributes and implement the methods.

    ``data_root`` is where the user keeps the data (``None`` for benchmarks whose data ships in
    packages); ``seed`` fixes data splits and shuffling.
    """

    name: ClassVar[str] = ""
    tasks: ClassVar[tuple[str, ...]] = ()
    metrics: ClassVar[tuple[Metric, ...]] = ()
    protocol_type: ClassVar[type[Protocol]] = Protocol
    paper: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # Dimension of the pooled shared representation (for feature-conditioned routers).
    feature_dim: ClassVar[int | None] = None
    # A benchmark that is a variant of another (qm9-small of qm9) takes the methods'
    # per-benchmark defaults (``Method.benchmark_defaults``) of that one.
    method_defaults_from: ClassVar[str | None] = None
    # Lower bounds of the task losses where they can go negative (the toy's): the default
    # ``min_losses`` (FAMO's ``l*``) of every method that takes one. None: non-negative losses.
    loss_lower_bounds: ClassVar[tuple[float, ...] | None] = None

    def __init__(self, protocol: Protocol, data_root: Path | None = None, seed: int = 0) -> None:
        self.protocol = protocol
        self.data_root = Path(data_root) if data_root is not None else default_data_root(self.name)
        self.seed = seed

    @classmethod
    def default_protocol(cls) -> Protocol:
        return cls.protocol_type()

    @classmethod
    def smoke_protocol(cls) -> dict[str, Any]:
        """Protocol overrides for ``--smoke``: a few steps of everything, for checking a setup."""
        return {"epochs": 1, "max_steps": 2}

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    def task_metrics(self, task: str) -> list[Metric]:
        return [m for m in self.metrics if m.task == task]

    def reference(self) -> Reference | None:
        """The published single-task reference, if the benchmark has one."""
        return None

    def check_data(self) -> list[str]:
        """What is missing from ``data_root``, one line each saying where to get it and where
        to put it (empty when the data is ready). Loaders raise :class:`DataUnavailable` with
        the same lines."""
        return []

    @classmethod
    def write_fixture(cls, root: Path) -> None:
        """Write a tiny dataset in the real on-disk format under ``root`` (for tests)."""
        raise ConfigError(f"benchmark {cls.name!r} needs no data files, so it has no fixture")

    def build_model(self) -> MultiTaskModel:
        raise NotImplementedError

    def batches(self, split: Split, epoch: int = 0) -> Iterable[Any]:
        """The batches of a split; the train split is shuffled by ``(seed, epoch)``."""
        raise NotImplementedError

    def task_losses(self, outputs: list[Tensor], batch: Any) -> Tensor:
        """The K task losses of a batch, as one tensor."""
        raise NotImplementedError

    def evaluator(self) -> Evaluator:
        raise NotImplementedError

    def to_device(self, batch: Any, device: torch.device) -> Any:
        """Move a batch to ``device`` (tensors, and tuples / lists / dicts of them)."""
        return move(batch, device)

    def model_input(self, batch: Any) -> Any:
        """The part of a batch the model consumes (default: its first element)."""
        return batch[0] if isinstance(batch, (tuple, list)) else batch

    def record_extra(self, model: MultiTaskModel) -> dict[str, Any]:
        """Benchmark-specific values for the run record (the toy's final point)."""
        return {}

    def out_of_domain(self, model: MultiTaskModel) -> str | None:
        """Why ``model`` has left the benchmark's valid domain (the trial is then recorded as
        ``diverged``), or None while it is inside. Checked after every evaluation."""
        return None


def default_data_root(benchmark: str) -> Path:
    """Where a benchmark's data lives unless ``--data-root`` says otherwise:
    ``$MTLBENCH_DATA/<benchmark>``, by default ``~/mtlbench-data/<benchmark>``."""
    import os

    return Path(os.environ.get("MTLBENCH_DATA", Path.home() / "mtlbench-data")) / benchmark


def move(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(move(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: move(v, device) for k, v in batch.items()}
    if hasattr(batch, "to"):
        return batch.to(device)
    return batch


def tensor_batches(
    tensors: Sequence[Tensor], batch_size: int, shuffle: bool, generator: torch.Generator | None
) -> Iterator[tuple[Tensor, ...]]:
    """Mini-batches of in-memory tensors (faster than a DataLoader for small data)."""
    n = tensors[0].shape[0]
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield tuple(t[idx] for t in tensors)


_HOOKS = ("build_model", "batches", "task_losses", "evaluator")


def entry_problem(factory: Any) -> str | None:
    """What keeps ``factory`` from being a benchmark (checked when it is registered): not a
    :class:`Benchmark` subclass, no tasks or metrics, or a hook of the interface missing."""
    if not (isinstance(factory, type) and issubclass(factory, Benchmark)):
        return "is not a subclass of mtlbench.benchmark.Benchmark: subclass it"
    if not factory.tasks:
        return "declares no tasks: set the class attribute `tasks = ('a', 'b')`"
    if not factory.metrics:
        return "declares no metrics: set `metrics = (Metric(name, task, higher_is_better), ...)`"
    missing = [h for h in _HOOKS if getattr(factory, h) is getattr(Benchmark, h)]
    if missing:
        return f"does not implement {', '.join(missing)}: every benchmark defines them"
    return None


BENCHMARKS: Registry[Benchmark] = Registry("benchmark", check=entry_problem)
register = BENCHMARKS.register


def get(name: str) -> type[Benchmark]:
    """The benchmark ``name``: a built-in or an installed plug-in's (found at first use)."""
    import mtlbench.datasets  # noqa: F401  (registers the built-in benchmarks)

    load_installed()
    return BENCHMARKS.get(name)  # type: ignore[return-value]


def names() -> list[str]:
    import mtlbench.datasets  # noqa: F401

    load_installed()
    return BENCHMARKS.names()
