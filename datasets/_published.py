"""Published single-task references, kept as data beside their source in
``datasets/references/<benchmark>.json`` (``values``, ``source`` and ``details``: repository,
commit, file, units)."""

from __future__ import annotations

import json
from importlib import resources

from mtlbench.benchmark import Reference


def published_reference(name: str) -> Reference:
    """The single-task reference shipped in ``datasets/references/<name>.json``."""
    text = resources.files("mtlbench.datasets").joinpath("references", f"{name}.json")
    data = json.loads(text.read_text(encoding="utf-8"))
    return Reference(
        values={k: float(v) for k, v in data["values"].items()},
        source=data["source"],
        details=data.get("details", {}),
    )
