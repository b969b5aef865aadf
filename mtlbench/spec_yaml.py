"""YAML that remembers lines: the sweep spec's loader, so that every problem of a spec names the
line it comes from (``mtlbench.sweep``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mtlbench.registry import ConfigError


class SpecError(ConfigError):
    """A sweep spec with problems; the message lists every one, with its line; ``problems``
    holds them, one line each (``FILE: line N: message``)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [message]


class LineLoader(yaml.SafeLoader):
    """A YAML loader that remembers the line of every mapping key and list item."""


class _Items(list):
    """A YAML list that knows the line of each of its items (``lines``)."""

    lines: list[int]


def _construct_mapping(loader: LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=deep)
    lines = {}
    for key_node, _ in node.value:
        lines[key_node.value] = key_node.start_mark.line + 1
    mapping["__lines__"] = lines  # removed again by strip_lines
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


def _construct_sequence(loader: LineLoader, node: yaml.SequenceNode, deep: bool = False) -> list:
    items = _Items(yaml.SafeLoader.construct_sequence(loader, node, deep=True))
    items.lines = [item.start_mark.line + 1 for item in node.value]
    return items


LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def strip_lines(value: Any) -> Any:
    """``value`` without the line bookkeeping of :class:`LineLoader`."""
    if isinstance(value, dict):
        return {k: strip_lines(v) for k, v in value.items() if k not in ("__lines__", "__line__")}
    if isinstance(value, list):
        return [strip_lines(v) for v in value]
    return value


def line_of(node: Any, key: str | None = None) -> int | None:
    """The line of ``key`` in a mapping node, else of the node itself (None: not from a file)."""
    if isinstance(node, dict):
        if key is not None and key in node.get("__lines__", {}):
            return node["__lines__"][key]
        return node.get("__line__")
    return None


def item_line(items: Any, index: int) -> int | None:
    """The line of item ``index`` of a YAML list (None: not from a file)."""
    lines = getattr(items, "lines", None)
    return lines[index] if lines and index < len(lines) else None


def setting_line(nodes: list[Any], key: str | None) -> int | None:
    """The line that sets ``key`` (``lr`` matches ``lr`` and ``protocol.lr``) in the first of
    ``nodes`` that has it."""
    if key is None:
        return None
    name = key.rpartition(".")[2]
    for node in nodes:
        for spelled, line in (node.get("__lines__", {}) if isinstance(node, dict) else {}).items():
            if spelled == key or spelled.rpartition(".")[2] == name:
                return line
    return None


def read_spec(path: Path) -> Any:
    """A spec file's YAML, with its lines (:class:`LineLoader`); raises :class:`ConfigError`
    when the file cannot be read and :class:`SpecError` when it is not YAML."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read sweep spec {path}: {error.strerror or error}") from None
    try:
        return yaml.load(text, Loader=LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SpecError(f"{path}:{where}: malformed YAML: {problem}") from None
