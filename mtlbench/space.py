"""Search-space declarations: the values a method's paper or reference code tunes.

A method declares ``search_space: ClassVar[dict[str, Space]]`` (hyper-parameter name -> space);
the framework adds the protocol's learning rate (:data:`PROTOCOL_SPACE`) to every method, LS
included. The tuning stage (:mod:`mtlbench.tune`) samples from these spaces:

* :class:`Choice`: a finite list of values (the values a paper reports or sweeps);
* :class:`LogUniform`: ``log x ~ U[log low, log high]``; its grid is ``grid`` log-spaced points;
  with ``relative=True`` the bounds are multiples of the value it replaces (the protocol's
  learning rate differs by benchmark, so its space is "a tenth to ten times the default");
* :class:`IntRange`: the integers ``low .. high`` (inclusive), uniform.

The module imports nothing from the framework, so :mod:`mtlbench.method` can use it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Literal

#: The end of a range a selected value sits at ("high": its largest values).
Side = Literal["low", "high"]
#: A log-uniform value within this share of its range's ends (in log scale) is at an edge: the
#: report marks it, and a tuning block with ``widen`` searches beyond it (docs/tuning.md).
EDGE_SHARE = 0.1


class Space:
    """One hyper-parameter's space: a finite grid and a seeded random draw."""

    def grid(self, default: Any = None) -> list[Any]:
        """The finite set of values a grid search tries (``default``: the value replaced)."""
        raise NotImplementedError

    def sample(self, rng: random.Random, default: Any = None) -> Any:
        """One draw from ``rng`` (a seeded ``random.Random``)."""
        raise NotImplementedError

    def quantile(self, u: float, default: Any = None) -> Any:
        """The value at ``u`` in [0, 1) of the space's distribution (its inverse CDF): the
        stratified sampler draws one ``u`` per stratum (:func:`mtlbench.tune.sample_configs`)."""
        raise NotImplementedError

    def finite(self) -> bool:
        """Whether :meth:`sample` only returns values of :meth:`grid`."""
        return True

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Choice(Space):
    """One of ``values``, uniformly."""

    values: tuple[Any, ...]

    def __init__(self, *values: Any) -> None:
        if not values:
            raise ValueError("Choice needs at least one value")
        object.__setattr__(self, "values", tuple(values))

    def grid(self, default: Any = None) -> list[Any]:
        return list(self.values)

    def sample(self, rng: random.Random, default: Any = None) -> Any:
        return rng.choice(self.values)

    def quantile(self, u: float, default: Any = None) -> Any:
        return self.values[min(int(u * len(self.values)), len(self.values) - 1)]

    def describe(self) -> str:
        return "{" + ", ".join(repr(v) for v in self.values) + "}"


@dataclass(frozen=True)
class LogUniform(Space):
    """``x = exp(U[log low, log high])`` (times ``default`` when ``relative``)."""

    low: float
    high: float
    points: int = 5
    relative: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.low < self.high:
            raise ValueError(f"LogUniform needs 0 < low < high, got {self.low}, {self.high}")
        if self.points < 2:
            raise ValueError("LogUniform needs at least 2 grid points")

    def _scale(self, default: Any) -> float:
        if not self.relative:
            return 1.0
        if not isinstance(default, (int, float)) or default <= 0:
            raise ValueError(f"a relative LogUniform needs a positive default, got {default!r}")
        return float(default)

    def grid(self, default: Any = None) -> list[float]:
        lo, hi, n = math.log(self.low), math.log(self.high), self.points
        scale = self._scale(default)
        return [_round(scale * math.exp(lo + (hi - lo) * i / (n - 1))) for i in range(n)]

    def sample(self, rng: random.Random, default: Any = None) -> float:
        value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return _round(self._scale(default) * value)

    def quantile(self, u: float, default: Any = None) -> float:
        lo, hi = math.log(self.low), math.log(self.high)
        return _round(self._scale(default) * math.exp(lo + (hi - lo) * u))

    def finite(self) -> bool:
        return False

    def position(self, value: float, default: Any = None) -> float:
        """Where ``value`` lies in the range, in log scale: 0 at ``low``, 1 at ``high``."""
        scale = self._scale(default)
        return math.log(value / (self.low * scale)) / math.log(self.high / self.low)

    def beyond(self, side: Side, factor: float) -> LogUniform:
        """The band a widening round searches (:mod:`mtlbench.tune_widen`): from the range's
        ``high`` end to ``factor`` times it, or from ``low / factor`` to ``low``."""
        if side == "high":
            return LogUniform(self.high, self.high * factor, self.points, self.relative)
        return LogUniform(self.low / factor, self.low, self.points, self.relative)

    def widened(self, side: Side, factor: float) -> LogUniform:
        """The range with ``factor`` more on ``side``: what a widened tuning searched."""
        if side == "high":
            return LogUniform(self.low, self.high * factor, self.points, self.relative)
        return LogUniform(self.low / factor, self.high, self.points, self.relative)

    def describe(self) -> str:
        unit = " x default" if self.relative else ""
        return f"log-uniform [{self.low:g}, {self.high:g}]{unit} (grid: {self.points} points)"


@dataclass(frozen=True)
class IntRange(Space):
    """An integer in ``low .. high`` (inclusive), uniformly."""

    low: int
    high: int

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError(f"IntRange needs low <= high, got {self.low}, {self.high}")

    def grid(self, default: Any = None) -> list[int]:
        return list(range(self.low, self.high + 1))

    def sample(self, rng: random.Random, default: Any = None) -> int:
        return rng.randint(self.low, self.high)

    def quantile(self, u: float, default: Any = None) -> int:
        return min(self.low + int(u * (self.high - self.low + 1)), self.high)

    def describe(self) -> str:
        return f"integers {self.low}..{self.high}"


def _round(value: float) -> float:
    """Four significant digits: sampled values stay readable in ids, records and reports."""
    return float(f"{value:.4g}")


# The protocol's learning rate, tunable for every method (LS included): from a tenth to ten times
# the learning rate the trial would otherwise use (the benchmark's, or the method's own protocol
# default such as LDC-MTL's). Its key is prefixed: some methods have an ``lr`` of their own.
PROTOCOL_SPACE: dict[str, Space] = {"protocol.lr": LogUniform(0.1, 10.0, points=5, relative=True)}
