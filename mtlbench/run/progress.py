"""Per-trial progress (epoch within the trial) and an estimate of the time left.

A running trial's runner writes ``<results>/.leases/<trial_id>.progress`` after every epoch
(:class:`EpochReporter`): the epoch reached, the trial's epochs and the seconds per epoch seen
in this run. The sweep that started it reads those files (:class:`ProgressView`), whatever
runs the trial (this process, a pool worker, a Slurm job), and so does ``mtlbench status``.

On a terminal the view is one line redrawn in place; otherwise (a log file, a pipe, CI) it
prints plain lines: one per finished trial, and one per running trial at most every
:data:`PLAIN_EVERY_S` seconds.

The time left is ``sum over unfinished trials of (epochs left x seconds per epoch) / parallel
slots``, the seconds per epoch measured per benchmark (the mean over trials that have reported
one); while no trial of a benchmark has, the mean of the others stands in.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mtlbench.records import atomic_write_json
from mtlbench.run.lease import ELSEWHERE, lease_dir
from mtlbench.run.sync import Periodic

if TYPE_CHECKING:  # for hints only: status reads progress files without the trial model
    from mtlbench.trial import ResolvedTrial

PLAIN_EVERY_S = 60.0
REFRESH_S = 1.0


def progress_path(results: Path, trial_id: str) -> Path:
    return lease_dir(results) / f"{trial_id}.progress"


def read_progress(results: Path, trial_id: str) -> dict[str, Any] | None:
    """``{epoch, epochs, s_per_epoch, run, updated}`` of a running trial, or None."""
    try:
        data = json.loads(progress_path(results, trial_id).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class EpochReporter:
    """The trainer's ``on_epoch`` callback: writes the trial's progress file."""

    def __init__(self, results: Path, trial_id: str, epochs: int, run: str | None) -> None:
        self.path = progress_path(results, trial_id)
        self.epochs = epochs
        self.run = run
        self.started = time.monotonic()
        self.first: int | None = None  # the epoch this run started at (after a resume)

    def __call__(self, epoch: int) -> None:
        if self.first is None:
            self.first = epoch
        done_here = epoch - self.first + 1
        elapsed = time.monotonic() - self.started
        with contextlib.suppress(OSError):
            atomic_write_json(
                self.path,
                {
                    "epoch": epoch + 1,
                    "epochs": self.epochs,
                    "s_per_epoch": elapsed / done_here,
                    "run": self.run,
                    "updated": time.time(),
                },
            )

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def duration(seconds: float) -> str:
    """``42 s``, ``7 min``, ``2 h 05 min``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


@dataclass
class _Running:
    trial: ResolvedTrial
    epoch: int
    s_per_epoch: float
    printed: float = 0.0


class ProgressView:
    """What a sweep shows while it runs (see the module docstring)."""

    def __init__(
        self,
        name: str,
        results: Path,
        trials: list[ResolvedTrial],
        *,
        slots: int = 1,
        run: str | None = None,
        enabled: bool = True,
        stream: IO[str] | None = None,
    ) -> None:
        self.name = name
        self.results = Path(results)
        self.trials = {t.trial_id: t for t in trials}
        self.slots = max(1, slots)
        self.run = run
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.finished: dict[str, str] = {}
        self.running: dict[str, _Running] = {}
        self.rates: dict[str, list[float]] = {}  # benchmark -> seconds per epoch of trials
        self._lock = threading.Lock()
        self._refresh = Periodic(REFRESH_S, self.poll)

    # -- events -----------------------------------------------------------------------------
    def finish(self, trial_id: str, status: str) -> None:
        """A trial ended (``status`` as :func:`mtlbench.run.base.run_one` returns it)."""
        with self._lock:
            self.finished[trial_id] = status
            info = self.running.pop(trial_id, None)
            if info is not None:
                self.rates.setdefault(info.trial.benchmark, []).append(info.s_per_epoch)
            if self.enabled:
                said = "left to another process" if status == ELSEWHERE else status
                self._line(f"{said}: {trial_id}", final=True)

    def note(self, text: str) -> None:
        """A message between progress lines (shown even when progress is off)."""
        with self._lock:
            self._line(text, final=True)

    def poll(self) -> None:
        """Read the progress files of this run's unfinished trials."""
        now = time.time()
        reporting = {p.stem for p in lease_dir(self.results).glob("*.progress")}
        with self._lock:
            for tid in reporting & self.trials.keys() - self.finished.keys():
                data = read_progress(self.results, tid)
                if data is None or (self.run is not None and data.get("run") != self.run):
                    continue
                entry = self.running.get(tid) or _Running(self.trials[tid], 0, 0.0)
                entry.epoch, entry.s_per_epoch = int(data["epoch"]), float(data["s_per_epoch"])
                self.running[tid] = entry
            if self.enabled:
                self._show(now)

    # -- estimate ---------------------------------------------------------------------------
    def _rates(self) -> dict[str, float]:
        """Mean seconds per epoch by benchmark, over finished and running trials."""
        rates = {b: list(v) for b, v in self.rates.items()}
        for info in self.running.values():
            rates.setdefault(info.trial.benchmark, []).append(info.s_per_epoch)
        return {b: statistics.fmean(v) for b, v in rates.items() if v}

    def time_left(self) -> float | None:
        """Seconds until every trial of this run is finished (None: nothing measured yet)."""
        rates = self._rates()
        if not rates:
            return None
        fallback = statistics.fmean(rates.values())
        total = 0.0
        for tid, trial in self.trials.items():
            if tid in self.finished:
                continue
            rate = rates.get(trial.benchmark, fallback)
            done = self.running[tid].epoch if tid in self.running else 0
            total += max(0, trial.protocol.epochs - done) * rate
        return total / self.slots

    # -- output -----------------------------------------------------------------------------
    def _counts(self) -> str:
        return summary(self.finished.values()) if self.finished else ""

    def _trial_text(self, info: _Running) -> str:
        epochs = info.trial.protocol.epochs
        left = max(0, epochs - info.epoch) * info.s_per_epoch
        return f"{info.trial.trial_id} epoch {info.epoch}/{epochs} (~{duration(left)} left)"

    def _head(self) -> str:
        left = self.time_left()
        eta = f", ~{duration(left)} left" if left is not None else ""
        counts = self._counts()
        return (
            f"sweep {self.name}: {len(self.finished)}/{len(self.trials)} trials"
            + (f" ({counts})" if counts else "")
            + eta
        )

    def _show(self, now: float) -> None:
        if self.tty:
            parts = [self._head()] + [self._trial_text(i) for i in self.running.values()]
            self._line(" | ".join(parts), final=False)
            return
        for info in self.running.values():
            if now - info.printed >= PLAIN_EVERY_S:
                info.printed = now
                self._line(f"{self._head()}; {self._trial_text(info)}", final=True)

    def _line(self, text: str, final: bool) -> None:
        if self.tty:
            width = shutil.get_terminal_size().columns - 1
            text = text if len(text) <= width else text[: width - 1] + "…"
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()

    # -- the refresh thread ----------------------------------------------------------------
    def __enter__(self) -> ProgressView:
        if self.enabled:
            self._refresh.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._refresh.stop()
        if self.enabled and self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def summary(statuses: Iterable[str]) -> str:
    """``done=3 failed=1``: the trials this process ran, by status; those it left to another
    process are said apart (``; 2 left to another process``)."""
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    elsewhere = counts.pop(ELSEWHERE, 0)
    text = " ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "ran none"
    return text + (f"; {elsewhere} left to another process" if elsewhere else "")
