"""What the registries hold, without importing them: a cached manifest of every method and
benchmark (name, module, cost class, needs, summary, paper, docstring; tasks and metrics), for
the commands that only describe them (``mtlbench list``).

The manifest is built by importing each *source*, a module that registers methods or
benchmarks when imported (the built-in packages :data:`BUILTIN_SOURCES`; a plug-in's module is
one more source, see :func:`sources`), and reading the registries. It is stored, per source,
with a digest of every file of ``mtlbench`` and of the source that the import had loaded, and
the listing of the source package's folders (a new module there is a change too). A later call
re-hashes those files (milliseconds) and reuses a source's entry when nothing changed; when
something did, it imports that source again and rewrites the entry. So an edited method is
never listed from a stale cache, and no implementation declares anything twice.

Where the cache lives: ``$MTLBENCH_CACHE``, else ``$XDG_CACHE_HOME/mtlbench``, else
``~/.cache/mtlbench``; one file per checkout (its name carries a digest of the package's
folder, so that two worktrees do not overwrite each other's). Where that folder cannot be
written, the manifest is built in memory on every call: slower (the imports), never wrong.

Entries registered in this process without being part of a source (a script that registers
its own method before calling :func:`mtlbench.cli.main`) are listed as well, read from the live
registries, when those are already imported. See docs/design.md ("A CLI that answers at once").
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mtlbench.plugins import Plugin, PluginError, registration_fix
from mtlbench.plugins import load as load_plugins
from mtlbench.registry import RegistrationError

FORMAT = 1  # bump when the stored fields change: older files are then rebuilt
BUILTIN_SOURCES = ("mtlbench.methods", "mtlbench.datasets")


@dataclass(frozen=True)
class MethodInfo:
    """What ``mtlbench list methods`` shows of a method (the class attributes of
    :class:`mtlbench.method.Method` that describe it)."""

    name: str
    module: str
    needs: str
    cost: str
    summary: str
    paper: str
    doc: str


@dataclass(frozen=True)
class BenchmarkInfo:
    """What ``mtlbench list benchmarks`` shows of a benchmark."""

    name: str
    module: str
    tasks: tuple[str, ...]
    metrics: tuple[str, ...]
    description: str
    paper: str


@dataclass
class Manifest:
    """Every method and benchmark of the given sources, by name."""

    methods: dict[str, MethodInfo] = field(default_factory=dict)
    benchmarks: dict[str, BenchmarkInfo] = field(default_factory=dict)

    def method_names(self) -> list[str]:
        return sorted(self.methods)

    def benchmark_names(self) -> list[str]:
        return sorted(self.benchmarks)


def sources(plugins: Sequence[Plugin] = ()) -> list[str]:
    """The sources whose import registers methods and benchmarks: the built-in packages, then
    ``plugins`` (:class:`~mtlbench.plugins.Plugin`: the installed ones and ``--plugin``), each
    by its module name or file; each gets its own cached entry, checked against its files."""
    return [*BUILTIN_SOURCES, *(p.source for p in plugins if p.source not in BUILTIN_SOURCES)]


def cache_dir() -> Path:
    """``$MTLBENCH_CACHE``, else ``$XDG_CACHE_HOME/mtlbench``, else ``~/.cache/mtlbench``."""
    if os.environ.get("MTLBENCH_CACHE"):
        return Path(os.environ["MTLBENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mtlbench"


def cache_path() -> Path:
    """This checkout's manifest file in :func:`cache_dir`."""
    root = str(Path(__file__).resolve().parent)
    return cache_dir() / f"manifest-{hashlib.sha256(root.encode()).hexdigest()[:16]}.json"


def load(plugins: Sequence[Plugin] = (), path: Path | None = None) -> Manifest:
    """The manifest of :func:`sources` (``plugins`` included), from the cache where every
    source's files are unchanged; stale or missing sources are imported and the cache rewritten
    (when it can be). ``path``: the cache file (default :func:`cache_path`). A plug-in that
    lists a name an earlier source has is a :class:`~mtlbench.plugins.PluginError`."""
    path = cache_path() if path is None else path
    stored = _read(path)
    by_source = {p.source: p for p in plugins}
    entries = {}
    for source in sources(plugins):
        entry = stored.get(source)
        if entry is None or not _fresh(entry):
            entry = build_entry(source, by_source.get(source))
        entries[source] = entry
    manifest = Manifest()
    for source, entry in entries.items():
        for info in entry["methods"]:
            _add(manifest.methods, MethodInfo(**info), by_source.get(source), "method")
        for info in entry["benchmarks"]:
            info = {**info, "tasks": tuple(info["tasks"]), "metrics": tuple(info["metrics"])}
            _add(manifest.benchmarks, BenchmarkInfo(**info), by_source.get(source), "benchmark")
    if any(stored.get(source) != entry for source, entry in entries.items()):
        _write(path, {**stored, **entries})
    _add_live(manifest)
    return manifest


def _add(target: dict[str, Any], info: Any, plugin: Plugin | None, kind: str) -> None:
    """``info`` under its name; a plug-in's name that another module already lists clashes."""
    first = target.setdefault(info.name, info)
    if plugin is not None and first.module != info.module:
        clash = RegistrationError(kind, info.name, "is already registered", first.module)
        raise PluginError(f"plugin {plugin.label}: {registration_fix(clash)}")


# -- building ---------------------------------------------------------------------------------
def build_entry(source: str, plugin: Plugin | None = None) -> dict[str, Any]:
    """Import ``source`` (through the plug-in loader for a ``plugin``) and describe what it
    registered, with the digests that tell later whether the description still holds."""
    # The registries import torch: loaded here, only when the cache is stale (the point of it).
    from mtlbench.benchmark import BENCHMARKS
    from mtlbench.method import METHODS

    before = (set(METHODS.names()), set(BENCHMARKS.names()))
    if plugin is None:
        module = importlib.import_module(source)
    else:
        load_plugins([plugin])
        module = sys.modules[plugin.module]
        # a plug-in's entries: those of its own top-level package (its file), never built-ins
        source = plugin.module if plugin.path else plugin.module.partition(".")[0]
    methods = _registered(METHODS, source, before[0], plugin is not None)
    benchmarks = _registered(BENCHMARKS, source, before[1], plugin is not None)
    return {
        "methods": [asdict(_method_info(n, METHODS.get(n))) for n in methods],
        "benchmarks": [asdict(_benchmark_info(n, BENCHMARKS.get(n))) for n in benchmarks],
        "files": {str(p): _digest(p) for p in _loaded_files(source)},
        "listing": _listing(module),
    }


def _registered(registry: Any, source: str, before: set[str], own_only: bool) -> list[str]:
    """Names whose factory was defined in ``source`` (or a submodule), or (unless
    ``own_only``) that the import of ``source`` added."""
    return [
        n
        for n in registry.names()
        if _within(getattr(registry.get(n), "__module__", ""), source)
        or (n not in before and not own_only)
    ]


def _within(module: str, source: str) -> bool:
    return module == source or module.startswith(source + ".")


def _method_info(name: str, cls: Any) -> MethodInfo:
    return MethodInfo(
        name=name,
        module=cls.__module__,
        needs=str(cls.needs),
        cost=str(cls.cost),
        summary=cls.summary,
        paper=cls.paper,
        doc=inspect.cleandoc(cls.__doc__ or ""),
    )


def _benchmark_info(name: str, cls: Any) -> BenchmarkInfo:
    return BenchmarkInfo(
        name=name,
        module=cls.__module__,
        tasks=tuple(cls.tasks),
        metrics=tuple(m.name for m in cls.metrics),
        description=cls.description,
        paper=cls.paper,
    )


def _loaded_files(source: str) -> list[Path]:
    """The source files of every loaded module of ``mtlbench`` and of ``source``'s top-level
    package: what the source's registrations can depend on (a superset is only safe)."""
    tops = {"mtlbench", source.partition(".")[0]}
    files = set()
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name.partition(".")[0] in tops and path and path.endswith(".py"):
            files.add(Path(path).resolve())
    return sorted(files)


def _listing(module: Any) -> dict[str, list[str]]:
    """The ``*.py`` files of each folder of a package (empty for a plain module)."""
    return {
        str(Path(folder).resolve()): sorted(p.name for p in Path(folder).glob("*.py"))
        for folder in getattr(module, "__path__", [])
    }


def _digest(path: Path) -> str | None:
    try:
        return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    except OSError:
        return None


def _fresh(entry: dict[str, Any]) -> bool:
    """Whether every file the entry was built from is unchanged and no module was added to or
    removed from its package folders."""
    if not isinstance(entry, dict) or not {"files", "listing", "methods", "benchmarks"} <= set(
        entry
    ):
        return False
    files, listing = entry["files"], entry["listing"]
    if not files or any(_digest(Path(p)) != d for p, d in files.items()):
        return False
    return all(
        sorted(p.name for p in Path(folder).glob("*.py")) == names
        for folder, names in listing.items()
    )


def _add_live(manifest: Manifest) -> None:
    """Entries registered in this process that no source holds (only when the registries are
    already imported: this never imports them)."""
    for module_name, attribute, target, describe in (
        ("mtlbench.method", "METHODS", manifest.methods, _method_info),
        ("mtlbench.benchmark", "BENCHMARKS", manifest.benchmarks, _benchmark_info),
    ):
        registry = getattr(sys.modules.get(module_name), attribute, None)
        for name in registry.names() if registry is not None else ():
            if name not in target:
                target[name] = describe(name, registry.get(name))


# -- storage ----------------------------------------------------------------------------------
def _read(path: Path) -> dict[str, Any]:
    """The stored entries by source; empty when the file is missing, unreadable or of another
    format."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return {}
    entries = data.get("sources")
    return entries if isinstance(entries, dict) else {}


def _write(path: Path, entries: dict[str, Any]) -> None:
    """Store the entries atomically; silently nothing where the folder is not writable."""
    text = json.dumps({"format": FORMAT, "sources": entries}, indent=1)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=".manifest-", suffix=".tmp", delete=False
        ) as handle:
            handle.write(text)
        try:
            os.replace(handle.name, path)
        except OSError:
            os.unlink(handle.name)
            raise
