"""A small generic registry: ``register(name)``, ``create(name, **hparams)``, ``names()``.

Hyper-parameters are validated against the registered constructor's signature: unknown names,
values of the wrong type and values outside their declared range raise :class:`ConfigError`
with the valid names and the closest match, so a typo in a sweep file fails at once with a
one-line message instead of deep inside a training run.

A numeric setting declares its valid range next to its type hint, ``Annotated[int, Range(ge=1)]``
(or one of the aliases :data:`PositiveInt`, :data:`NonNegativeInt`, :data:`PositiveFloat`,
:data:`NonNegativeFloat`, :data:`UnitInterval`); :func:`coerce` checks it wherever a value is
read. The range is a check, not part of the value: records and trial ids do not change.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A user-facing configuration error (unknown name, bad value); printed as one line.

    ``key`` names the setting at fault, where one does (``"epochs"``, ``"lamb"``), so that a
    sweep spec can point at the line that sets it.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class RegistrationError(ConfigError):
    """A registration refused: ``name`` is taken (``existing``: the module that registered it
    first), or the class is not what the registry holds (``problem`` says why)."""

    def __init__(self, kind: str, name: str, problem: str, existing: str | None = None) -> None:
        super().__init__(f"{kind} {name!r} {problem}")
        self.kind, self.name, self.problem, self.existing = kind, name, problem, existing


class ConfigErrors(ConfigError):
    """Several configuration errors found at once; ``errors`` holds them, one line each."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = list(errors)


def raise_all(errors: Sequence[ConfigError]) -> None:
    """Raise nothing, the one error, or all of them as :class:`ConfigErrors`."""
    flat = [e for error in errors for e in getattr(error, "errors", [error])]
    if len(flat) == 1:
        raise flat[0]
    if flat:
        raise ConfigErrors(flat)


@dataclass(frozen=True)
class Range:
    """The valid interval of a numeric setting, declared in its type hint:
    ``Annotated[float, Range(gt=0)]`` means ``value > 0``. Bounds left ``None`` are open; a
    float must also be finite (``nan`` and ``inf`` are never a valid learning rate or count)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def describe(self) -> str:
        parts = [
            f"{op} {bound if isinstance(bound, int) else format(bound, 'g')}"
            for op, bound in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
            if bound is not None
        ]
        return " and ".join(parts)

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )


PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]
UnitInterval = Annotated[float, Range(ge=0, le=1)]


def closest(name: str, candidates: Iterable[str]) -> str:
    """``" Did you mean 'x'?"`` for the closest candidate, or ``""`` when none is close."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""


def unknown(kind: str, name: str, valid: Iterable[str], key: str | None = None) -> ConfigError:
    """``unknown <kind> 'name'. Did you mean ...? Valid: ...``; ``key``: the setting at fault."""
    valid = sorted(valid)
    return ConfigError(
        f"unknown {kind} {name!r}.{closest(name, valid)} Valid: {', '.join(valid) or '(none)'}",
        key,
    )


def _key(where: str) -> str:
    """The setting's own name in a ``where`` such as ``"protocol.lr"`` or ``"ldc_mtl.lamb"``."""
    return where.rpartition(".")[2].partition("[")[0]


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Annotated:
        base, *extras = typing.get_args(annotation)
        ranges = [e.describe() for e in extras if isinstance(e, Range)]
        return f"{_type_name(base)} {' and '.join(ranges)}".strip()
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " | ".join(
            "None" if a is type(None) else _type_name(a) for a in typing.get_args(annotation)
        )
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


_FLOAT_LITERAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a type annotation and convert where it is lossless.

    Supports the annotations hyper-parameters use: ``bool``, ``int``, ``float``, ``str``,
    ``Literal[...]``, ``X | None``, ``list[X]`` / ``tuple[X, ...]``, ``Any`` and
    ``Annotated[X, Range(...)]`` (the value must also lie in the range). An int is accepted for
    a float, and so is a string in exponent notation such as ``"1e-6"`` (YAML 1.1, which PyYAML
    implements, reads it as a string); nothing else is converted silently. Errors carry the
    setting's name as ``key``.
    """
    if annotation is inspect.Parameter.empty or annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    expected = ConfigError(
        f"{where}: expected {_type_name(annotation)}, got {value!r}", _key(where)
    )
    if origin is Annotated:
        try:
            checked = coerce(value, args[0], where)
        except ConfigError:
            if args[0] in (int, float):
                raise expected from None  # "expected float > 0", not "expected float"
            raise
        if any(isinstance(r, Range) and not r.contains(checked) for r in args[1:]):
            raise expected
        return checked
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            try:
                return coerce(value, option, where)
            except ConfigError:
                continue
        raise expected
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(
            f"{where}: expected one of {', '.join(map(repr, args))}, got {value!r}"
            f"{closest(str(value), map(str, args))}",
            _key(where),
        )
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}", _key(where))
        item = args[0] if args else Any
        items = [coerce(v, item, where) for v in value]
        return items if origin is list else tuple(items)
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_LITERAL.fullmatch(value.strip()):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise expected


def check_fields(
    values: Mapping[str, Any],
    hints: Mapping[str, Any],
    kind: str,
    label: Callable[[str], str],
    check: Callable[[str, Any], None] | None = None,
) -> tuple[dict[str, Any], list[ConfigError]]:
    """The one "check every field, collect every error" loop (protocol options, policies, a
    registry's hyper-parameters, executor options): each of ``values``, in the user's order, is
    coerced to its type in ``hints`` (:func:`coerce`, its message prefixed ``label(key)``), then
    passed to ``check`` (a range or format a type cannot say; it raises :class:`ConfigError`).
    A key missing from ``hints`` is an unknown ``kind`` naming the valid keys. Returns the
    checked values and every error; the caller adds its own and calls :func:`raise_all`."""
    checked: dict[str, Any] = {}
    errors: list[ConfigError] = []
    for key, value in values.items():
        try:
            if key not in hints:
                raise unknown(kind, key, hints, key)
            checked[key] = coerce(value, hints[key], label(key))
            if check is not None:
                check(key, checked[key])
        except ConfigError as error:
            errors.append(error)
    return checked, errors


def _origin(factory: Any) -> str:
    """``module.QualifiedName`` of a factory."""
    qualname = getattr(factory, "__qualname__", type(factory).__name__)
    return f"{getattr(factory, '__module__', '?')}.{qualname}"


class Registry(Generic[T]):
    """Maps names to factories (classes or functions) of one kind of object.

    ``context`` names constructor arguments that the framework supplies (for methods, the number
    of tasks); they are not hyper-parameters and are not validated as such. ``check`` says what
    is wrong with a factory (not the registry's base class, a required attribute missing), or
    ``None``; a registration it objects to, or of a taken name, raises
    :class:`RegistrationError`.
    """

    def __init__(
        self,
        kind: str,
        context: tuple[str, ...] = (),
        check: Callable[[Any], str | None] | None = None,
    ) -> None:
        self.kind = kind
        self.context = context
        self.check = check
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            old = self._entries.get(name)
            if old is not None and old is not factory and _origin(old) != _origin(factory):
                where = getattr(old, "__module__", "?")  # a module run again replaces its own
                raise RegistrationError(self.kind, name, f"is already registered by {where}", where)
            problem = self.check(factory) if self.check is not None else None
            if problem:
                raise RegistrationError(self.kind, name, f"({_origin(factory)}): {problem}")
            self._entries[name] = factory
            if isinstance(factory, type):
                factory.name = name  # type: ignore[attr-defined]
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._entries[name]
        except KeyError:
            raise unknown(self.kind, name, self._entries) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def hparams(self, name: str) -> dict[str, inspect.Parameter]:
        """The hyper-parameters of ``name``: its keyword arguments, context excluded."""
        factory = self.get(name)
        target = factory.__init__ if isinstance(factory, type) else factory
        hints = typing.get_type_hints(target, include_extras=True)
        params = {}
        for p in inspect.signature(target).parameters.values():
            if p.name in ("self", *self.context) or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            params[p.name] = p.replace(annotation=hints.get(p.name, p.annotation))
        return params

    def defaults(self, name: str) -> dict[str, Any]:
        return {k: p.default for k, p in self.hparams(name).items() if p.default is not p.empty}

    def validate(self, name: str, hparams: dict[str, Any]) -> dict[str, Any]:
        """Checked and converted ``hparams``; raises :class:`ConfigError` (one problem) or
        :class:`ConfigErrors` (all of them)."""
        valid = self.hparams(name)
        checked, errors = check_fields(
            hparams,
            {k: p.annotation for k, p in valid.items()},
            f"hyper-parameter of {self.kind} {name!r}:",
            lambda key: f"{name}.{key}",
        )
        missing = [k for k, p in valid.items() if p.default is p.empty and k not in hparams]
        if missing:
            errors.append(ConfigError(f"{self.kind} {name!r} needs {', '.join(missing)}"))
        raise_all(errors)
        return checked

    def create(self, name: str, *context: Any, **hparams: Any) -> T:
        """Build ``name`` with the framework's context arguments and validated hyper-parameters."""
        return self.get(name)(*context, **self.validate(name, hparams))
