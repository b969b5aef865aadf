"""The ``mtlbench`` command line: list, run, sweep, report, status, data, bench.

Bad input (an unknown name, a mistyped hyper-parameter, a malformed sweep file, an unwritable
folder, missing data) prints one line starting with ``mtlbench: error:`` and exits with 2; it
never shows a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mtlbench.registry import ConfigError


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML scalars (``0.1``, ``true``, ``[1, 2]``)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def ensure_writable(folder: Path) -> Path:
    """Create ``folder`` if needed and check that files can be written in it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise ConfigError(f"cannot write to {folder}: {error.strerror or error}") from None
    return folder


# -- commands ---------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    if args.what == "methods" and getattr(args, "space", False):
        from mtlbench.method import names
        from mtlbench.tune import space_rows

        print(tabulate(space_rows(names()), headers=["method", "hyper-parameter", "space"]))
        print("\nDeclared in each method's search_space; the protocol's lr for every method.")
    elif args.what == "methods":
        from mtlbench.method import METHODS, names

        rows = []
        for name in names():
            cls = METHODS.get(name)
            doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
            rows.append((name, cls.cost, cls.needs, cls.paper, doc))
        print(tabulate(rows, headers=["method", "cost", "needs", "paper", "summary"]))
        print(f"\n{len(rows)} methods; 'stl' (single-task runs) is a mode of the trainer.")
    else:
        from mtlbench import benchmark as benchmarks

        rows = []
        for name in benchmarks.names():
            cls = benchmarks.get(name)
            rows.append((name, len(cls.tasks), len(cls.metrics), cls.description or cls.paper))
        print(tabulate(rows, headers=["benchmark", "tasks", "metrics", "description"]))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from mtlbench.trainer import run_trial
    from mtlbench.trial import TrialConfig, resolve

    out = ensure_writable(Path(args.out))
    resolved = resolve(
        TrialConfig(
            args.benchmark,
            args.method,
            args.seed,
            _parse_set(args.set),
            task=args.task,
            data_root=args.data_root,
            smoke=args.smoke,
        )
    )
    _check_data(resolved.benchmark, resolved.data_root)
    record = run_trial(resolved, out, device=args.device, progress=not args.quiet)
    _print_record(record, out)
    return 0 if record["status"] == "done" else 1


def _check_data(benchmark: str, data_root: str | None) -> None:
    from mtlbench import benchmark as benchmarks
    from mtlbench.benchmark import DataUnavailable

    cls = benchmarks.get(benchmark)
    missing = cls(cls.default_protocol(), data_root).check_data()
    if missing:
        raise DataUnavailable(f"{benchmark} data not ready: " + " | ".join(missing))


def _print_record(record: dict[str, Any], out: Path) -> None:
    status = record["status"]
    path = out / f"{record['trial_id']}.json"
    if status == "done":
        dm = record.get("delta_m") or {}
        dm_text = f", Δm% {dm['metric_avg']:+.2f}" if dm.get("metric_avg") is not None else ""
        test = ", ".join(f"{k} {v:.4g}" for k, v in list(record["metrics"]["test"].items())[:8])
        print(f"done{dm_text} (epoch {record['selection']['epoch']} selected): {test}")
    elif status == "diverged":
        print(f"diverged at step {record['diverged']['step']}")
    else:
        print(f"failed: {record['error']['type']}: {record['error']['message']}")
    print(f"record: {path}")


def cmd_sweep(args: argparse.Namespace) -> int:
    from mtlbench.executors import describe_plan, make_executor, pending, summary
    from mtlbench.sweep import load_spec

    sweep = load_spec(args.spec)
    if args.results:
        sweep.results = Path(args.results)
    options = dict(sweep.executor)
    if args.executor and args.executor != options.get("kind", "local"):
        options = {"kind": args.executor}  # the spec's options belong to its own executor
    if args.workers:
        options["workers"] = args.workers
    from mtlbench.tune import describe_budget, finalize, run_stages

    finalize(sweep)  # the final runs of tuned methods whose tuning records are all there
    todo = pending(sweep, retry_failed=args.retry_failed)
    if args.dry_run:
        print(describe_plan(sweep, todo))
        if sweep.tuning:
            print(describe_budget(sweep))
        executor = make_executor(options, device=args.device)
        if hasattr(executor, "plan"):
            print(executor.plan(sweep, todo))
        return 0
    ensure_writable(sweep.results)
    for bench in sorted({t.benchmark for t in todo}):
        root = next(t.data_root for t in todo if t.benchmark == bench)
        _check_data(bench, root)
    executor = make_executor(options, device=args.device)
    done = len(sweep.trials) - len(todo)
    print(
        f"sweep {sweep.name}: {len(sweep.trials)} trials, {done} already finished, "
        f"{len(todo)} to run -> {sweep.results}",
        flush=True,
    )
    statuses = run_stages(sweep, executor, retry_failed=args.retry_failed, progress=not args.quiet)
    if statuses:
        print(f"sweep {sweep.name}: {summary(statuses.values())}")
    if sweep.report is not None and not args.no_report:
        from mtlbench.report import build_report

        index = build_report(sweep.results, ensure_writable(sweep.report), sweep.report_formats)
        print(f"report: {index}")
    return 0 if all(s in ("done", "diverged") for s in statuses.values()) else 1


def cmd_report(args: argparse.Namespace) -> int:
    from mtlbench.report import build_report

    results = Path(args.results)
    if not results.is_dir():
        raise ConfigError(f"no results folder at {results}: run a sweep or `mtlbench run` first")
    out = ensure_writable(Path(args.out) if args.out else Path("reports") / results.name)
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    index = build_report(results, out, formats, task_avg=args.task_avg, published=args.published)
    print(f"report: {index}")
    return 0


COMMANDS = {"list": cmd_list, "run": cmd_run, "sweep": cmd_sweep, "report": cmd_report}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtlbench", description="Comparative multi-task learning benchmarks."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list methods or benchmarks")
    p.add_argument("what", choices=["methods", "benchmarks"])
    p.add_argument("--space", action="store_true", help="methods: the tunable search spaces")

    p = sub.add_parser("run", help="run one trial")
    p.add_argument("--benchmark", "-b", required=True)
    p.add_argument("--method", "-m", required=True, help="a method name, or 'stl' with --task")
    p.add_argument("--seed", "-s", type=int, default=0)
    p.add_argument("--task", help="the task of a single-task (stl) run")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method hyper-parameter, protocol option or policy (repeatable)",
    )
    p.add_argument("--out", default="results/runs", help="folder of the run record")
    p.add_argument("--data-root", help="where the benchmark's data lives")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1")
    p.add_argument("--smoke", action="store_true", help="a tiny protocol to check a setup")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    p = sub.add_parser("sweep", help="run a sweep spec (skips finished trials)")
    p.add_argument("spec", help="sweep YAML file")
    p.add_argument("--results", help="override the spec's results folder")
    p.add_argument("--executor", help="override the spec's executor kind (local, slurm)")
    p.add_argument("--workers", type=int, help="local executor: processes")
    p.add_argument("--device", default="auto")
    p.add_argument("--retry-failed", action="store_true", help="run failed trials again")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    p.add_argument("--no-report", action="store_true", help="do not render the spec's report")
    p.add_argument("--quiet", "-q", action="store_true")

    p = sub.add_parser("report", help="render leaderboards and plots from stored records")
    p.add_argument("results", help="results folder (records)")
    p.add_argument("--out", help="report folder (default reports/<results name>)")
    p.add_argument("--format", default="md", help="comma-separated: md,tex,csv,html")
    p.add_argument("--task-avg", action="store_true", help="also the task-averaged Δm%%")
    p.add_argument("--published", action="store_true", help="show the LDC-MTL paper's numbers")
    for extend in EXTENSIONS:
        extend(sub)
    return parser


# Commands contributed by other modules (status, data, bench) register here.
EXTENSIONS: list[Any] = []


def _load_extensions() -> None:
    EXTENSIONS.clear()  # main() may run more than once in one process (tests, notebooks)
    for module in ("mtlbench.status", "mtlbench.data_cli", "mtlbench.bench"):
        try:
            mod = __import__(module, fromlist=["add_command"])
        except ModuleNotFoundError as error:
            if error.name == module:
                continue
            raise
        if hasattr(mod, "add_command"):
            EXTENSIONS.append(mod.add_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status (2 for a configuration error). Ctrl-C
    propagates as ``KeyboardInterrupt`` (so that a caller such as pytest stops); the console
    script :func:`console` turns it into exit status 130."""
    _load_extensions()
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None) or COMMANDS[args.command]
    try:
        return handler(args)
    except ConfigError as error:
        print(f"mtlbench: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        os._exit(0)


def console() -> None:
    """The ``mtlbench`` console script: :func:`main`, with Ctrl-C as exit status 130."""
    try:
        status = main()
    except KeyboardInterrupt:
        print("mtlbench: interrupted", file=sys.stderr)
        status = 130
    sys.exit(status)


if __name__ == "__main__":
    console()
