"""Document assembly: one report folder from one results folder.

:func:`build_report` loads the records (:mod:`.load`), creates the page state
(:class:`~mtlbench.report.page.Report`: every benchmark's leaderboard, :mod:`.leaderboard`),
runs the sections of the page in order (:mod:`.sections`: display tables through :mod:`.tables`
and :mod:`.render`, figures through :mod:`.figures`, :mod:`.dynamics`, :mod:`.toy`, drawn in
forked worker processes while the tables are built for reports of 1,000 records or more, else in
this process, :mod:`.workers`) and writes the page out. The figure modules (and so matplotlib and
seaborn) are imported only while a report is built.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

import mtlbench.report.sections as sections
from mtlbench.registry import ConfigError
from mtlbench.report.load import Results, read_results
from mtlbench.report.merge import read_folders
from mtlbench.report.page import Report
from mtlbench.report.published import load_published
from mtlbench.report.timing import timing_runs

FORMATS = ("md", "tex", "csv", "html")


class SkippedRecordWarning(UserWarning):
    """A JSON file under the results folder that is not a valid record (``mtlbench report``
    names each on stderr, and exits 1 with ``--strict``)."""


def _check_out(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".mtlbench-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(
            f"report folder {out_dir} is not writable ({error.strerror or error})"
        ) from error


def _load(folders: Sequence[Path]) -> Results:
    """:func:`read_results`, with the records kept out of Python's cyclic garbage collector.

    The parsed records (about 30 dicts and lists each, acyclic, alive until the report is
    written) made every full collection scan them again: on 10,000 records about ten of them
    (four triggered while parsing, six ``gc.collect()`` calls in statsmodels' Holm correction)
    cost 4 of 17 s. The collector is paused while they are parsed, then ``gc.freeze()`` moves
    every object alive into the permanent generation that collections skip (which also spares
    the forked figure workers copy-on-write faults, as the ``gc`` documentation recommends).
    :func:`build_report` calls ``gc.unfreeze()`` on its way out, so nothing outlives it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        results = read_folders(folders)
    finally:
        if enabled:
            gc.enable()
    gc.freeze()
    return results


def build_report(
    results_dir: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    formats: Sequence[str] = ("md",),
    *,
    task_avg: bool = False,
    published: bool = False,
    timing_reference: str | Path | None = None,
) -> Path:
    """Write the report of ``results_dir`` into ``out_dir``; return the index page
    (``index.md``; ``index.html`` beside it when ``html`` is among ``formats``).

    ``results_dir``: a results folder, or several that are the same comparison (one leaderboard
    per benchmark with every folder's methods: :mod:`mtlbench.report.merge`). ``formats``: any
    of md, tex, csv, html (``tex``: every table as a booktabs fragment under ``tables/``;
    ``csv``: every table's numbers under ``tables/``). ``task_avg``: add the task-averaged Δm%
    beside the metric-averaged one. ``published``: compare with the LDC-MTL paper's numbers.
    ``timing_reference``: a folder of LS runs on the machine where other runs ran, for their
    time × LS (:mod:`mtlbench.report.timing`). Each JSON file that is not a valid record is
    named in a :class:`SkippedRecordWarning` (and on the page). Raises :class:`ConfigError` for
    a missing or empty results folder, folders that are not the same comparison, an unwritable
    report folder or an unknown format.
    """
    formats = [f.strip().lower() for f in formats if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ConfigError(f"unknown report format {bad[0]!r}. Valid: {', '.join(FORMATS)}")
    given = [results_dir] if isinstance(results_dir, (str, Path)) else list(results_dir)
    folders = [Path(f) for f in given]
    out_dir = Path(out_dir)
    for folder in [*folders, *([Path(timing_reference)] if timing_reference else [])]:
        if not folder.is_dir():
            raise ConfigError(f"results folder {folder} does not exist (or is not a folder)")
    if not folders:
        raise ConfigError("no results folder given")
    timing = timing_runs(read_results(timing_reference).frame) if timing_reference else None
    results = _load(folders)
    try:
        return _write(results, out_dir, formats, task_avg, published, timing, timing_reference)
    finally:
        gc.unfreeze()


def _write(
    results: Results,
    out_dir: Path,
    formats: list[str],
    task_avg: bool,
    published: bool,
    timing: pd.DataFrame | None,
    timing_reference: str | Path | None,
) -> Path:
    """The report folder of ``results`` (:func:`build_report` after loading)."""

    prefix = f"{results.root}/" if len(results.roots) <= 1 else ""
    for line in results.skipped:
        warnings.warn(f"skipped {prefix}{line}", SkippedRecordWarning, stacklevel=3)
    _check_out(out_dir)
    name = f"--timing-reference {timing_reference}" if timing_reference else ""
    report = Report(results, out_dir, formats, task_avg, timing, name)
    try:
        sections.intro(report)
        sections.across(report)
        pub = load_published() if published else None
        for bench in report.benches:
            sections.benchmark(report, bench, pub)
        sections.accuracy_and_cost(report)
        sections.runtime(report)
        sections.scaling(report)
        sections.missing(report)
        sections.files(report)
        report.finish_figures()
    finally:
        report.figures.close()
    index = out_dir / "index.md"
    index.write_text(report.doc.markdown(), encoding="utf-8")
    if "html" in formats:
        title = "mtlbench report: " + " + ".join(root.name for root in results.roots)
        (out_dir / "index.html").write_text(report.doc.html(title), encoding="utf-8")
    return index


__all__ = ["FORMATS", "Report", "SkippedRecordWarning", "build_report"]
