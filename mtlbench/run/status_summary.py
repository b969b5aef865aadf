"""The default view of ``mtlbench status``: a summary that stays a screen long at 20,000 trials.

It prints the counts by state, one line per benchmark x method with its counts, the failed,
interrupted and running trials by name (at most :data:`NAMED` of each, with how to list the
rest), the arrays a Slurm submitter holds back (:mod:`mtlbench.run.slurm.held`), and the time
left. ``--all`` prints the full table instead (:func:`mtlbench.run.status_cli.render`).

**Time left.** ``sum over unfinished trials of (epochs left x seconds per epoch) / slots``: the
seconds per epoch of a benchmark are the mean over its finished trials (``timing.train_s +
timing.eval_s`` over the epochs of their protocol) and its running ones (their progress file);
a benchmark with neither borrows the mean of the others. The slots are the trials running now
(at least one): a queue that will run more at once makes the estimate pessimistic, one that
holds jobs back makes it optimistic. Nothing here imports torch.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from mtlbench.run.progress import duration, read_progress
from mtlbench.run.slurm.held import Held
from mtlbench.run.state import ORDER, FolderStatus, TrialState

NAMED = 20  # trials named per state in the summary
NAMED_STATES = ("failed", "interrupted", "running")
SHOWN = ("done", "running", "pending", "failed", "diverged", "interrupted")


def plain_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Columns padded to their widest cell under a dashed rule (tabulate's ``simple`` look),
    in time linear in the cells: tabulate guesses every cell's type, 7 s for 20,000 rows."""
    text = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in text)])


def headline(status: FolderStatus) -> str:
    """``<results>: N trial(s): 3 done, 1 running, ...`` (and unreadable record files)."""
    counts = status.counts()
    head = f"{status.results}: {len(status.rows)} trial(s): " + ", ".join(
        f"{counts[k]} {k}" for k in SHOWN if counts[k] or k in ("done", "running", "pending")
    )
    if status.corrupt:
        head += f"; {len(status.corrupt)} unreadable record file(s)"
    return head


def _epochs(row: TrialState) -> int | None:
    epochs = (row.config.get("protocol") or {}).get("epochs")
    return int(epochs) if isinstance(epochs, (int, float)) and epochs > 0 else None


def _measured(row: TrialState) -> float | None:
    """Seconds per epoch of a finished trial, from its record's timing."""
    timing = (row.record or {}).get("timing") or {}
    epochs = _epochs(row)
    if row.status != "done" or not epochs or timing.get("train_s") is None:
        return None
    return (float(timing["train_s"]) + float(timing.get("eval_s") or 0.0)) / epochs


def time_left(status: FolderStatus) -> float | None:
    """Seconds until every unfinished trial is done (module docstring); None when no trial
    has measured an epoch yet, or nothing is left."""
    rates: dict[str, list[float]] = {}
    reached: dict[str, int] = {}
    for row in status.rows:
        rate = _measured(row)
        if row.status == "running":
            progress = read_progress(status.results, row.trial_id) or {}
            if progress.get("s_per_epoch"):
                rate = float(progress["s_per_epoch"])
                reached[row.trial_id] = int(progress.get("epoch") or 0)
        if rate is not None:
            rates.setdefault(row.benchmark, []).append(rate)
    if not rates:
        return None
    mean = {b: statistics.fmean(v) for b, v in rates.items()}
    fallback = statistics.fmean(mean.values())
    total, unfinished = 0.0, 0
    for row in status.rows:
        epochs = _epochs(row)
        if row.status in ("pending", "running", "interrupted") and epochs:
            unfinished += 1
            left = epochs - reached.get(row.trial_id, 0)
            total += max(0, left) * mean.get(row.benchmark, fallback)
    if not unfinished:
        return None
    return total / max(1, sum(r.status == "running" for r in status.rows))


def per_cell(status: FolderStatus) -> str:
    """A table of counts by benchmark x method (only the states that occur)."""
    cells: dict[tuple[str, str], dict[str, int]] = {}
    for row in status.rows:
        cell = cells.setdefault((row.benchmark or "?", row.method or "?"), {})
        cell[row.status] = cell.get(row.status, 0) + 1
    states = [s for s in ORDER[::-1] if any(s in c for c in cells.values())]
    rows = [
        [bench, method, *(c.get(s, 0) for s in states), sum(c.values())]
        for (bench, method), c in sorted(cells.items())
    ]
    return plain_table(rows, ["benchmark", "method", *states, "total"])


def _named(status: FolderStatus, state: str) -> list[str]:
    rows = [r for r in status.rows if r.status == state]
    if not rows:
        return []
    out = [f"{state} ({len(rows)}):"]
    out += [f"  {r.trial_id}  {r.label}: {r.detail}" for r in rows[:NAMED]]
    if len(rows) > NAMED:
        out.append(
            f"  ... and {len(rows) - NAMED} more: mtlbench status {status.results} --state {state}"
        )
    return out


def render_summary(status: FolderStatus, held: Held | None = None) -> str:
    """The summary (module docstring)."""
    out = [headline(status)]
    if status.queue_note:
        out.append(f"note: {status.queue_note}")
    if held is not None:
        out.append(f"held: {held.describe()}")
    left = time_left(status)
    running = sum(r.status == "running" for r in status.rows)
    if left is not None:
        out.append(f"time left: ~{duration(left)} at {max(1, running)} trial(s) at once")
    elif status.active:
        out.append("time left: unknown until a trial of this folder has run an epoch")
    if status.rows:
        out += ["", per_cell(status)]
    for state in NAMED_STATES:
        named = _named(status, state)
        out += [""] + named if named else []
    if status.corrupt:
        out += ["", f"unreadable record files ({len(status.corrupt)}):"]
        out += [f"  {path}: {error}" for path, error in status.corrupt[:NAMED]]
    out += ["", f"every trial: mtlbench status {status.results} --all"]
    return "\n".join(out)
