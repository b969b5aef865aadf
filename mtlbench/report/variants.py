"""Variants: runs with different settings are never averaged together.

Records of one benchmark are grouped by method, hyper-parameters, protocol and trainer policies.
A variant is labelled with the keys that set it apart (``ldc_mtl [lr=0.0003]``): protocol and
policy keys that differ from the benchmark's usual setting (its STL runs', else the most
common one), hyper-parameters that differ between the variants of the method. The values a
tuning stage selected are left out: with tuning every method differs from the usual setting, so
a tuned method is named plainly and its selected configuration has a table of its own
(:mod:`.selected`); brackets stay for hand-made variants of one method. Protocol keys that index
replicates (the toy's initial point ``start``) are not variants: such runs are replicates like
seeds. A hyper-parameter that is the suite's addition, not the paper's (``Method.not_in_paper``:
LDC-MTL's ``router_warmup``), is named whenever a run sets it away from its default, even on a
method's only variant: the row must not pass for the paper's method.
"""

from __future__ import annotations

import inspect
import json
import math
from collections import Counter
from typing import Any

import pandas as pd

from mtlbench.method import METHODS
from mtlbench.method import names as method_names
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


def _differing(d: dict[str, Any], modal: dict[str, Any], scope: str) -> list[tuple[str, str]]:
    """``(scope.key, "key=value")`` of the keys whose value differs from ``modal``'s."""
    return [
        (f"{scope}.{k}", f"{k}={fmt_setting(d.get(k))}")
        for k in sorted(set(d) | set(modal))
        if fmt_setting(d.get(k)) != fmt_setting(modal.get(k))
    ]


def selected_keys(tuning: Any, cache: dict[str, dict[str, Any]]) -> set[str]:
    """The settings a run's tuning stage selected (``protocol.lr``, ``method.beta``: the keys of
    its tuning tag's ``selected``), from the ``tuning`` column's JSON; empty for an untuned run."""
    if not isinstance(tuning, str):
        return set()
    selected = parse(tuning, cache).get("selected")
    return set(selected) if isinstance(selected, dict) else set()


def not_in_paper(method: str, hparams: dict[str, Any]) -> list[tuple[str, str]]:
    """``(method.key, "key=value")`` of the hyper-parameters of ``hparams`` that the method
    declares as the suite's additions (``Method.not_in_paper``) and that differ from their
    defaults; empty for a method this installation lacks."""
    if method not in method_names():
        return []
    cls = METHODS.get(method)
    params = inspect.signature(cls.__init__).parameters
    return [
        (f"method.{k}", f"{k}={fmt_setting(hparams[k])}")
        for k in cls.not_in_paper
        if k in hparams
        and k in params
        and fmt_setting(hparams[k]) != fmt_setting(params[k].default)
    ]


def _method_labels(
    method: str,
    variants: list[Settings],
    modal: dict[str, dict[str, Any]],
    cache: dict,
    tuned: dict[Settings, set[str]],
) -> dict[Settings, str]:
    """Labels of one method's variants on one benchmark. The settings a variant's tuning stage
    selected are left out of its label (the page's table of selected configurations gives
    them), unless two variants of the method would then read alike."""
    hps = [parse(v[0], cache) for v in variants]
    hp_keys = sorted({k for d in hps for k in d})
    varying = [k for k in hp_keys if len({fmt_setting(d.get(k)) for d in hps}) > 1]
    full, plain = {}, {}
    for variant, hpd in zip(variants, hps, strict=True):
        hp, proto, pol = variant
        parts = _differing(parse(proto, cache), modal["protocol"], "protocol")
        parts += _differing(parse(pol, cache), modal["policies"], "policies")
        parts += [(f"method.{k}", f"{k}={fmt_setting(hpd.get(k))}") for k in varying]
        parts += [p for p in not_in_paper(method, hpd) if p[0].split(".", 1)[1] not in varying]
        own = tuned.get(variant, set())
        full[variant] = _label(method, [text for _, text in parts])
        plain[variant] = _label(method, [text for key, text in parts if key not in own])
    counts = Counter(plain.values())
    return {v: plain[v] if counts[plain[v]] == 1 else full[v] for v in variants}


def _label(method: str, parts: list[str]) -> str:
    return f"{method} [{', '.join(parts)}]" if parts else str(method)


def label_variants(df: pd.DataFrame) -> pd.Series:
    """A display label per row: the method, plus the settings that set its variant apart.

    Within a benchmark, protocol and policy keys are shown where they differ from the
    single-task runs' (the benchmark's protocol as the sweep gave it), or, without STL runs,
    from the most common value (by number of records); hyper-parameters where they differ
    between the variants of the same method. Settings that a tuning stage selected (the
    ``tuning`` column) are not shown: a tuned method is named plainly, unless that would give two
    of its variants one label. STL rows are labelled ``stl:<task>``.
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
        by_method: dict[str, list[Settings]] = {}
        tuned: dict[str, dict[Settings, set[str]]] = {}
        tuning = g["tuning"] if "tuning" in g else pd.Series(None, index=g.index, dtype=object)
        keys = zip(g["method"], g["hparams"], g["protocol"], g["policies"], tuning, strict=True)
        for method, hp, proto, pol, tag in keys:
            variants = by_method.setdefault(method, [])
            if (hp, proto, pol) not in variants:
                variants.append((hp, proto, pol))
            own = tuned.setdefault(method, {}).setdefault((hp, proto, pol), set())
            own |= selected_keys(tag, cache)
        names: dict[tuple[str, str, str, str], str] = {}
        for method, variants in by_method.items():
            named = _method_labels(method, variants, modal, cache, tuned[method])
            for key, label in named.items():
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
        ("tuning", None),
        ("stored_reference", None),
        ("error", None),
        ("train_tasks", ""),
        ("diverged_epoch", math.nan),
        ("rid", -1),
        ("machine", ""),
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
