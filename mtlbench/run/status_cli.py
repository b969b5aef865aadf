"""``mtlbench status RESULTS_DIR [--spec SPEC] [--all | --state STATE] [--watch [SECONDS]]``:
where a sweep stands.

The trials are done, running (with the epoch reached), pending, failed, diverged or
interrupted, as :mod:`mtlbench.run.state` resolves them from the records, the leases, the Slurm
ledger and queue; with ``--spec``, the spec's trials without any trace are pending, and the
arrays a Slurm submitter holds back for the submit limit (:mod:`mtlbench.run.slurm.held`) are
pending with a ``held`` note. By default a summary (:mod:`mtlbench.run.status_summary`);
``--all`` gives the table of every trial, ``--state S`` the table of those in state ``S``
(``held``: the held ones), each with the problems: the last lines of a failure's traceback and
of its job's stderr log. A corrupt or half-written record file is listed and skipped, never
fatal. Nothing here imports submitit or torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtlbench.registry import ConfigError
from mtlbench.run.slurm.held import Held, read_held
from mtlbench.run.slurm.ledger import tail
from mtlbench.run.state import ORDER, FolderStatus, TrialState, collect
from mtlbench.run.status_summary import headline, plain_table, render_summary

if TYPE_CHECKING:  # the trial model imports the registries (torch): status needs no more
    from mtlbench.trial import ResolvedTrial

STATES = (*ORDER, "held")  # what --state accepts
HELD = "held: "  # how a held trial's detail starts


def _problems(status: FolderStatus, lines: int) -> list[str]:
    problems = [r for r in status.rows if r.status in ("failed", "interrupted")]
    out = ["", "Problems:"] if problems or status.corrupt else []
    for r in problems:
        out.append(f"* {r.status} {r.trial_id}: {r.detail}")
        trace = ((r.record or {}).get("error") or {}).get("traceback")
        if trace:
            out.append("    traceback (last lines):")
            out += [f"      {line}" for line in trace.strip().splitlines()[-lines:]]
        if r.ledger:
            out.append(f"    log: {r.ledger.get('stderr')}")
            out += [f"      {line}" for line in tail(r.ledger.get("stderr"), lines)]
    for path, error in status.corrupt:
        out.append(
            f"* unreadable record {path}: {error} (skipped; if it is a trial's record, "
            "running the sweep again rewrites it)"
        )
    return out


def render(status: FolderStatus, lines: int = 5, limit: int | None = None) -> str:
    """The counts, a table of trials (problems first) and the problems with their logs."""
    out = [headline(status)]
    if status.queue_note:
        out.append(f"note: {status.queue_note}")
    rows = status.rows if limit is None else status.rows[:limit]
    if rows:
        table = [(r.status, r.trial_id, r.label, r.job, r.detail) for r in rows]
        out += ["", plain_table(table, ["status", "trial", "what", "job", "detail"])]
        if limit is not None and len(status.rows) > limit:
            out.append(f"... and {len(status.rows) - limit} more")
    return "\n".join(out + _problems(status, lines))


def mark_held(status: FolderStatus, held: Held | None) -> None:
    """Say which pending trials a submitter holds back; add the held trials that left no
    other trace (no spec given) as pending rows."""
    if held is None:
        return
    ids = set(held.trial_ids)
    benchmarks = {t: a.get("benchmarks", [""])[0] for a in held.arrays for t in a["trials"]}
    note = f"{HELD}waits for the submit limit ({held.reason})"
    for row in status.rows:
        if row.trial_id in ids and row.status == "pending" and not row.job:
            row.detail = note
    known = {r.trial_id for r in status.rows}
    for tid in sorted(ids - known):
        row = TrialState(tid, detail=note, benchmark=benchmarks.get(tid, ""))
        row.label = row.benchmark
        status.rows.append(row)


def only(status: FolderStatus, state: str) -> FolderStatus:
    """The same status with only the rows in ``state`` (``held``: pending and held back)."""
    if state == "held":
        rows = [r for r in status.rows if r.detail.startswith(HELD)]
    else:
        rows = [r for r in status.rows if r.status == state]
    return FolderStatus(status.results, rows, status.corrupt, status.queue_note)


def show(status: FolderStatus, args: argparse.Namespace, held: Held | None = None) -> str:
    """The view the arguments ask for: summary, ``--all`` or ``--state`` (``held``: what
    :func:`mark_held` was given)."""
    if getattr(args, "state", None):
        return render(only(status, args.state), lines=args.lines)
    if getattr(args, "all", False):
        return render(status, lines=args.lines)
    return render_summary(status, held)


def as_json(status: FolderStatus) -> str:
    """The status as JSON (for scripts)."""
    return json.dumps(
        {
            "results": str(status.results),
            "counts": status.counts(),
            "trials": [
                {"trial_id": r.trial_id, "status": r.status, "job": r.job, "detail": r.detail}
                for r in status.rows
            ],
            "corrupt": [str(p) for p, _ in status.corrupt],
        },
        indent=1,
    )


def _collect(
    results: str | Path, planned: list[ResolvedTrial] | None
) -> tuple[FolderStatus, Held | None]:
    """The folder's status with the held trials marked, and the held arrays."""
    status = collect(results, planned)
    held = read_held(status.results)
    mark_held(status, held)
    return status, held


def cmd_status(args: argparse.Namespace) -> int:
    planned = None
    results = args.results
    if args.spec is not None:
        from mtlbench.sweep import load_spec  # deferred: torch, for --spec only

        sweep = load_spec(args.spec)
        planned = [t for stage in sweep.stages() for t in stage]
        results = results or sweep.results
    if results is None:
        raise ConfigError("give a results folder, or --spec SPEC to use its results folder")
    if args.watch is None:
        status, held = _collect(results, planned)
        print(as_json(status) if args.json else show(status, args, held))
        return 0
    clear = sys.stdout.isatty()
    try:
        while True:
            status, held = _collect(results, planned)
            stamp = time.strftime("%H:%M:%S")
            text = show(status, args, held)
            print(("\033[2J\033[H" if clear else "") + f"[{stamp}] {text}", flush=True)
            if not status.active:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


def add_command(sub: Any) -> None:
    """Register ``mtlbench status`` on the CLI's subparsers."""
    if "status" in sub.choices:  # cli.main() called twice in one process
        return
    p = sub.add_parser(
        "status", help="done / running / pending / failed trials of a results folder"
    )
    p.add_argument("results", nargs="?", help="results folder (default: the spec's)")
    p.add_argument("--spec", help="a sweep spec: its trials without records count as pending")
    p.add_argument(
        "--watch",
        nargs="?",
        const=30.0,
        type=float,
        metavar="SECONDS",
        help="refresh every SECONDS (default 30) until nothing runs or waits",
    )
    view = p.add_mutually_exclusive_group()
    view.add_argument(
        "--all", action="store_true", help="a table of every trial instead of the summary"
    )
    view.add_argument(
        "--state",
        choices=STATES,
        help="a table of the trials in this state (held: those a Slurm submitter holds back)",
    )
    p.add_argument("--lines", type=int, default=5, help="log lines shown per failure")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(handler=cmd_status)
