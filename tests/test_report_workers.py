"""Figures drawn in forked worker processes (mtlbench.report.workers): the same page and the
same pictures as when drawn in the report's own process, failures become notes, a worker that
dies costs no figure, and small reports fork nothing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from test_report import results_with_curves

from mtlbench.registry import ConfigError
from mtlbench.report import build_report, figures, workers
from mtlbench.report.workers import (
    ENV,
    MAX_WORKERS,
    MIN_RECORDS,
    FigureWorkers,
    fork_available,
    usable_cpus,
    worker_count,
)

needs_fork = pytest.mark.skipif(not fork_available(), reason="no fork here: figures drawn serially")
PARENT = os.getpid()


def _write(text: str, path: Path) -> Path:
    path.write_text(text)
    return path


def _fail(text: str, path: Path) -> Path:
    raise ValueError(f"cannot draw {text}")


def _die_in_a_worker(text: str, path: Path) -> Path:
    if os.getpid() != PARENT:
        os._exit(3)  # a worker killed mid-figure (out of memory, a signal)
    return _write(text, path)


def test_worker_count_forks_only_for_large_reports(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert worker_count(MIN_RECORDS - 1) == 1
    many = min(MAX_WORKERS, usable_cpus())
    assert worker_count(MIN_RECORDS) == (many if fork_available() else 1)
    monkeypatch.setenv(ENV, "1")
    assert worker_count(10_000) == 1
    monkeypatch.setenv(ENV, "3")
    assert worker_count(10) == (3 if fork_available() else 1)
    for bad in ("0", "two"):
        monkeypatch.setenv(ENV, bad)
        with pytest.raises(ConfigError, match=ENV):
            worker_count(10)


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=needs_fork)])
def test_figures_are_drawn_and_failures_returned(tmp_path: Path, workers: int):
    pool = FigureWorkers(workers)
    pool.draw("a", _write, "first", tmp_path / "a.txt")
    pool.draw("b", _fail, "second", tmp_path / "b.txt")
    pool.draw("c", _write, "third", tmp_path / "c.txt")
    failed = pool.wait()
    assert (tmp_path / "a.txt").read_text() == "first"
    assert (tmp_path / "c.txt").read_text() == "third"
    assert [(key, type(e).__name__, str(e)) for key, e in failed] == [
        ("b", "ValueError", "cannot draw second")
    ]


@needs_fork
def test_a_figure_lost_with_its_worker_is_drawn_here(tmp_path: Path):
    pool = FigureWorkers(2)
    for name in ("a", "b", "c"):
        pool.draw(name, _die_in_a_worker, name, tmp_path / f"{name}.txt")
    assert pool.wait() == []
    assert [(tmp_path / f"{n}.txt").read_text() for n in "abc"] == ["a", "b", "c"]


def test_figures_are_drawn_here_when_the_pool_cannot_start(tmp_path: Path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("daemonic processes are not allowed to have children")

    monkeypatch.setattr(workers, "ProcessPoolExecutor", refuse)
    pool = FigureWorkers(2)
    pool.draw("a", _write, "here", tmp_path / "a.txt")
    assert pool.wait() == [] and pool.workers == 1
    assert (tmp_path / "a.txt").read_text() == "here"


def _broken_heatmap(*args, **kwargs):
    raise RuntimeError("no heatmap today")


@needs_fork
def test_workers_make_the_same_page_and_pictures(tmp_path: Path, monkeypatch):
    """The same report drawn here and in two workers: identical pages (a failing figure's
    note included, in its place), identical pixels."""
    results = results_with_curves(tmp_path)
    monkeypatch.setattr(figures, "rank_heatmap", _broken_heatmap)
    pages = {}
    for count in ("1", "2"):
        monkeypatch.setenv(ENV, count)
        out = tmp_path / f"report{count}"
        pages[count] = build_report(results, out, ["md", "html"]).read_text()
    assert pages["1"] == pages["2"]
    note = "Figure 'mean rank per benchmark' could not be drawn (RuntimeError: no heatmap today)"
    assert note in pages["2"]
    drawn = sorted(p.name for p in (tmp_path / "report1" / "figures").glob("*.png"))
    assert drawn == sorted(p.name for p in (tmp_path / "report2" / "figures").glob("*.png"))
    assert len(drawn) >= 5 and "ranks.png" not in drawn
    for name in drawn:
        here, there = (imread(tmp_path / f"report{w}" / "figures" / name) for w in "12")
        np.testing.assert_array_equal(here, there, err_msg=name)
