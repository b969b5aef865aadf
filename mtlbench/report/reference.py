"""The reference ``b`` of each variant's Δm%, chosen through :mod:`mtlbench.references`.

In this order: the benchmark's published reference; else the single-task (``stl``) records of
the results folder with the variant's data protocol (:func:`mtlbench.references.data_key`; the
only STL reference there is when none matches, with a note); else, for a benchmark this
installation does not register, the reference stored in the records' ``delta_m`` when they all
store the same one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd

from mtlbench import references
from mtlbench.report.base import BenchInfo, Board, Col, RefInfo
from mtlbench.report.variants import fmt_setting


@dataclass
class Choice:
    """The reference of every variant (None: no Δm%, with the reason in ``no_ref``), the one
    shown in the table's reference row, and notes for the page."""

    refs: dict[str, RefInfo | None]
    shown: RefInfo | None
    no_ref: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def stl_references(rows: pd.DataFrame, info: BenchInfo) -> dict[str, RefInfo | str]:
    """:func:`mtlbench.references.stl_references` of one benchmark's rows, as
    :class:`RefInfo` (or the reason a data protocol has none)."""
    out: dict[str, RefInfo | str] = {}
    for key, ref in references.stl_references(rows, info.metrics).items():  # type: ignore[arg-type]
        if isinstance(ref, str):
            out[key] = ref
            continue
        d = ref.details
        out[key] = RefInfo(
            "stl", ref.values, ref.source, d["std"], d["n"], d["trials"], key, ref.validation
        )
    return out


def _stored(done: pd.DataFrame, notes: list[str]) -> RefInfo | None:
    """The reference the records stored, when they all stored the same one."""
    texts = done["stored_reference"].dropna().unique()
    if len(texts) > 1:
        notes.append("the records store different references; none is used")
    if len(texts) != 1:
        return None
    sources = done["stored_reference_source"].dropna().unique()
    source = sources[0] if len(sources) else "source not recorded"
    return RefInfo("stored", json.loads(texts[0]), f"as stored in the records' delta_m ({source})")


def _stl_for(
    variant: str, proto: str, stl_refs: dict[str, RefInfo | str], choice: Choice
) -> RefInfo | None:
    found = stl_refs.get(references.data_key(proto))
    if found is None and len(stl_refs) == 1:
        found = next(iter(stl_refs.values()))
        if isinstance(found, RefInfo):
            choice.notes.append(
                f"{variant}: its data protocol differs from the STL records'; "
                "Δm% uses the only STL reference there is"
            )
    if isinstance(found, str):
        choice.no_ref[variant] = found
        return None
    if found is None:
        choice.no_ref[variant] = "no STL record with the same data protocol"
    return found


def choose(rows: pd.DataFrame, info: BenchInfo) -> Choice:
    """The reference of every multi-task variant of one benchmark (``rows``: the benchmark's
    prepared records, with ``variant``)."""
    mtl = rows[rows["mode"] != "stl"]
    done = mtl[mtl["status"] == "done"]
    choice = Choice({}, None)
    stl_refs = stl_references(rows, info) if info.published is None else {}
    fixed: RefInfo | None = None
    if info.published is not None:
        fixed = RefInfo("published", dict(info.published.values), info.published.source)
        n_stl = int((rows["mode"] == "stl").sum())
        if n_stl:
            choice.notes.append(
                f"{n_stl} single-task record(s) in the folder are not used for Δm%: "
                "the benchmark's published reference is"
            )
    elif not stl_refs and not info.known:
        fixed = _stored(done, choice.notes)
    variant_proto = mtl.groupby("variant", sort=False)["protocol"].first()
    for variant, proto in variant_proto.items():
        if fixed is not None or not stl_refs:
            choice.refs[str(variant)] = fixed
        else:
            choice.refs[str(variant)] = _stl_for(str(variant), proto, stl_refs, choice)
    _summarise(choice, len(variant_proto), fixed, stl_refs, mtl.empty)
    return choice


def _summarise(
    choice: Choice,
    n_variants: int,
    fixed: RefInfo | None,
    stl_refs: dict[str, RefInfo | str],
    no_mtl: bool,
) -> None:
    """The notes on missing references, and the reference that the table shows."""
    reasons = set(choice.no_ref.values())
    if len(reasons) == 1 and len(choice.no_ref) == n_variants:
        choice.notes.append(f"no Δm%: {reasons.pop()}")
    else:
        choice.notes += [f"{variant}: no Δm% ({why})" for variant, why in choice.no_ref.items()]
    used = list({id(r): r for r in choice.refs.values() if r is not None}.values())
    first_stl = next((r for r in stl_refs.values() if isinstance(r, RefInfo)), None)
    choice.shown = used[0] if used else (fixed or first_stl)
    if len(used) > 1:
        choice.notes.append(
            f"{len(used)} different STL references are used (one per data protocol)"
        )
    if choice.shown is None and not no_mtl and not stl_refs:
        choice.notes.append(
            "no Δm%: the benchmark has no published reference and the results folder no "
            "single-task (stl) records for all its tasks"
        )


def reference_spread(ref: RefInfo, cols: list[Col], means: dict[str, float]) -> float:
    """How far the reference's own sampling error moves a Δm% computed at metric values
    ``means`` (one standard error, in Δm% points), by the delta method: with
    ``Δm = 100 / M Σ_m s_m (v_m - b_m) / b_m``, ``∂Δm / ∂b_m = -100 s_m v_m / (M b_m²)``, and
    ``b_m`` the mean of ``n`` STL seeds of sample standard deviation ``sd_m``. NaN without the
    spread (a published reference, or a single STL seed). It is common to every method:
    differences between methods do not carry it, absolute values do."""
    ranked = [c for c in cols if c.higher_is_better is not None and c.name in ref.values]
    terms = []
    for col in ranked:
        b, sd, v = ref.values[col.name], ref.std.get(col.name), means.get(col.name)
        n = ref.n.get(col.task, 0)
        if sd is None or v is None or n < 2 or not b or sd != sd:  # sd != sd: NaN
            return float("nan")
        terms.append((100.0 * v / (len(ranked) * b * b)) ** 2 * sd * sd / n)
    return float(sum(terms) ** 0.5) if terms else float("nan")


def untuned_reference(rows: pd.DataFrame) -> bool:
    """Whether the multi-task runs of a benchmark's records were tuned and its single-task
    references were not (``tuning`` tags, :mod:`mtlbench.tune`): Δm% then favours every
    method alike by the reference's handicap."""
    if "tuning" not in rows:
        return False
    stl = rows["mode"] == "stl"
    return bool(
        rows.loc[~stl, "tuning"].notna().any()
        and rows.loc[stl, "tuning"].isna().all()
        and stl.any()
    )


def reference_caveats(board: Board, rows: pd.DataFrame) -> str:
    """What a reader of an STL reference's Δm% should know: its own uncertainty in Δm% points
    at each method's means (:func:`reference_spread`), and whether it was tuned like the
    methods (:func:`untuned_reference`); ``rows``: the benchmark's records frame."""
    if board.reference is None:
        return ""
    methods = board.table[board.table["role"] == "method"]
    spreads = [
        reference_spread(
            board.reference, board.metrics, {c.name: r.get(c.name) for c in board.metrics}
        )
        for _, r in methods.iterrows()
    ]
    spreads = [x for x in spreads if x == x]
    text = ""
    if spreads:
        low, high = f"{min(spreads):.2g}", f"{max(spreads):.2g}"
        text += (
            f" The reference's own spread over its seeds moves every method's Δm% alike by "
            f"±{low if low == high else f'{low}-{high}'} points (one standard error, delta "
            "method): "
            "absolute Δm% values carry it, differences between methods do not."
        )
    if untuned_reference(rows):
        text += (
            " **The reference was not tuned** while the methods were: every Δm% carries the "
            'reference\'s handicap (docs/tuning.md, "The references are tuned like every method").'
        )
    return text


def stl_runs(rows: pd.DataFrame, trials: dict[str, list[str]]) -> str:
    """Per task, the single-task runs a reference averages and, where the references were tuned
    (issue 21), the configuration their tuning stage selected on validation data: ``class1: 20
    runs (seeds 0-19), tuned: lr 0.0016``, after one phrase on the tuning budget. The
    trial ids are listed up to 3 per task (more are in the records and the per-run table);
    ``rows``: the benchmark's records frame, ``trials``: the reference's trial ids per task."""
    stl = rows[rows["trial_id"].isin([t for ids in trials.values() for t in ids])]
    tags = stl["tuning"].dropna() if "tuning" in stl else pd.Series(dtype=object)
    parts = []
    for task, ids in trials.items():
        runs = stl[stl["task"] == task]
        seeds = sorted(int(s) for s in runs["seed"].dropna())
        consecutive = len(seeds) > 3 and seeds == list(range(seeds[0], seeds[-1] + 1))
        span = f"{seeds[0]}-{seeds[-1]}" if consecutive else ", ".join(map(str, seeds))
        text = f"{task}: {len(ids)} run{'s' if len(ids) != 1 else ''} (seeds {span})"
        chosen = tags[runs.index.intersection(tags.index)].unique()
        if len(chosen) == 1:
            selected = sorted((json.loads(chosen[0]).get("selected") or {}).items())
            text += ", tuned: " + ", ".join(
                f"{k.rpartition('.')[2]} {fmt_setting(v)}" for k, v in selected
            )
        parts.append(text + (": " + ", ".join(ids) if len(ids) <= 3 else ""))
    if not len(tags):
        return "; ".join(parts)
    tag = json.loads(tags.iloc[0])
    widen = ", one widening round where a selection sat at an edge" if tag.get("widen") else ""
    return (
        f"(tuned on validation data like the methods: budget {tag.get('budget')} x "
        f"{len(tag.get('seeds') or [0])} seed(s), {tag.get('sampler')}, on {tag.get('metric')}"
        f"{widen}) " + "; ".join(parts)
    )
