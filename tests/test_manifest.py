"""The manifest behind ``mtlbench list`` (mtlbench/manifest.py): it describes exactly what the
registries hold, it is reused while the files it was built from are unchanged, rebuilt when one
changes or a module is added, kept in memory where the cache cannot be written, and a further
source (a plug-in's module) adds its own entries."""

from __future__ import annotations

import sys

import pytest

import tiny_benchmark  # noqa: F401  (registers the "_tiny" benchmark in this process)
from mtlbench import manifest
from mtlbench.benchmark import BENCHMARKS
from mtlbench.benchmark import names as benchmark_names
from mtlbench.method import METHODS
from mtlbench.method import names as method_names
from mtlbench.plugins import Plugin

PLUGIN = '''
"""A method outside mtlbench's tree, as a plug-in would give it."""
import torch
from mtlbench.method import GramianWeighting, register


@register("_manifest_probe")
class Probe(GramianWeighting):
    """Equal weights (a test's plug-in).

    Second paragraph.
    """

    summary = "{summary}"
    paper = "nobody (2026)"

    def weights(self, gramian, losses):
        return torch.ones(len(losses), dtype=gramian.dtype)
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """An importable module ``fc_probe_plugin`` registering ``_manifest_probe``; the registry
    and ``sys.modules`` are restored afterwards."""
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "fc_probe_plugin.py").write_text(PLUGIN.format(summary="first summary"))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    yield folder / "fc_probe_plugin.py"
    sys.modules.pop("fc_probe_plugin", None)


def _forget(module: str) -> None:
    """What a new process would not have: the module and its registration."""
    sys.modules.pop(module, None)
    METHODS._entries.pop("_manifest_probe", None)


def test_the_manifest_describes_the_registries(tmp_path):
    catalog = manifest.load(path=tmp_path / "m.json")
    assert catalog.method_names() == method_names()
    assert catalog.benchmark_names() == benchmark_names()  # "_tiny" too: live in this process
    for name in method_names():
        cls, info = METHODS.get(name), catalog.methods[name]
        assert (info.cost, info.needs, info.summary, info.paper, info.module) == (
            cls.cost,
            cls.needs,
            cls.summary,
            cls.paper,
            cls.__module__,
        )
    for name in benchmark_names():
        cls, info = BENCHMARKS.get(name), catalog.benchmarks[name]
        assert info.tasks == tuple(cls.tasks)
        assert info.metrics == tuple(m.name for m in cls.metrics)
        assert (info.description, info.paper) == (cls.description, cls.paper)


def test_an_unchanged_source_is_read_from_the_cache(tmp_path, monkeypatch):
    path = tmp_path / "m.json"
    first = manifest.load(path=path)
    assert path.is_file()

    def no_import(source):
        raise AssertionError(f"{source} imported although its files did not change")

    monkeypatch.setattr(manifest, "build_entry", no_import)
    assert manifest.load(path=path) == first


def test_an_edited_or_added_file_makes_the_entry_stale(plugin, tmp_path):
    entry = manifest.build_entry("fc_probe_plugin")
    assert [m["name"] for m in entry["methods"]] == ["_manifest_probe"]
    assert str(plugin.resolve()) in entry["files"]
    assert manifest._fresh(entry)
    plugin.write_text(plugin.read_text().replace("first summary", "second summary"))
    assert not manifest._fresh(entry)

    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    sys.path.insert(0, str(tmp_path))
    try:
        entry = manifest.build_entry("pkg")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("pkg", None)
    assert manifest._fresh(entry)
    (package / "new_method.py").write_text("")
    assert not manifest._fresh(entry)  # a new module in the package: it may register a method


def test_a_plugin_source_is_listed_and_rebuilt_when_edited(plugin, tmp_path):
    path = tmp_path / "m.json"
    catalog = manifest.load([Plugin("fc_probe_plugin")], path=path)
    probe = catalog.methods["_manifest_probe"]
    assert (probe.summary, probe.cost, probe.needs) == ("first summary", "O(K)", "gramian")
    assert probe.doc == "Equal weights (a test's plug-in).\n\nSecond paragraph."
    _forget("fc_probe_plugin")
    plugin.write_text(plugin.read_text().replace("first summary", "second summary"))
    catalog = manifest.load([Plugin("fc_probe_plugin")], path=path)
    assert catalog.methods["_manifest_probe"].summary == "second summary"
    assert set(catalog.methods) == {*method_names(), "_manifest_probe"}


def test_an_unwritable_cache_falls_back_to_memory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    catalog = manifest.load(path=blocker / "m.json")  # its folder cannot be created
    assert catalog.method_names() == method_names()


def test_a_corrupt_or_foreign_cache_file_is_rebuilt(tmp_path):
    path = tmp_path / "m.json"
    for text in ("{not json", '{"format": 0, "sources": {}}', '["a list"]'):
        path.write_text(text)
        assert manifest.load(path=path).method_names() == method_names()
        assert '"format": 1' in path.read_text()


def test_the_cache_lives_in_the_user_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("MTLBENCH_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert manifest.cache_path().parent == tmp_path / "mtlbench"
    monkeypatch.setenv("MTLBENCH_CACHE", str(tmp_path / "own"))
    assert manifest.cache_path().parent == tmp_path / "own"
    assert manifest.cache_path().name.startswith("manifest-")


def test_sources_put_plugins_after_the_built_ins():
    assert manifest.sources() == ["mtlbench.methods", "mtlbench.datasets"]
    assert manifest.sources([Plugin("my_pkg.methods"), Plugin("mtlbench.methods")]) == [
        "mtlbench.methods",
        "mtlbench.datasets",
        "my_pkg.methods",
    ]
