"""The per-benchmark experiment defaults of the methods' reference codes, kept as data in
``benchmark_defaults.yaml`` beside the methods (with their provenance) instead of in the maths
files; each method reads its table into its public ``benchmark_defaults`` class attribute."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

TABLE = Path(__file__).with_name("benchmark_defaults.yaml")


@lru_cache(maxsize=1)
def _table() -> dict[str, dict[str, dict[str, Any]]]:
    with TABLE.open(encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def benchmark_defaults(method: str) -> dict[str, dict[str, Any]]:
    """``{benchmark: {hyper-parameter: value, "protocol": {...}}}`` of ``method`` (empty when the
    table has no entry for it); a fresh copy, so that callers cannot edit the table."""
    return {bench: _copy(settings) for bench, settings in _table().get(method, {}).items()}


def _copy(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: dict(v) if isinstance(v, dict) else v for k, v in settings.items()}
