"""Plug-ins: methods and benchmarks from outside this repository.

A plug-in is a module whose import registers methods or benchmarks (with
``@mtlbench.method.register`` / ``@mtlbench.benchmark.register``). Two kinds:

* **installed**: a distribution that declares an entry point in the group ``mtlbench.methods``
  or ``mtlbench.benchmarks`` (``NAME = "pkg.module"``, or ``"pkg.module:attr"``: the module is
  imported and must have ``attr``). They are found with no configuration, the first time a
  registry is read (:func:`load_installed`, called by :func:`mtlbench.method.names` and
  friends), in every process: the command line, a spawned pool worker, a Slurm job;
* **given**: ``--plugin MODULE_OR_FILE`` or a spec's ``plugins:`` list. A module name is
  imported as is; a file (``./my_method.py``) is imported under a stable name derived from
  its absolute path (:func:`parse`), so that every process that imports the same file gives
  its classes the same module, and pickles of them load there. The sweep hands the given
  plug-ins to its executor in the typed ``Batch`` (:mod:`mtlbench.run.base`).

Every failure (an import error, a name already registered by a built-in or another plug-in,
a registered class that is not a ``Method`` / ``Benchmark`` or lacks what one needs) is a
:class:`PluginError`: one line naming the plug-in and the fix. :func:`provenance` says, for
a run record, which code ran: module, distribution and version, and a sha256 of its files.
This module imports no torch (``mtlbench list`` reads it).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from mtlbench.registry import ConfigError, RegistrationError

ENTRY_GROUPS = ("mtlbench.methods", "mtlbench.benchmarks")
# The built-in packages: imported before any plug-in, so that a clash is the plug-in's.
BUILTINS = ("mtlbench.methods", "mtlbench.datasets")
FILE_PREFIX = "mtlbench_plugin_"  # the module names of file plug-ins
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class PluginError(ConfigError):
    """A plug-in that cannot be used; the message is one line with the fix."""


class PluginInfo(TypedDict):
    """What a run record says of one loaded plug-in (``plugins`` in :mod:`mtlbench.records`):
    the module imported, the file or module name it was given as, the entry point that found
    it (None when given), its distribution and version (None when not installed), and the
    sha256 of its source files (``files`` of them: its top-level package, or the file)."""

    module: str
    source: str
    entry_point: str | None
    distribution: str | None
    version: str | None
    sha256: str
    files: int


@dataclass(frozen=True)
class Plugin:
    """One plug-in: the module to import, and where it came from."""

    module: str
    path: str | None = None  # a file plug-in's absolute path
    attr: str | None = None  # an entry point's ``module:attr``
    entry_point: str | None = None  # "group:name" of an installed plug-in
    distribution: str | None = None
    version: str | None = None

    @property
    def source(self) -> str:
        """The file or module name (what the manifest keys its entry by)."""
        return self.path or self.module

    @property
    def label(self) -> str:
        """How error messages name it."""
        if self.entry_point:
            return f"{self.module} (entry point {self.entry_point} of {self.distribution})"
        return self.source


def file_module(path: Path) -> str:
    """The stable module name of a file plug-in: its stem and a digest of its absolute path."""
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    return f"{FILE_PREFIX}{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{digest}"


def parse(ref: str, base: Path | None = None) -> Plugin:
    """A ``--plugin`` / ``plugins:`` value: a ``.py`` file (a path with ``/`` or ending in
    ``.py``, relative to ``base``, default the current folder) or a module name."""
    ref = str(ref).strip()
    if ref.endswith(".py") or "/" in ref:
        path = (Path(base or ".") / Path(ref).expanduser()).resolve()
        if not path.is_file():
            raise PluginError(
                f"plugin file {ref} not found (looked at {path}); give an existing .py file "
                "or an importable module name"
            )
        return Plugin(file_module(path), str(path))
    module, _, attr = ref.partition(":")
    if not _MODULE_NAME.fullmatch(module) or (attr and not attr.isidentifier()):
        raise PluginError(
            f"plugin {ref!r} is neither a module name (my_pkg.methods) nor a .py file path"
        )
    return Plugin(module, attr=attr or None)


def parse_all(refs: Iterable[str], base: Path | None = None) -> tuple[Plugin, ...]:
    """:func:`parse` of each, then :func:`load` of them all (the command line's ``--plugin``)."""
    plugins = tuple(parse(r, base) for r in refs)
    load(plugins)
    return plugins


@functools.cache
def installed() -> tuple[Plugin, ...]:
    """The plug-ins that installed distributions declare (entry points of
    :data:`ENTRY_GROUPS`), one per module, in a stable order. Read once per process."""
    from importlib.metadata import entry_points

    found: dict[str, Plugin] = {}
    for group in ENTRY_GROUPS:
        for point in sorted(entry_points(group=group), key=lambda p: p.name):
            dist = getattr(point, "dist", None)
            found.setdefault(
                point.module,
                Plugin(
                    point.module,
                    attr=point.attr,
                    entry_point=f"{group}:{point.name}",
                    distribution=dist.name if dist is not None else None,
                    version=dist.version if dist is not None else None,
                ),
            )
    return tuple(found.values())


def active(given: Sequence[Plugin] = ()) -> tuple[Plugin, ...]:
    """The installed plug-ins, then ``given`` ones not among them."""
    seen = {p.module for p in installed()}
    return (*installed(), *(p for p in given if p.module not in seen))


def load_installed() -> None:
    """Import the installed plug-ins (a no-op once they are imported)."""
    load(installed())


def load(plugins: Iterable[Plugin]) -> None:
    """Import each plug-in not imported yet; raises :class:`PluginError` (one line) when one
    fails to import, registers a taken name or a class that is not what its registry holds."""
    for plugin in plugins:
        if plugin.module in sys.modules:
            continue
        for builtin in BUILTINS:
            importlib.import_module(builtin)
        try:
            module = _import(plugin)
        except RegistrationError as error:
            raise PluginError(f"plugin {plugin.label}: {registration_fix(error)}") from None
        except PluginError:
            raise
        except Exception as error:  # noqa: BLE001 - any import failure is the plug-in's
            raise PluginError(_import_failure(plugin, error)) from None
        if plugin.attr and not hasattr(module, plugin.attr):
            raise PluginError(
                f"plugin {plugin.label}: module {plugin.module} has no attribute "
                f"{plugin.attr!r}; fix the entry point's value (module or module:attr)"
            )


def _import(plugin: Plugin) -> Any:
    if plugin.path is None:
        return importlib.import_module(plugin.module)
    spec = importlib.util.spec_from_file_location(plugin.module, plugin.path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin {plugin.path}: not a Python file that can be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[plugin.module] = module  # before it runs: dataclasses and pickle look it up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(plugin.module, None)
        raise
    return module


def registration_fix(error: RegistrationError) -> str:
    """The message of a refused registration, with its fix (rename, or drop a plug-in)."""
    if error.existing is None:
        return str(error)
    owner = error.existing
    if owner == "mtlbench" or owner.startswith("mtlbench."):
        return (
            f"{error.kind} {error.name!r} clashes with the built-in one ({owner}); register it "
            "under another name"
        )
    return (
        f"{error.kind} {error.name!r} clashes with the one of the plug-in {owner}; rename one "
        "of them or leave one plug-in out"
    )


def _import_failure(plugin: Plugin, error: BaseException) -> str:
    missing = getattr(error, "name", None)
    if isinstance(error, ModuleNotFoundError) and missing and plugin.module.startswith(missing):
        return (
            f"plugin {plugin.label}: no module named {plugin.module!r} on this Python's path; "
            "install its package (pip install -e FOLDER) or give its file (--plugin ./file.py)"
        )
    what = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}"
    fix = f"fix {plugin.path}" if plugin.path else f"`python -c 'import {plugin.module}'` shows it"
    if plugin.distribution:
        fix += f", or uninstall it (pip uninstall {plugin.distribution})"
    return f"plugin {plugin.label} failed to import: {what.rstrip(': ')}; {fix}"


# -- provenance -------------------------------------------------------------------------------
def _files(plugin: Plugin) -> list[tuple[str, Path]]:
    """(name, path) of the plug-in's source files: the file, or every ``.py`` file of its
    top-level package (a plain module: its file)."""
    if plugin.path is not None:
        return [(Path(plugin.path).name, Path(plugin.path))]
    top = sys.modules.get(plugin.module.partition(".")[0])
    folders = list(getattr(top, "__path__", []) or [])
    if folders:
        return sorted(
            (str(p.relative_to(folder)), p)
            for folder in map(Path, folders)
            for p in folder.rglob("*.py")
            if "__pycache__" not in p.parts
        )
    file = getattr(top, "__file__", None)
    return [(Path(file).name, Path(file))] if file else []


def _distribution(plugin: Plugin) -> tuple[str | None, str | None]:
    if plugin.distribution or plugin.path is not None:
        return plugin.distribution, plugin.version
    from importlib import metadata

    names = metadata.packages_distributions().get(plugin.module.partition(".")[0]) or []
    if not names:
        return None, None
    try:
        return names[0], metadata.version(names[0])
    except metadata.PackageNotFoundError:
        return names[0], None


def provenance(plugins: Sequence[Plugin]) -> list[PluginInfo]:
    """What a record says of each plug-in (:class:`PluginInfo`)."""
    out = []
    for plugin in plugins:
        digest = hashlib.sha256()
        files = _files(plugin)
        for name, path in files:
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
        dist, version = _distribution(plugin)
        out.append(
            PluginInfo(
                module=plugin.module,
                source=plugin.source,
                entry_point=plugin.entry_point,
                distribution=dist,
                version=version,
                sha256=digest.hexdigest(),
                files=len(files),
            )
        )
    return out


def owner(module: str, plugins: Sequence[Plugin]) -> Plugin | None:
    """The plug-in whose code defines ``module`` (a registered class's ``__module__``): the
    plug-in of that very module, else the first of its top-level package."""
    for plugin in plugins:
        if plugin.module == module:
            return plugin
    for plugin in plugins:
        top = plugin.module if plugin.path else plugin.module.partition(".")[0]
        if module == top or module.startswith(top + "."):
            return plugin
    return None


def describe(info: PluginInfo) -> str:
    """One line: ``module (distribution version, sha256 0123456789ab)``."""
    where = f"{info['distribution']} {info['version']}" if info["distribution"] else info["source"]
    return f"{info['module']} ({where}, sha256 {info['sha256'][:12]})"


def spec_plugins(
    raw: dict[str, Any], path: Path | None, problem: Callable[[str, int | None], None]
) -> tuple[Plugin, ...]:
    """A sweep spec's ``plugins:`` (module names, or ``.py`` files relative to the spec's
    folder), imported now, so that the names they register validate; each problem is given to
    ``problem`` with its line in the spec."""
    from mtlbench.spec_yaml import item_line, line_of

    value = raw.get("plugins")
    if value is None:
        return ()
    if not isinstance(value, list):
        problem("plugins must be a list of module names or .py files", line_of(raw, "plugins"))
        return ()
    out = []
    for index, ref in enumerate(value):
        try:
            plugin = parse(str(ref), path.parent if path else None)
            load([plugin])
            out.append(plugin)
        except ConfigError as error:
            problem(str(error), item_line(value, index) or line_of(raw, "plugins"))
    return tuple(out)
