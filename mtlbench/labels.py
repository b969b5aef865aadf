"""What tells the trials of one sweep or one results folder apart: labels built from trial
configs alone (``ResolvedTrial.to_dict()`` or a record's ``config``), so that the spec's plan,
``mtlbench status`` and the reports name a trial the same way. Plain dictionaries in, strings
out: no registry, no torch (``mtlbench status`` stays quick).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def trial_labels(configs: dict[str, dict[str, Any]], keys: Iterable[str] = ()) -> dict[str, str]:
    """What tells each trial apart, by trial id: ``benchmark method [task] seed=S`` and the
    settings named in ``keys`` (a spec's grid) or whose values differ among the trials of the
    same benchmark, method and task, e.g. ``toy ls seed=0 start=3``; a tuning trial of a
    widening round ends in ``round=2`` (docs/tuning.md).

    ``configs`` maps trial ids to resolved configs (``ResolvedTrial.to_dict()``, or a record's
    ``config``), so that a status view of records can label them the same way.
    """
    groups: dict[tuple[Any, ...], list[str]] = {}
    for trial_id, config in configs.items():
        group = (config.get("benchmark"), config.get("method"), config.get("task"))
        groups.setdefault(group, []).append(trial_id)
    labels = {}
    for members in groups.values():
        flat = [_flat(configs[m]) for m in members]
        varying = {k for k in set().union(*flat) if len({repr(f.get(k)) for f in flat}) > 1}
        for trial_id, values in zip(members, flat, strict=True):
            config = configs[trial_id]
            named = {k if k in values else k.rpartition(".")[2] for k in keys}
            shown = sorted((varying | named) & set(values))
            head = (config.get("benchmark"), config.get("method"), config.get("task"))
            text = " ".join(str(h) for h in head if h) + f" seed={config.get('seed')}"
            labels[trial_id] = " ".join([text, *(f"{k}={values[k]}" for k in shown)])
            if config.get("stage") == "tune" and (config.get("tuning") or {}).get("round"):
                labels[trial_id] += f" round={config['tuning']['round']}"  # a widening round
    return labels


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    """Hyper-parameters, protocol options and policies of a trial config in one mapping; a name
    found in two sections (UW's ``lr``) is prefixed with its section (``method.lr``)."""
    sections = {"method": "hparams", "protocol": "protocol", "policies": "policies"}
    counts: dict[str, int] = {}
    for section in sections.values():
        for name in config.get(section) or {}:
            counts[name] = counts.get(name, 0) + 1
    flat: dict[str, Any] = {}
    for prefix, section in sections.items():
        for name, value in (config.get(section) or {}).items():
            flat[name if counts[name] == 1 else f"{prefix}.{name}"] = value
    return flat
