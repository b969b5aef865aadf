"""A sweep that extends a committed leaderboard: new methods under exactly its comparison.

Two spellings of one thing (docs/tuning.md, "Your method against a committed leaderboard")::

    mtlbench sweep sweeps/leaderboard_multimnist.yaml --only mine --results results/mine

or a spec of its own::

    extends: ../sweeps/leaderboard_multimnist.yaml   # relative to this spec's folder
    methods: [mine]
    results: results/mine

Either runs the named methods with the base spec's protocol, tuning block (budget, sampler,
metric, tuning seeds, sampler seed), test seeds (or seeding plan) and benchmarks' settings
(:func:`merge`), into a results folder of their own. The base's single-task references are not
run again: the new folder names its base in a sidecar file (:data:`SIDECAR`, written when the
sweep runs: :func:`claim`), and the trainer, the tuning scorer and the report read the
references from the base's records (:func:`reference_roots`). A spec that extends another gives
only :data:`OVERRIDABLE` keys; the keys that define the comparison (:data:`COMPARISON`) are
refused, each with its line (:func:`split`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtlbench.records import atomic_write_json, record_files
from mtlbench.registry import ConfigError
from mtlbench.spec_yaml import item_line, line_of, strip_lines

# Keys a spec that extends another may give: what runs, where it goes, how it is executed.
OVERRIDABLE = (
    "name",
    "description",
    "methods",
    "results",
    "report",
    "report_formats",
    "executor",
    "plugins",
    "data_root",
)
# Keys that define the comparison: the base's, always (test seeds or seeding plan, the tune
# block, every benchmark's protocol, grid, references, tuning and seeds).
COMPARISON = ("seeds", "tune", "benchmarks")
SIDECAR = ".mtlbench-base.json"  # in the new results folder; hidden: not a record
SCHEMA = "mtlbench.base/1"
STL = "stl"  # the single-task references' method name (mtlbench.trial.STL)
Report = Callable[[str, "int | None"], None]  # a problem and its line


@dataclass(frozen=True)
class BaseLink:
    """What a results folder of a derived sweep records about its base: the base spec, the
    base's results folder (paths as seen from the current folder), and the comparison settings
    of the base spec with their digest (a re-run into the folder must have the same)."""

    spec: Path
    results: Path
    comparison: dict[str, Any]

    @property
    def digest(self) -> str:
        text = json.dumps(self.comparison, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def of(cls, spec: Path, results: Path, base_raw: Any) -> BaseLink:
        """The link to the base spec ``spec`` (its parsed results folder and raw mapping)."""
        return cls(Path(spec), Path(results), comparison(base_raw))

    def describe(self) -> str:
        return f"{self.spec} (results {self.results}, comparison {self.digest})"


def comparison(base_raw: Any) -> dict[str, Any]:
    """The comparison keys of a spec mapping (:data:`COMPARISON`), benchmark by benchmark, with
    the top-level ``seeds`` and ``tune`` they default to."""
    raw = strip_lines(base_raw) if isinstance(base_raw, dict) else {}
    benches = raw.get("benchmarks") if isinstance(raw.get("benchmarks"), dict) else {}
    keys = ("protocol", "grid", "stl", "tune", "seeds")
    return {
        name: {
            "seeds": (spec or {}).get("seeds", raw.get("seeds", [0])),
            "tune": (spec or {}).get("tune", raw.get("tune")),
            **{k: (spec or {}).get(k) for k in keys if k not in ("seeds", "tune")},
        }
        for name, spec in benches.items()
    }


# ---------------------------------------------------------------------------------------------
# The spec: which keys it may give, and the spec it stands for
# ---------------------------------------------------------------------------------------------


def _names(methods: Any) -> list[str]:
    return [str(m) for m in methods if not str(m).startswith("__")]


def split(
    raw: dict[str, Any], path: Path, only: Sequence[str] | None, problem: Report
) -> tuple[Path, dict[str, Any]]:
    """The base spec of ``raw`` (read from ``path``) and the keys it overrides: its own
    ``extends`` (relative to its folder), else ``path`` itself with ``only`` (``--only``). Each
    refused, unknown or missing key is a ``problem`` with its line."""
    if "extends" not in raw:
        return path, {"methods": list(only or [])}
    target, line = raw.get("extends"), line_of(raw, "extends")
    base = path.parent / str(target)
    if not isinstance(target, str) or not target:
        problem("extends must be the path of the spec to extend", line)
    elif not base.is_file():
        problem(f"extends: no spec at {base} (the path is relative to {path.parent})", line)
    allowed = ", ".join(OVERRIDABLE)
    for key in raw:
        if key in COMPARISON:
            problem(
                f"{key!r} defines the comparison with the base spec {target} and cannot be "
                f"overridden here (a spec that extends another may give: {allowed}); for "
                "another comparison, write a spec of its own",
                line_of(raw, key),
            )
        elif key not in (*OVERRIDABLE, "extends") and not key.startswith("__"):
            problem(
                f"unknown key {key!r} (a spec that extends another gives: {allowed})",
                line_of(raw, key),
            )
    overrides = {k: raw[k] for k in OVERRIDABLE if k in raw}
    if only is not None:
        overrides["methods"] = list(only)
    elif not isinstance(raw.get("methods"), (list, dict)) or not _names(raw["methods"]):
        problem("methods: name the methods to run against the base (a list or a mapping)", line)
    return base, overrides


def check_methods(overrides: dict[str, Any], valid: Sequence[str], problem: Report) -> None:
    """Each method to run is a registered method, and not the references (read from the base)."""
    node = overrides.get("methods") or []
    for index, name in enumerate(_names(node)):
        line = line_of(node, name) if isinstance(node, dict) else item_line(node, index)
        if name == STL:
            problem(
                "stl: the single-task references are read from the base's records, never run again",
                line,
            )
        elif name not in valid:
            valid_text = ", ".join(sorted(valid))
            problem(f"unknown method {name!r}. Valid: {valid_text}", line)


def _settings(methods: Any, name: str) -> dict[str, Any]:
    """A method's settings in a ``methods`` node (a list gives none)."""
    own = methods.get(name) if isinstance(methods, dict) else None
    return own if isinstance(own, dict) else {}


def merge(base_raw: dict[str, Any], overrides: dict[str, Any], base_name: str) -> dict[str, Any]:
    """The spec a derived sweep parses: the base's, line numbers dropped (the base was checked
    on its own), with the overriding keys, and every benchmark running the overriding methods
    alone. A method keeps its settings from the base (that benchmark's, else the top level's)
    unless the override gives its own; the override's lines stay, so that its problems point
    at it. The base's ``results`` and ``report`` are never inherited."""
    merged = {k: v for k, v in strip_lines(base_raw).items() if k not in ("results", "report")}
    node = overrides["methods"]
    names = _names(node)
    top = merged.pop("methods", None)
    lines = {
        name: line_of(node, name) if isinstance(node, dict) else item_line(node, i)
        for i, name in enumerate(names)
    }
    benches = merged.get("benchmarks") or {}
    for bench, spec in list(benches.items()):
        spec = dict(spec or {})
        own = spec.get("methods", top)
        methods: dict[str, Any] = {
            name: {**_settings(own, name), **_settings(node, name)} for name in names
        }
        methods["__lines__"] = {k: v for k, v in lines.items() if v is not None}
        methods["__line__"] = line_of(node)
        spec["methods"] = methods
        benches[bench] = spec
    merged.update({k: v for k, v in overrides.items() if k != "methods"})
    merged["name"] = overrides.get("name") or f"{base_name}+{'+'.join(names)}"
    return merged


# ---------------------------------------------------------------------------------------------
# The new results folder: its sidecar, and where its references are read
# ---------------------------------------------------------------------------------------------


def _rel(path: Path, folder: Path) -> str:
    return os.path.relpath(Path(path).resolve(), Path(folder).resolve())


def read_link(folder: Path) -> BaseLink | None:
    """The base a results folder extends (its :data:`SIDECAR`), or None; paths as seen from the
    current folder. Raises :class:`ConfigError` for a sidecar that is not one."""
    path = Path(folder) / SIDECAR
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("schema") != SCHEMA:
            raise ValueError(f"schema {data.get('schema')!r}")
        return BaseLink(
            Path(folder) / data["spec"], Path(folder) / data["results"], data["comparison"]
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError(
            f"{path}: not a base link ({type(error).__name__}: {error}); delete it and run the "
            "sweep that extends the leaderboard again"
        ) from None


def claim(folder: Path, link: BaseLink) -> None:
    """Make ``folder`` the results folder of a sweep that extends ``link``: write the sidecar,
    or check the one there names the same base and comparison. Refuses a folder that holds
    records of another sweep (without a sidecar) or extends another base."""
    folder = Path(folder)
    found = read_link(folder)
    if found is None:
        if next(record_files(folder), None) is not None:
            raise ConfigError(
                f"{folder} holds records of a sweep that extends nothing: a sweep that extends "
                f"{link.spec} writes into a folder of its own (choose another --results)"
            )
        data = {
            "schema": SCHEMA,
            "spec": _rel(link.spec, folder),
            "results": _rel(link.results, folder),
            "digest": link.digest,
            "comparison": link.comparison,
        }
        atomic_write_json(folder / SIDECAR, data)
        return
    same_folder = found.results.resolve() == link.results.resolve()
    if not same_folder or found.digest != link.digest:
        raise ConfigError(
            f"{folder} extends {found.describe()}, not {link.describe()}: choose another "
            "--results for this comparison"
        )


def reference_roots(folder: Path) -> list[Path]:
    """The folders whose single-task records give ``folder``'s references: ``folder``, then the
    base it extends (:func:`read_link`)."""
    link = read_link(folder)
    return [Path(folder)] + ([link.results] if link is not None else [])
