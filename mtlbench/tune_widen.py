"""Widening a tuned range once: the ``widen`` option of a ``tune`` block (docs/tuning.md).

    tune: {budget: 6, sampler: stratified, widen: {factor: 10}}

After a method's first round has finished and selected a configuration, every log-uniform
setting whose selected value sits at an edge of what was searched (:func:`edge_sides`: the
largest or smallest value its round tried, or within :data:`mtlbench.space.EDGE_SHARE` of an end
of its range in log scale) is searched once more, beyond that edge: a second round of the same
``budget`` draws its value from the band between the range's end and ``factor`` times further
(:meth:`mtlbench.space.LogUniform.beyond`), every other setting held at the first round's
selection. The best configuration of both rounds then wins. One rule for every method and
reference: each gets the second round exactly when its own selection is at an edge, and it is
never widened twice. Choices and integer ranges are lists a paper declared, not ranges to
extend; the report marks a selection at their ends.

This module holds the rule; :func:`mtlbench.tune.widen_round` builds the round's trials, and
:func:`mtlbench.run.tuning.finalize` decides it from the records (so a resumed sweep finds the
same round).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mtlbench.space import EDGE_SHARE, LogUniform, Side, Space

WIDEN_KEYS = {"factor"}


def parse_widen(raw: Any) -> tuple[float | None, list[str]]:
    """The factor of a ``widen`` block (None without one), and its problems."""
    if raw is None:
        return None, []
    if not isinstance(raw, Mapping):
        return None, [f"widen must be a mapping {{factor: <a number above 1>}}, got {raw!r}"]
    problems = [
        f"widen: unknown key {k!r} (valid: factor)"
        for k in raw
        if k not in WIDEN_KEYS and not str(k).startswith("__")
    ]
    factor = raw.get("factor")
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or factor <= 1:
        problems.append(f"widen: factor must be a number above 1, got {factor!r}")
    return (float(factor) if not problems else None), problems


def edge_sides(
    space: Mapping[str, Space],
    configs: Sequence[Mapping[str, Any]],
    index: int,
    defaults: Mapping[str, Any],
) -> dict[str, Side]:
    """The log-uniform settings of ``space`` whose value in ``configs[index]`` (the selected
    configuration) sits at an edge of what ``configs`` searched, and which edge: ``high`` when
    it is the largest value tried (of two or more) or lies in the top :data:`EDGE_SHARE` of its
    range in log scale, ``low`` likewise at the bottom. ``defaults``: the values a relative
    range scales."""
    sides: dict[str, Side] = {}
    for key, declared in sorted(space.items()):
        if not isinstance(declared, LogUniform):
            continue
        value = configs[index][key]
        tried = sorted({c[key] for c in configs})
        where = declared.position(value, defaults.get(key))
        several = len(tried) > 1
        if where >= 1 - EDGE_SHARE or (several and value == tried[-1]):
            sides[key] = "high"
        elif where <= EDGE_SHARE or (several and value == tried[0]):
            sides[key] = "low"
    return sides


def beyond_space(
    space: Mapping[str, Space], sides: Mapping[str, Side], factor: float
) -> dict[str, Space]:
    """The space a widening round samples: each edge setting's band beyond its edge."""
    out: dict[str, Space] = {}
    for key, side in sides.items():
        declared = space[key]
        if isinstance(declared, LogUniform):  # what edge_sides returns
            out[key] = declared.beyond(side, factor)
    return out
