"""A small generic registry: ``register(name)``, ``create(name, **hparams)``, ``names()``.

Hyper-parameters are validated against the registered constructor's signature: unknown names
and values of the wrong type raise :class:`ConfigError` with the valid names and the closest
match, so a typo in a sweep file fails at once with a one-line message instead of deep inside a
training run.
"""

from __future__ import annotations

import difflib
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A user-facing configuration error (unknown name, bad value); printed as one line."""


def closest(name: str, candidates: Iterable[str]) -> str:
    """``" Did you mean 'x'?"`` for the closest candidate, or ``""`` when none is close."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""


def unknown(kind: str, name: str, valid: Iterable[str]) -> ConfigError:
    valid = sorted(valid)
    return ConfigError(
        f"unknown {kind} {name!r}.{closest(name, valid)} Valid: {', '.join(valid) or '(none)'}"
    )


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


_FLOAT_LITERAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a type annotation and convert where it is lossless.

    Supports the annotations hyper-parameters use: ``bool``, ``int``, ``float``, ``str``,
    ``Literal[...]``, ``X | None``, ``list[X]`` / ``tuple[X, ...]`` and ``Any``. An int is
    accepted for a float, and so is a string in exponent notation such as ``"1e-6"`` (YAML 1.1,
    which PyYAML implements, reads it as a string); nothing else is converted silently.
    """
    if annotation is inspect.Parameter.empty or annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in args:
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return coerce(value, option, where)
            except ConfigError as error:
                errors.append(error)
        raise ConfigError(f"{where}: expected {_type_name(annotation)}, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(
            f"{where}: expected one of {', '.join(map(repr, args))}, got {value!r}"
            f"{closest(str(value), map(str, args))}"
        )
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
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
    raise ConfigError(f"{where}: expected {_type_name(annotation)}, got {value!r}")


class Registry(Generic[T]):
    """Maps names to factories (classes or functions) of one kind of object.

    ``context`` names constructor arguments that the framework supplies (for methods, the number
    of tasks); they are not hyper-parameters and are not validated as such.
    """

    def __init__(self, kind: str, context: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.context = context
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries and self._entries[name] is not factory:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
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
        hints = typing.get_type_hints(target)
        params = {}
        for p in inspect.signature(target).parameters.values():
            if p.name in ("self", *self.context) or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            params[p.name] = p.replace(annotation=hints.get(p.name, p.annotation))
        return params

    def defaults(self, name: str) -> dict[str, Any]:
        return {k: p.default for k, p in self.hparams(name).items() if p.default is not p.empty}

    def validate(self, name: str, hparams: dict[str, Any]) -> dict[str, Any]:
        """Checked and converted ``hparams``; raises :class:`ConfigError` on the first problem."""
        valid = self.hparams(name)
        checked = {}
        for key, value in hparams.items():
            if key not in valid:
                raise unknown(f"hyper-parameter of {self.kind} {name!r}:", key, valid)
            checked[key] = coerce(value, valid[key].annotation, f"{name}.{key}")
        missing = [k for k, p in valid.items() if p.default is p.empty and k not in checked]
        if missing:
            raise ConfigError(f"{self.kind} {name!r} needs {', '.join(missing)}")
        return checked

    def create(self, name: str, *context: Any, **hparams: Any) -> T:
        """Build ``name`` with the framework's context arguments and validated hyper-parameters."""
        return self.get(name)(*context, **self.validate(name, hparams))
