"""Figure workers: the report's figures drawn in forked processes while this one builds the
tables, or in this process, one after the other.

A figure costs 0.1 to 0.8 s of CPU (matplotlib's Agg renderer and the PNG encoder), and a
report of 10,000 records draws thirteen; the tables and statistics are about as much again.
On two cores, drawing in worker processes overlaps the two halves. The workers are forked
(``fork`` start method) once the figure modules are imported and the records loaded, so they
inherit both: no import, no record is sent, only each figure's own data (pickled: a few
thousand rows at most). A draw function is sent by reference (module and name), so only
module-level functions can be drawn in a worker.

Serial drawing (no worker) is used

* for small reports (fewer than :data:`MIN_RECORDS` records: forking and pickling cost more
  than the figures do),
* where ``fork`` is unavailable (Windows) or unsafe (macOS, where CPython's default is
  ``spawn``: a spawned worker would import matplotlib and seaborn again, which costs more than
  the figures of most reports),
* with ``MTLBENCH_REPORT_WORKERS=1`` (any other integer sets the number of workers),
* and for the rest of a report if the pool cannot start or a worker dies: the figures it did
  not finish are drawn in this process.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from typing import Any

from mtlbench.registry import ConfigError

ENV = "MTLBENCH_REPORT_WORKERS"
#: From this many records on the figures are drawn in worker processes (measured: a report of
#: the 48 quickstart records is no faster with them; one of 10,000 is about twice as fast).
MIN_RECORDS = 1000
MAX_WORKERS = 4  # a report draws about a dozen figures: more workers would mostly wait


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def fork_available() -> bool:
    """Whether worker processes can be forked safely here (not Windows, not macOS)."""
    return "fork" in get_all_start_methods() and sys.platform != "darwin"


def worker_count(records: int) -> int:
    """How many worker processes draw the figures of a report of ``records`` records (1: this
    process draws them). ``MTLBENCH_REPORT_WORKERS`` overrides the choice where fork works."""
    env = os.environ.get(ENV, "").strip()
    if env:
        try:
            wanted = int(env)
        except ValueError:
            raise ConfigError(f"{ENV}={env!r} is not an integer (1: no worker)") from None
        if wanted < 1:
            raise ConfigError(f"{ENV}={env!r}: give 1 (no worker) or more")
    elif records < MIN_RECORDS:
        wanted = 1
    else:
        wanted = min(MAX_WORKERS, usable_cpus())
    return wanted if wanted > 1 and fork_available() else 1


@dataclass
class _Job:
    key: Any
    draw: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: Future[Any] | None = None


class FigureWorkers:
    """Draws figures now or in ``workers`` forked processes; :meth:`wait` returns the figures
    that failed, each with its error (a failure must not cost the whole report)."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._jobs: list[_Job] = []
        self._failed: list[tuple[Any, BaseException]] = []

    def draw(self, key: Any, draw: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """``draw(*args, **kwargs)``, now or in a worker; ``key`` names it in :meth:`wait`."""
        job = _Job(key, draw, args, kwargs)
        if self.workers > 1:
            job.future = self._submit(job)
        if job.future is None:
            self._run_here(job)
        else:
            self._jobs.append(job)

    def _submit(self, job: _Job) -> Future[Any] | None:
        """The job sent to the pool (started on first use), or None when it cannot start."""
        try:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("fork"))
            with warnings.catch_warnings():
                # Python >= 3.12 warns when forking a process with threads (a BLAS pool may
                # have some); the workers only draw and never touch those threads' state
                warnings.filterwarnings("ignore", "This process .* is multi-threaded")
                return self._pool.submit(job.draw, *job.args, **job.kwargs)
        except Exception:  # noqa: BLE001 - no fork (resources), a daemonic process (assert)...
            self.close()
            self.workers = 1
            return None

    def _run_here(self, job: _Job) -> None:
        try:
            job.draw(*job.args, **job.kwargs)
        except Exception as error:  # noqa: BLE001 - reported by wait()
            self._failed.append((job.key, error))

    def wait(self) -> list[tuple[Any, BaseException]]:
        """Wait for every figure; the keys and errors of those that failed. A figure lost with
        its worker (killed, out of memory) is drawn here instead."""
        for job in self._jobs:
            assert job.future is not None
            if job.future.cancelled():  # the pool was given up after this job was sent
                self._run_here(job)
                continue
            error = job.future.exception()
            if isinstance(error, BrokenProcessPool):
                self._run_here(job)
            elif error is not None:
                self._failed.append((job.key, error))
        self._jobs.clear()
        self.close()
        return list(self._failed)

    def close(self) -> None:
        """Stop the workers (figures not yet drawn are cancelled)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
