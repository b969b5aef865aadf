"""Variants: runs with different settings are never averaged together.

Records of one benchmark are grouped by method, hyper-parameters, protocol and trainer policies.
A variant is labelled with the keys that set it apart (``ldc_mtl [lr=0.0003]``): protocol and
policy keys that differ from the benchmark's usual setting (its STL runs', else the most
common one), hyper-parameters that differ
between the variants of the method. Protocol keys that index replicates (the toy's initial point
``start``) are not variants: such runs are replicates like seeds.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from mtlbench.records import REPLICATE_KEYS

Settings = tuple[str, str, str]  # hparams, protocol, policies as sorted JSON


def parse(text: str, cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The dict of a JSON column value (memoised in ``cache``; ``{}`` when not JSON)."""
    if text not in cache:
        try:
            cache[text] = json.loads(text) if text else {}
        except (TypeError, ValueError):
            cache[text] = {}
    return cache[text]


def fmt_setting(v: Any) -> str:
    """A setting's value as written in a label (``0.0003``, ``[1,2]``, ``None``)."""
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def _differing(d: dict[str, Any], modal: dict[str, Any]) -> list[str]:
    return [
        f"{k}={fmt_setting(d.get(k))}"
        for k in sorted(set(d) | set(modal))
        if fmt_setting(d.get(k)) != fmt_setting(modal.get(k))
    ]


def _method_labels(
    method: str, variants: list[Settings], modal: dict[str, dict[str, Any]], cache: dict
) -> dict[Settings, str]:
    """Labels of one method's variants on one benchmark."""
    hps = [parse(v[0], cache) for v in variants]
    hp_keys = sorted({k for d in hps for k in d})
    varying = [k for k in hp_keys if len({fmt_setting(d.get(k)) for d in hps}) > 1]
    out = {}
    for (hp, proto, pol), hpd in zip(variants, hps, strict=True):
        parts = _differing(parse(proto, cache), modal["protocol"])
        parts += _differing(parse(pol, cache), modal["policies"])
        parts += [f"{k}={fmt_setting(hpd.get(k))}" for k in varying]
        out[(hp, proto, pol)] = f"{method} [{', '.join(parts)}]" if parts else str(method)
    return out


def label_variants(df: pd.DataFrame) -> pd.Series:
    """A display label per row: the method, plus the settings that set its variant apart.

    Within a benchmark, protocol and policy keys are shown where they differ from the
    single-task runs' (the benchmark's protocol as the sweep gave it), or, without STL runs,
    from the most common value (by number of records); hyper-parameters where they differ
    between the variants of the same method. STL rows are labelled ``stl:<task>``.
    """
    labels = pd.Series(df["method"].astype(str), index=df.index, dtype=object)
    stl = df["mode"] == "stl"
    labels[stl] = "stl:" + df.loc[stl, "task"].astype(str)
    cache: dict[str, dict[str, Any]] = {}
    for bench, g in df[~stl].groupby("benchmark", sort=False):
        # The usual setting: the single-task runs' where there are some (they run the
        # benchmark's protocol as the spec gives it, while tuned methods each bring their own
        # learning rate, none of which is "usual"), else the most common multi-task one.
        refs = df[stl & (df["benchmark"] == bench)]
        base = refs if len(refs) else g
        modal = {
            col: parse(base[col].value_counts().idxmax(), cache) for col in ("protocol", "policies")
        }
        combos = g.groupby(["method", "hparams", "protocol", "policies"], sort=False).size()
        by_method: dict[str, list[Settings]] = {}
        for method, hp, proto, pol in combos.index:
            by_method.setdefault(method, []).append((hp, proto, pol))
        names: dict[tuple[str, str, str, str], str] = {}
        for method, variants in by_method.items():
            for key, label in _method_labels(method, variants, modal, cache).items():
                names[(method, *key)] = label
        key = zip(g["method"], g["hparams"], g["protocol"], g["policies"], strict=True)
        labels[g.index] = [names[k] for k in key]
    return labels


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """A records frame ready for the leaderboard: :func:`mtlbench.records.load_results`'
    frames as well as :func:`mtlbench.report.load.read_results`', with a ``variant`` label."""
    df = df.copy()
    if "start" not in df:
        cache: dict[str, dict[str, Any]] = {}
        df["start"] = df["protocol"].map(lambda p: parse(p, cache).get("start"))
        df["protocol"] = df["protocol"].map(
            lambda p: json.dumps(
                {k: v for k, v in parse(p, cache).items() if k not in REPLICATE_KEYS},
                sort_keys=True,
            )
        )
    for col, default in (
        ("stored_reference", None),
        ("error", None),
        ("train_tasks", ""),
        ("diverged_epoch", math.nan),
        ("rid", -1),
    ):
        if col not in df:
            df[col] = default
    if "variant" not in df:
        df["variant"] = label_variants(df)
    return df


def best_variant(g: pd.DataFrame) -> pd.Series:
    """The row of a method's variants (a leaderboard's rows of one base method) with most done
    runs, the first of them on a tie: the variant a method enters comparisons across benchmarks
    with."""
    return g.sort_values("n", ascending=False, kind="stable").iloc[0]
