"""``mtlbench status RESULTS_DIR [--spec SPEC] [--watch [SECONDS]]``: where a sweep stands.

Counts and a table of the trials that are done, running (with the epoch reached), pending,
failed, diverged or interrupted, as :mod:`mtlbench.run.state` resolves them from the records,
the leases, the Slurm ledger and queue; with ``--spec``, the spec's trials without any trace
are pending. A corrupt or half-written record file is listed and skipped, never fatal.
Failures come with the last lines of the record's traceback and of the job's stderr log.
Nothing here imports submitit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from mtlbench.registry import ConfigError
from mtlbench.run.slurm.ledger import tail
from mtlbench.run.state import FolderStatus, collect

SHOWN = ("done", "running", "pending", "failed", "diverged", "interrupted")


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
    from tabulate import tabulate

    counts = status.counts()
    head = f"{status.results}: {len(status.rows)} trial(s): " + ", ".join(
        f"{counts[k]} {k}" for k in SHOWN if counts[k] or k in ("done", "running", "pending")
    )
    if status.corrupt:
        head += f"; {len(status.corrupt)} unreadable record file(s)"
    out = [head]
    if status.queue_note:
        out.append(f"note: {status.queue_note}")
    rows = status.rows if limit is None else status.rows[:limit]
    if rows:
        table = [(r.status, r.trial_id, r.label, r.job, r.detail) for r in rows]
        headers = ["status", "trial", "what", "job", "detail"]
        out += ["", tabulate(table, headers=headers)]
        if limit is not None and len(status.rows) > limit:
            out.append(f"... and {len(status.rows) - limit} more")
    return "\n".join(out + _problems(status, lines))


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


def cmd_status(args: argparse.Namespace) -> int:
    planned = None
    results = args.results
    if args.spec is not None:
        from mtlbench.sweep import load_spec

        sweep = load_spec(args.spec)
        planned = [t for stage in sweep.stages() for t in stage]
        results = results or sweep.results
    if results is None:
        raise ConfigError("give a results folder, or --spec SPEC to use its results folder")
    if args.watch is None:
        status = collect(results, planned)
        print(as_json(status) if args.json else render(status, lines=args.lines))
        return 0
    clear = sys.stdout.isatty()
    try:
        while True:
            status = collect(results, planned)
            stamp = time.strftime("%H:%M:%S")
            text = render(status, lines=args.lines)
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
    p.add_argument("--lines", type=int, default=5, help="log lines shown per failure")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(handler=cmd_status)
