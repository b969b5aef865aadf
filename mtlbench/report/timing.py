"""Time × LS never divides one machine's time by another's.

Each record says where it ran (its ``environment``); :func:`machine` keeps what decides a
step's time: the device type, the device's name (the GPU model), the CPU model and the torch
version. A run's time is divided by LS's on the same benchmark only when LS ran on the same
machine; otherwise by the LS runs of a timing reference (``mtlbench report ...
--timing-reference FOLDER``: LS run on the run's machine, with the same data protocol), and
otherwise not at all: the leaderboard marks the cell "not comparable" and says why
(docs/reports.md, "Your method against a committed leaderboard").

Records written before the CPU model was recorded stand for their host and platform instead
(``not recorded (host ..., ...)``): two such records compare as before, a record that has it
never equals one that lacks it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from mtlbench.references import data_key

NOT_COMPARABLE = "not comparable"
TIMING_REFERENCE = "timing reference"


def machine(record: Mapping[str, Any]) -> str:
    """What decides a record's step time, as sorted JSON: ``device`` (its type: cpu, cuda),
    ``device_name``, ``cpu`` (the CPU model) and ``torch``."""
    env = record.get("environment") or {}
    cpu = env.get("cpu_model") or (
        f"not recorded (host {env.get('host') or '?'}, {env.get('platform') or '?'})"
    )
    return json.dumps(
        {
            "device": str(env.get("device") or "?").partition(":")[0],
            "device_name": str(env.get("device_name") or "?"),
            "cpu": str(cpu),
            "torch": str(env.get("torch") or "?"),
        },
        sort_keys=True,
    )


def differences(a: str, b: str) -> str:
    """How two :func:`machine` keys differ: ``cpu 'X' vs 'Y'; torch '2.13' vs '2.14'``."""
    left, right = _parse(a), _parse(b)
    return "; ".join(
        f"{k} {left.get(k)!r} vs {right.get(k)!r}"
        for k in sorted(set(left) | set(right))
        if left.get(k) != right.get(k)
    )


def _parse(key: str) -> dict[str, Any]:
    try:
        out = json.loads(key) if key else {}
    except ValueError:
        out = {}
    return out if isinstance(out, dict) else {}


def _mean(frame: pd.DataFrame, column: str) -> float:
    return float(frame[column].mean()) if len(frame) else math.nan


def time_ratios(
    done: pd.DataFrame,
    ls_label: str | None,
    notes: list[str],
    timing_ls: pd.DataFrame | None = None,
    timing_name: str = "the timing reference",
) -> dict[str, str]:
    """Per run, its per-step median and total training time relative to LS's, into
    ``_step_x`` / ``_total_x`` of ``done`` (the done multi-task runs of one benchmark, with a
    ``machine`` column): the mean of LS's runs (``ls_label``) on the same machine, else of the
    LS runs of ``timing_ls`` on that machine with the same data protocol, else NaN. Returns, per
    variant whose time is not against its own benchmark's LS on its machine,
    :data:`NOT_COMPARABLE` or :data:`TIMING_REFERENCE`; says why in ``notes``."""
    done["_step_x"] = math.nan
    done["_total_x"] = math.nan
    if ls_label is None:
        return {}
    blank = pd.Series("", index=done.index, dtype=object)
    machines = done["machine"].fillna("").astype(str) if "machine" in done else blank
    keys = done["protocol"].map(data_key) if "protocol" in done else blank
    ls = done[done["variant"] == ls_label]
    ls_machines = machines[ls.index]
    status: dict[str, str] = {}
    for (where, key), idx in done.groupby([machines, keys], sort=False).groups.items():
        base = ls[ls_machines == where]
        variants = sorted(done.loc[idx, "variant"].astype(str).unique())
        if base.empty:
            base = _timing_match(timing_ls, where, key)
            other = next(iter(ls_machines.unique()), "")
            why = differences(str(where), str(other))
            label = NOT_COMPARABLE if base.empty else TIMING_REFERENCE
            status.update(dict.fromkeys(variants, label))
            notes.append(_note(label, variants, ls_label, why, timing_name, len(base)))
            if base.empty:
                continue
        done.loc[idx, "_step_x"] = done.loc[idx, "step_median_s"] / _mean(base, "step_median_s")
        done.loc[idx, "_total_x"] = done.loc[idx, "train_s"] / _mean(base, "train_s")
    return status


def _timing_match(timing_ls: pd.DataFrame | None, where: str, key: str) -> pd.DataFrame:
    """The LS runs of the timing reference on machine ``where`` with data protocol ``key``."""
    if timing_ls is None or timing_ls.empty:
        return pd.DataFrame()
    same = timing_ls["machine"].astype(str) == where
    same &= timing_ls["protocol"].map(data_key) == key
    return timing_ls[same]


def _note(label: str, variants: list[str], ls: str, why: str, timing: str, n: int) -> str:
    names = ", ".join(variants)
    if label == TIMING_REFERENCE:
        return (
            f"time × LS of {names}: against {n} LS run(s) of {timing} on the same machine, not "
            f"against {ls}'s runs here (another machine: {why})"
        )
    return (
        f"time × LS of {names}: {NOT_COMPARABLE}: ran on another machine than {ls} ({why}); "
        "run LS on that machine and pass its folder as --timing-reference (docs/reports.md)"
    )


def timing_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The done multi-task LS runs of a timing reference's records frame."""
    keep = (frame["method"] == "ls") & (frame["mode"] != "stl") & (frame["status"] == "done")
    return frame[keep]
