"""Several results folders in one report, when they are the same comparison.

``mtlbench report results/multimnist results/mine`` renders one leaderboard per benchmark
from the records of every folder: Δm%, intervals, tests and ranks include every method. Before
the folders are merged, those that share a benchmark must agree on what makes their numbers
comparable (:func:`comparison`): the benchmark's version (the mtlbench release that ran the
records: the benchmarks ship with it) and metrics, the data protocol
(:func:`mtlbench.references.data_key`), the selection rule, and the tuning (budget, sampler,
metric, tuning seeds, sampler seed) and seeding plan of the multi-task runs. Otherwise the
report is refused, naming the keys that differ (:func:`check`).

A folder written by a sweep that extends a leaderboard (:mod:`mtlbench.extends`) reads its
single-task references from its base: when the base is not among the folders given, its
single-task records join the report (:func:`read_folders`).

One folder given alone, extending nothing, is read as before (:func:`~.load.read_results`: a
folder of folders, such as ``results/``, is one set of records).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mtlbench.extends import read_link
from mtlbench.records import REPLICATE_KEYS
from mtlbench.references import data_key
from mtlbench.registry import ConfigError
from mtlbench.report.load import Results, combine, read_results

TUNE_KEYS = ("budget", "sampler", "metric", "seeds", "seed")
UNTUNED = "untuned"


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def comparison(records: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    """Per comparison key, the values (JSON) the records of one benchmark hold: ``benchmark.
    version``, ``protocol.<key>`` of the data protocol and ``protocol.selection`` (every
    record); ``benchmark.metrics`` (multi-task records); ``tune.<key>`` and ``seeding`` (the
    multi-task runs that are not tuning trials; ``untuned`` only where none was tuned)."""
    out: dict[str, set[str]] = defaultdict(set)
    for rec in records:
        cfg = rec.get("config") or {}
        protocol = {k: v for k, v in (cfg.get("protocol") or {}).items() if k not in REPLICATE_KEYS}
        for key, value in json.loads(data_key(protocol)).items():
            out[f"protocol.{key}"].add(_text(value))
        out["protocol.selection"].add(_text(protocol.get("selection")))
        version = (rec.get("environment") or {}).get("mtlbench")
        out["benchmark.version"].add(f"mtlbench {version or '(not recorded)'}")
        if cfg.get("mode") == "stl":
            continue
        metrics = sorted(
            f"{m.get('name')}{'↑' if m.get('higher_is_better') else '↓'}"
            for m in rec.get("metric_info") or []
        )
        out["benchmark.metrics"].add(", ".join(metrics))
        if cfg.get("stage") == "tune":
            continue
        tag = cfg.get("tuning") if isinstance(cfg.get("tuning"), dict) else None
        for key in TUNE_KEYS:
            out[f"tune.{key}"].add(_text(tag.get(key)) if tag else UNTUNED)
        out["seeding"].add(_text(cfg.get("seeding")) if cfg.get("seeding") else "fixed seeds")
    for key in [k for k in out if k.startswith("tune.")]:
        if len(out[key]) > 1:
            out[key].discard(UNTUNED)  # methods the base leaves untuned beside tuned ones
    return dict(out)


def _show(values: set[str] | None) -> str:
    return "/".join(sorted(values)) if values else "(absent)"


def differences(first: Mapping[str, set[str]], other: Mapping[str, set[str]]) -> list[str]:
    """The keys two :func:`comparison` results disagree on, as ``key (a vs b)``. A protocol key
    one lacks differs; a multi-task key (metrics, tuning) is compared where both have one."""
    out = []
    for key in sorted(set(first) | set(other)):
        if not key.startswith("protocol.") and (key not in first or key not in other):
            continue
        if first.get(key) != other.get(key):
            out.append(f"{key} ({_show(first.get(key))} vs {_show(other.get(key))})")
    return out


def check(parts: Sequence[Results]) -> None:
    """Raise :class:`ConfigError` (one line) unless the folders that share a benchmark are the
    same comparison on it (:func:`comparison`), naming every key that differs."""
    problems = []
    benches = sorted({b for part in parts for b in part.records})
    for bench in benches:
        holders = [p for p in parts if p.records.get(bench)]
        first = holders[0]
        mine = comparison(first.records[bench])
        for other in holders[1:]:
            found = differences(mine, comparison(other.records[bench]))
            if found:
                problems.append(
                    f"{bench}: {other.label} differs from {first.label} in {', '.join(found)}"
                )
    if problems:
        raise ConfigError(
            "the results folders are not the same comparison: "
            + "; ".join(problems)
            + ". Report them apart, or run the method with the leaderboard's settings: "
            "mtlbench sweep SPEC --only METHOD --results FOLDER (docs/tuning.md)"
        )


def _references_of(base: Path, folder: Path) -> Results:
    """The single-task records of ``base``, the leaderboard ``folder`` extends."""
    if not base.is_dir():
        raise ConfigError(
            f"{folder} extends {base}, which does not exist: its single-task references are "
            "there (give the base's folder, or check it out)"
        )
    part = read_results(base)
    part.frame = part.frame[part.frame["mode"] == "stl"].reset_index(drop=True)
    part.records = {
        bench: [r for r in recs if (r.get("config") or {}).get("mode") == "stl"]
        for bench, recs in part.records.items()
    }
    part.bench_table, part.bench_notes, part.tuning_runs = None, [], 0
    part.origins = [f"the single-task references of `{folder}` come from its base, `{base}`"]
    return part


def read_folders(folders: Sequence[Path]) -> Results:
    """The records of ``folders`` as one :class:`Results`: each folder read on its own, the
    base of a folder that extends a leaderboard added for its references, the comparison
    checked (:func:`check`), then combined (:func:`~.load.combine`)."""
    folders = [Path(f) for f in folders]
    given = {f.resolve() for f in folders}
    parts = [read_results(f) for f in folders]
    for folder in folders:
        link = read_link(folder)
        if link is not None and link.results.resolve() not in given:
            given.add(link.results.resolve())
            parts.append(_references_of(link.results, folder))
    if len(parts) == 1:
        return parts[0]
    check(parts)
    return combine(parts)
