"""The selected configurations of a tuned sweep: per tuned method, the values its tuning stage
picked on validation data and the range each was drawn from.

A tuned method's final runs carry the tuning tag (``config.tuning``, :mod:`mtlbench.tune`):
``selected`` maps each tuned setting (``protocol.lr``, ``method.<name>``) to the value the
tuning stage chose. The range is the setting's declared search space (:mod:`mtlbench.space`;
``mtlbench list methods --space``): the protocol's learning rate
(:data:`mtlbench.space.PROTOCOL_SPACE`, relative to the learning rate the trial has without
tuning) or the method's ``search_space``. A relative range is written out in absolute numbers
with the value it scales (the run's setting without tuning, resolved as the tuning stage
resolves it, :func:`mtlbench.trial.resolve`). The spaces are this installation's: records do not
store them, so a value outside the range as declared now is flagged (the space changed since the
sweep ran). Tuning follows equal budgets over declared spaces (AlgoPerf, Dahl et al. 2023).

A selection at an edge says that the optimum may lie outside what was searched (issue 21):
``edge`` marks a value that is the largest or smallest of the method's tuning trials, or that
sits at the end of its declared range (a choice's first or last value, an integer range's
bound, the outer tenth of a log-uniform range in log scale).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from mtlbench.method import METHODS, names
from mtlbench.report.variants import fmt_setting, parse, selected_keys
from mtlbench.space import EDGE_SHARE, PROTOCOL_SPACE, Choice, IntRange, LogUniform, Space
from mtlbench.trial import TrialConfig, resolve

COLUMNS = ["benchmark", "method", "base_method", "setting", "selected", "untuned", "range", "edge"]
SCOPES = ("protocol", "method", "policies")  # the prefixes of a trial's override keys


def setting_label(key: str) -> str:
    """``lr (protocol)`` for the protocol's keys, the bare name for a method's (as
    ``mtlbench list methods --space`` writes them: UW has an ``lr`` of its own)."""
    scope, _, bare = key.rpartition(".")
    return f"{bare} (protocol)" if scope == "protocol" else bare


def declared_space(method: str, key: str) -> Space | None:
    """The search space this installation declares for a tuned setting (None: not declared,
    or the method is not registered here)."""
    scope, _, bare = key.rpartition(".")
    if scope == "protocol":
        return PROTOCOL_SPACE.get(key)
    try:
        if method not in names():  # imports the built-ins and the installed plug-ins first
            return None
        return METHODS.get(method).search_space.get(bare)
    except Exception:  # a method whose module fails to import here
        return None


def untuned_values(row: pd.Series, selected: Sequence[str], cache: dict) -> dict[str, Any]:
    """The values the ``selected`` settings of ``row``'s run have without tuning, keyed like the
    tuning tag (``protocol.lr``): the run's other settings resolved again with these left to
    their defaults. Empty when the benchmark or method cannot be resolved here."""
    settings = {
        scope: parse(row.get(column) or "", cache)
        for scope, column in zip(SCOPES, ("protocol", "hparams", "policies"), strict=True)
    }
    overrides = {
        f"{scope}.{k}": v
        for scope, values in settings.items()
        for k, v in values.items()
        if f"{scope}.{k}" not in selected
    }
    try:
        base = resolve(TrialConfig(str(row["benchmark"]), str(row["method"]), 0, overrides))
    except Exception:  # a benchmark or method this installation lacks, or changed settings
        return {}
    out = {f"method.{k}": v for k, v in base.hparams.items()}
    out.update({f"protocol.{k}": v for k, v in base.protocol.to_dict().items()})
    return out


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def describe_range(space: Space | None, default: Any, sampler: str | None) -> str:
    """The range a value was drawn from, in the numbers of the run (a relative log-uniform
    range scaled by ``default``; its grid size where the sampler is ``grid``)."""
    if space is None:
        return "not declared by this installation"
    if isinstance(space, Choice):
        return "one of " + ", ".join(fmt_setting(v) for v in space.values)
    if isinstance(space, IntRange):
        return f"integers {space.low} to {space.high}"
    if not isinstance(space, LogUniform):
        return space.describe()
    grid = f", grid of {space.points}" if sampler == "grid" else ""
    if not space.relative:
        return f"log-uniform [{space.low:g}, {space.high:g}]{grid}"
    scale = _number(default)
    if scale is None or scale <= 0:
        return f"log-uniform [{space.low:g}, {space.high:g}] × the untuned value{grid}"
    low, high = space.grid(scale)[0], space.grid(scale)[-1]
    return f"log-uniform [{low:g}, {high:g}] ({space.low:g} to {space.high:g} × {scale:g}{grid})"


def outside(space: Space | None, value: Any, default: Any) -> bool:
    """Whether ``value`` lies outside ``space`` as declared here (rounding aside)."""
    if isinstance(space, Choice):
        return fmt_setting(value) not in {fmt_setting(v) for v in space.values}
    x = _number(value)
    if x is None:
        return False
    if isinstance(space, IntRange):
        return not space.low <= x <= space.high
    if isinstance(space, LogUniform):
        scale = _number(default) if space.relative else 1.0
        if scale is None or scale <= 0:
            return False
        low, high = space.low * scale, space.high * scale
        return not (low * (1 - 1e-3) <= x <= high * (1 + 1e-3))  # values keep 4 digits
    return False


def tried_values(records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], list[Any]]:
    """Per (method, setting key), the values its tuning trials ran (``protocol.lr`` from the
    trial's protocol, ``method.<name>`` from its hyper-parameters)."""
    out: dict[tuple[str, str], list[Any]] = {}
    for record in records:
        cfg = record.get("config") or {}
        if cfg.get("stage") != "tune":
            continue
        scopes = {"protocol": cfg.get("protocol") or {}, "method": cfg.get("hparams") or {}}
        for scope, values in scopes.items():
            for name, value in values.items():
                out.setdefault((str(cfg.get("method")), f"{scope}.{name}"), []).append(value)
    return out


def edge_note(space: Space | None, value: Any, default: Any, tried: Sequence[Any]) -> str:
    """Why ``value`` sits at an edge of what was searched, or ``""``: the largest or smallest
    of the (numeric, distinct) values ``tried``, and its place in the declared ``space``."""
    x = _number(value)
    notes = []
    numbers = sorted({n for n in map(_number, tried) if n is not None})
    if x is not None and len(numbers) > 1:
        if math.isclose(x, numbers[-1], rel_tol=1e-3):
            notes.append(f"the largest of {len(numbers)} values tried")
        elif math.isclose(x, numbers[0], rel_tol=1e-3):
            notes.append(f"the smallest of {len(numbers)} values tried")
    bound = _range_edge(space, x, default) if x is not None else ""
    return "; ".join(notes + ([bound] if bound else []))


def _range_edge(space: Space | None, x: float, default: Any) -> str:
    if isinstance(space, Choice):
        values = sorted(v for v in map(_number, space.values) if v is not None)
        ends = {values[0]: "lowest", values[-1]: "highest"} if len(values) > 1 else {}
        end = next((e for v, e in ends.items() if math.isclose(x, v, rel_tol=1e-3)), "")
        return f"the {end} choice" if end else ""
    if isinstance(space, IntRange):
        ends = {space.low: "the range's low end", space.high: "the range's high end"}
        return ends.get(int(x), "")
    if isinstance(space, LogUniform):
        scale = _number(default) if space.relative else 1.0
        if scale is None or scale <= 0 or x <= 0:
            return ""
        where = space.position(x, scale if space.relative else None)
        if where >= 1 - EDGE_SHARE:
            return "in the top tenth of its range"
        if where <= EDGE_SHARE:
            return "in the bottom tenth of its range"
    return ""


def searched_space(space: Space | None, key: str, tag: Mapping[str, Any]) -> Space | None:
    """The range a final run's tuning searched for ``key``: the declared ``space``, widened by
    the tag's factor on the side its widening round searched (docs/tuning.md)."""
    side = (tag.get("widened") or {}).get(key)
    factor = (tag.get("widen") or {}).get("factor")
    if isinstance(space, LogUniform) and side in ("low", "high") and _number(factor):
        return space.widened(side, float(factor))
    return space


def _key_order(key: str) -> tuple[int, str]:
    """The protocol's settings first (the learning rate), then the method's, by name."""
    return (0 if key.startswith("protocol.") else 1, key)


def selected_configs(
    rows: pd.DataFrame,
    order: Sequence[str] = (),
    tried: Mapping[tuple[str, str], Sequence[Any]] | None = None,
) -> pd.DataFrame:
    """One row per tuned variant and setting (:data:`COLUMNS`): the value selected, the value
    without tuning, the range it came from and whether it sits at an edge (:func:`edge_note`).
    ``rows``: one benchmark's prepared records (a ``tuning`` column,
    :func:`mtlbench.report.load.read_results`); ``order``: the variant labels in the
    leaderboard's order (others follow by name); ``tried``: :func:`tried_values` of the
    benchmark's records. Empty without tuned runs."""
    if "tuning" not in rows or not rows["tuning"].notna().any():
        return pd.DataFrame(columns=COLUMNS)
    tuned = rows[rows["tuning"].notna() & (rows["mode"] != "stl")]
    rank = {label: i for i, label in enumerate(order)}
    firsts = tuned.drop_duplicates("variant")
    firsts = firsts.assign(_rank=firsts["variant"].map(lambda v: rank.get(v, math.inf)))
    firsts = firsts.sort_values(["_rank", "variant"], kind="stable")
    cache: dict[str, dict[str, Any]] = {}
    out = []
    for _, row in firsts.iterrows():
        tag = parse(row["tuning"], cache)
        chosen = tag.get("selected") or {}
        keys = sorted(selected_keys(row["tuning"], cache), key=_key_order)
        defaults = untuned_values(row, keys, cache)
        for key in keys:
            space = searched_space(declared_space(str(row["method"]), key), key, tag)
            default = defaults.get(key)
            text = describe_range(space, default, tag.get("sampler"))
            if key in (tag.get("widened") or {}):
                text += f" (widened x{tag['widen']['factor']:g} in a second round)"
            if outside(space, chosen[key], default):
                text += " (the value lies outside: the space changed since the sweep ran)"
            out.append(
                {
                    "benchmark": row["benchmark"],
                    "method": str(row["variant"]),
                    "base_method": str(row["method"]),
                    "setting": setting_label(key),
                    "selected": fmt_setting(chosen[key]),
                    "untuned": fmt_setting(default) if key in defaults else None,
                    "range": text,
                    "edge": edge_note(
                        space,
                        chosen[key],
                        default,
                        (tried or {}).get((str(row["method"]), key), ()),
                    ),
                }
            )
    return pd.DataFrame(out, columns=COLUMNS)
