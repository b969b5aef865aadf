"""The two concurrency tools of the runners: a file lock and a periodic background thread.

* :func:`file_lock`: an exclusive ``flock(2)`` on a lock file, held for a ``with`` block. It
  serialises processes on one host (and on NFS where the server supports it), e.g. two
  submitters of one results folder (:mod:`mtlbench.run.slurm.ledger`) or two claimants taking
  over one expired lease (:mod:`mtlbench.run.lease`).
* :class:`Periodic`: calls a function every ``interval`` seconds on a daemon thread while a
  ``with`` block runs, until the block ends or the function returns ``False``: a lease's
  heartbeat, a sweep's progress refresh (:mod:`mtlbench.run.progress`).
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created, with its folder, if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Periodic:
    """``fn()`` every ``interval`` seconds on a daemon thread between :meth:`start` and
    :meth:`stop` (or as a context manager); ``fn`` returning ``False`` ends the thread."""

    def __init__(self, interval: float, fn: Callable[[], object]) -> None:
        self.interval = interval
        self.fn = fn
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.fn() is False:
                return

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread and wait for it (a call of ``fn`` under way finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Periodic:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
