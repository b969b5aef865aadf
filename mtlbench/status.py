"""``mtlbench status RESULTS_DIR [--spec SPEC] [--watch [SECONDS]]``: where a sweep stands.

Counts and a table of the trials that are done, running, pending, failed, diverged or
interrupted, from three sources:

* the records in the results folder (the truth for finished trials); a corrupt or half-written
  file is listed and skipped, never fatal;
* the SLURM executor's ledger (``<results>/.submissions``): a trial submitted without a record
  yet is pending; its job's state comes from ``squeue`` when Slurm answers, so a job that left
  the queue without finishing its trial shows as interrupted (run the sweep again to resume it);
* a sweep spec (``--spec``): its trials without a record or a submission are pending.

Failures come with the last lines of the record's traceback and of the job's stderr log.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtlbench.records import scan
from mtlbench.registry import ConfigError
from mtlbench.slurm import ACTIVE_STATES, iter_ledger, squeue_states, tail

ORDER = ("failed", "interrupted", "diverged", "running", "pending", "done")


@dataclass
class Row:
    trial_id: str
    status: str
    benchmark: str = ""
    method: str = ""
    seed: Any = ""
    job: str = ""
    detail: str = ""
    record: dict[str, Any] | None = None
    ledger: dict[str, Any] | None = None


@dataclass
class Status:
    results: Path
    rows: list[Row] = field(default_factory=list)
    corrupt: list[tuple[Path, str]] = field(default_factory=list)
    queue_note: str | None = None

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(ORDER, 0)
        for row in self.rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        return counts

    @property
    def active(self) -> bool:
        return any(r.status in ("running", "pending") for r in self.rows)


def _alive_here(record: dict[str, Any]) -> bool | None:
    """True / False for a runner on this host; None when it ran elsewhere."""
    runner = record.get("runner") or {}
    if runner.get("host") != socket.gethostname() or not runner.get("pid"):
        return None
    try:
        os.kill(int(runner["pid"]), 0)
    except (OSError, ValueError):
        return False
    return True


def collect(results: str | Path, spec: str | Path | None = None) -> Status:
    results = Path(results)
    if not results.is_dir():
        raise ConfigError(f"results folder {results} does not exist")
    status = Status(results)
    found = scan(results)
    records, status.corrupt = found.by_trial(), found.skipped
    ledger = {e["trial_id"]: e for e in iter_ledger(results)}
    planned: dict[str, Any] = {}
    if spec is not None:
        from mtlbench.sweep import load_spec

        planned = {t.trial_id: t for t in load_spec(spec).trials}

    queue: dict[str, tuple[str, str]] | None = None
    if any(e.get("cluster", "slurm") == "slurm" for e in ledger.values()):
        if shutil.which("squeue") is None:
            status.queue_note = "squeue is not on PATH: job states unknown"
        else:
            try:
                queue = squeue_states()
            except RuntimeError as error:
                status.queue_note = f"Slurm did not answer ({error}): job states unknown"

    def job_state(entry: dict[str, Any] | None) -> str | None:
        """The job's queue state, '' when it left the queue, None when unknown."""
        if entry is None:
            return None
        if entry.get("cluster", "slurm") != "slurm":
            if entry.get("host") != socket.gethostname():
                return None
            try:
                os.kill(int(entry["job_id"]), 0)
            except (OSError, ValueError, KeyError):
                return ""
            return "RUNNING"
        if queue is None:
            return None
        state, name = queue.get(str(entry.get("job_id")), ("", ""))
        if entry.get("job_name") and name and name != entry["job_name"]:
            return ""  # a job id reused by another job
        return state if state in ACTIVE_STATES else ""

    for tid in sorted(set(records) | set(ledger) | set(planned)):
        record, entry = records.get(tid), ledger.get(tid)
        row = Row(tid, "pending", record=record, ledger=entry)
        if record is not None:
            cfg = record.get("config") or {}
            row.benchmark, row.method, row.seed = (
                cfg.get("benchmark", ""),
                cfg.get("method", "") + (f" ({cfg['task']})" if cfg.get("task") else ""),
                cfg.get("seed", ""),
            )
        elif tid in planned:
            t = planned[tid]
            row.benchmark, row.method, row.seed = t.benchmark, t.method, t.seed
        elif entry is not None:
            row.benchmark = entry.get("benchmark", "")
        if entry is not None:
            row.job = str(entry.get("job_id", ""))
        state = job_state(entry)
        rec_status = (record or {}).get("status")
        if rec_status == "done":
            row.status = "done"
            dm = (record.get("delta_m") or {}).get("metric_avg")
            sel = record.get("selection") or {}
            row.detail = (f"Δm% {dm:+.2f}, " if dm is not None else "") + (
                f"epoch {sel.get('epoch')} selected"
            )
        elif rec_status == "diverged":
            row.status = "diverged"
            row.detail = f"at step {(record.get('diverged') or {}).get('step')}"
        elif rec_status == "failed":
            row.status = "failed"
            err = record.get("error") or {}
            row.detail = f"{err.get('type', 'error')}: {err.get('message', '')}"[:100]
        elif rec_status == "running":
            alive = _alive_here(record)
            runner = record.get("runner") or {}
            if state:
                row.status, row.detail = "running", f"job {state.lower()}"
            elif alive:
                row.status, row.detail = "running", f"pid {runner.get('pid')} on this host"
            elif state == "" or alive is False:
                row.status = "interrupted"
                row.detail = "its process or job is gone; run the sweep again to resume it"
            else:
                row.status = "running"
                row.detail = f"on {runner.get('host')} (pid {runner.get('pid')})"
        elif record is not None:
            row.status, row.detail = "failed", f"unknown record status {rec_status!r}"
        elif entry is not None:
            if state == "":
                row.status = "interrupted"
                row.detail = "the job left the queue without a record (cancelled before it ran?)"
            else:
                row.status = "pending"
                row.detail = f"job {(state or 'submitted').lower()}"
        else:
            row.status, row.detail = "pending", "not submitted"
        status.rows.append(row)
    gone = [r for r in status.rows if r.status == "interrupted" and r.job and queue is not None]
    ended = sacct_states([r.job for r in gone]) if gone else {}
    for r in gone:
        if r.job in ended:
            r.detail = f"job {ended[r.job]}; run the sweep again to resume it"
    status.rows.sort(key=lambda r: (ORDER.index(r.status), r.trial_id))
    return status


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    """How jobs ended, from ``sacct`` ({} when accounting does not answer)."""
    exe = shutil.which("sacct")
    if exe is None or not job_ids:
        return {}
    try:
        out = subprocess.run(
            [exe, "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    states = {}
    for line in out.stdout.splitlines() if out.returncode == 0 else []:
        job, _, state = line.strip().partition("|")
        if job and state:
            states[job] = state
    return states


def render(status: Status, lines: int = 5, limit: int | None = None) -> str:
    from tabulate import tabulate

    counts = status.counts()
    total = len(status.rows)
    shown = ("done", "running", "pending", "failed", "diverged", "interrupted")
    head = f"{status.results}: {total} trial(s): " + ", ".join(
        f"{counts[k]} {k}" for k in shown if counts[k] or k in ("done", "running", "pending")
    )
    if status.corrupt:
        head += f"; {len(status.corrupt)} unreadable record file(s)"
    out = [head]
    if status.queue_note:
        out.append(f"note: {status.queue_note}")
    rows = status.rows if limit is None else status.rows[:limit]
    if rows:
        out.append("")
        out.append(
            tabulate(
                [
                    (r.status, r.trial_id, r.benchmark, r.method, r.seed, r.job, r.detail)
                    for r in rows
                ],
                headers=["status", "trial", "benchmark", "method", "seed", "job", "detail"],
            )
        )
        if limit is not None and len(status.rows) > limit:
            out.append(f"... and {len(status.rows) - limit} more")
    problems = [r for r in status.rows if r.status in ("failed", "interrupted")]
    if problems or status.corrupt:
        out += ["", "Problems:"]
    for r in problems:
        out.append(f"* {r.status} {r.trial_id}: {r.detail}")
        trace = ((r.record or {}).get("error") or {}).get("traceback")
        if trace:
            out.append("    traceback (last lines):")
            out += [f"      {line}" for line in trace.strip().splitlines()[-lines:]]
        if r.ledger:
            err = tail(r.ledger.get("stderr"), lines)
            out.append(f"    log: {r.ledger.get('stderr')}")
            if err:
                out += [f"      {line}" for line in err]
    for path, error in status.corrupt:
        out.append(
            f"* unreadable record {path}: {error} (skipped; if it is a trial's record, "
            "running the sweep again rewrites it)"
        )
    return "\n".join(out)


def cmd_status(args: argparse.Namespace) -> int:
    results = args.results
    if results is None:
        if args.spec is None:
            raise ConfigError("give a results folder, or --spec SPEC to use its results folder")
        from mtlbench.sweep import load_spec

        results = load_spec(args.spec).results
    if args.watch is None:
        status = collect(results, args.spec)
        print(as_json(status) if args.json else render(status, lines=args.lines))
        return 0
    clear = sys.stdout.isatty()
    try:
        while True:
            status = collect(results, args.spec)
            text = render(status, lines=args.lines)
            stamp = time.strftime("%H:%M:%S")
            print(("\033[2J\033[H" if clear else "") + f"[{stamp}] {text}", flush=True)
            if not status.active:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


def add_command(sub: Any) -> None:
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


def as_json(status: Status) -> str:
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
