"""Sequential seeding in a sweep spec: as many test seeds as the question needs (issue 21).

``seeds`` is either a list of seeds, or a plan::

    seeds: {min: 5, max: 20, step: 5, until: {ci_halfwidth: 1.0}}

Every method (and every single-task reference) starts with seeds ``0 .. min - 1``. Between
waves, each one whose runs have all finished is checked with the same rule: while the 95% t
interval of its mean Δm% is wider than ``ci_halfwidth`` points on either side and it has fewer
than ``max`` seeds, it gets the next ``step`` seeds (:mod:`mtlbench.run.seeding`). A single-task
reference is measured on the same scale, its task's metrics as a Δm% against their own mean.
The decisions are a function of the records, so a sweep run again (after a kill, on Slurm with
``wait: false``) takes the same ones and runs no seed twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mtlbench.registry import ConfigError

PLAN_KEYS = {"min", "max", "step", "until"}


@dataclass(frozen=True)
class SeedPlan:
    """A parsed sequential ``seeds`` entry."""

    min: int
    max: int
    step: int
    ci_halfwidth: float

    @property
    def first(self) -> list[int]:
        """The seeds every method starts with."""
        return list(range(self.min))

    def tag(self) -> dict[str, Any]:
        """What a trial of a sequential sweep records about its seeding (and its id hashes)."""
        return {"min": self.min, "max": self.max, "step": self.step, "until": self.ci_halfwidth}


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def parse_seed_plan(raw: dict[str, Any]) -> SeedPlan:
    """A ``seeds`` mapping as a :class:`SeedPlan`; raises ConfigError listing every problem."""
    problems = [f"unknown key {k!r}" for k in raw if k not in PLAN_KEYS and not k.startswith("__")]
    low, high = raw.get("min"), raw.get("max")
    step = raw.get("step", low)
    for key, value in (("min", low), ("max", high), ("step", step)):
        if not _positive_int(value):
            problems.append(f"{key} must be a positive integer, got {value!r}")
    if not problems and high < low:
        problems.append(f"max ({high}) is below min ({low})")
    if low is not None and _positive_int(low) and low < 2:
        problems.append("min must be at least 2: a confidence interval needs two seeds")
    until = raw.get("until")
    width = until.get("ci_halfwidth") if isinstance(until, dict) else None
    if not isinstance(width, (int, float)) or isinstance(width, bool) or width <= 0:
        problems.append("until must be {ci_halfwidth: <a positive number of Δm% points>}")
    if problems:
        raise ConfigError("seeds: " + "; ".join(problems))
    return SeedPlan(int(low), int(high), int(step), float(width))
