"""The report's shared types, at the bottom of ``mtlbench.report`` (they import no other module
of the package): a metric as the report sees it (:class:`Col`), what it knows of a benchmark
(:class:`BenchInfo`), a leaderboard's reference (:class:`RefInfo`), its statistics
(:class:`Significance`, :class:`Across`) and the leaderboard itself (:class:`Board`), plus
:func:`tie_round`, the rounding under which means tie in ranks and marks. The modules that
compute them (:mod:`.benchmarks`, :mod:`.reference`, :mod:`.significance`, :mod:`.leaderboard`)
import them from here, as do the tables, the page and its sections."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mtlbench import stats


@dataclass(frozen=True)
class Col:
    """One metric as the report sees it (``higher_is_better`` None when it cannot be told)."""

    name: str
    task: str
    higher_is_better: bool | None
    unit: str = ""

    @property
    def arrow(self) -> str:
        return {True: " ↑", False: " ↓"}.get(self.higher_is_better, " (?)")  # type: ignore[arg-type]


@dataclass
class BenchInfo:
    name: str
    metrics: list[Col]
    known: bool
    published: Any | None = None  # a mtlbench.benchmark.Reference
    notes: list[str] = field(default_factory=list)

    @property
    def ranked(self) -> list[Col]:
        """The metrics with a known direction (those that enter Δm% and ranks)."""
        return [m for m in self.metrics if m.higher_is_better is not None]


@dataclass
class RefInfo:
    """The reference of a leaderboard: values per metric and where they come from."""

    kind: str  # "published" | "stl" | "stored"
    values: dict[str, float]
    source: str
    std: dict[str, float] = field(default_factory=dict)
    n: dict[str, int] = field(default_factory=dict)  # seeds per task (STL)
    trials: dict[str, list[str]] = field(default_factory=dict)
    key: str = ""
    validation: dict[str, float] | None = None  # the STL runs' validation means (selection)


@dataclass
class Significance:
    """Per variant (index: its label) the
    :data:`mtlbench.report.significance.COLUMNS`; ``note`` names the statistics,
    ``sentence`` says which differences are significant; ``reason`` says why there is nothing
    (then ``table`` is empty)."""

    table: pd.DataFrame
    note: str = ""
    sentence: str = ""
    reason: str = ""
    single: list[str] = field(default_factory=list)
    replicates: bool = False


@dataclass
class Across:
    """Statistics over benchmarks: ``frame`` (benchmark, method, seed, delta_m of the methods
    compared), ``ranks`` (:func:`mtlbench.stats.mean_ranks` joined with P(improvement)),
    ``friedman`` (None with fewer than 3 methods), ``profile`` and the ``notes``."""

    benchmarks: list[str]
    frame: pd.DataFrame
    ranks: pd.DataFrame
    friedman: stats.FriedmanResult | None
    profile: pd.DataFrame
    notes: list[str]


@dataclass
class Board:
    """One benchmark's leaderboard (``table``: one row per variant, a reference row first,
    methods not run last) with its per-run values (``runs``: the done multi-task records with
    ``_dm``, ``_dmt``, ``_step_x``, ``_total_x``), notes and missing runs."""

    benchmark: str
    table: pd.DataFrame
    runs: pd.DataFrame
    metrics: list[Col]
    reference: RefInfo | None
    missing: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    ls: str | None = None
    significance: Significance | None = None
    timing: dict[str, str] = field(default_factory=dict)  # variant -> time × LS not against
    # its own benchmark's LS on its machine (mtlbench.report.timing: not comparable, or the
    # timing reference's)


def tie_round(values: Any) -> Any:
    """Values rounded to 10 significant digits, so that means equal up to float noise
    ((0.6 + 0.6 + 0.9) / 3 against 0.7) tie in ranks and marks."""

    def one(x: float) -> float:
        return float(f"{x:.10g}") if math.isfinite(x) else x

    if isinstance(values, pd.DataFrame):
        return values.astype(float).map(one)
    return pd.Series(values, dtype=float).map(one)
