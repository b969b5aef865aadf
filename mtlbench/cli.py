"""The ``mtlbench`` command line: list, run, sweep, report, status, data, bench.

Bad input (an unknown name, a mistyped hyper-parameter, a malformed sweep file, an unwritable
folder, missing data) prints one line starting with ``mtlbench: error:`` and exits with 2; it
never shows a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtlbench import manifest, plugins
from mtlbench.registry import ConfigError

PLUGIN_HELP = (
    "a plug-in: a module name or a .py file whose import registers methods or benchmarks "
    "(repeatable; installed plug-ins are found by their entry points)"
)


def add_plugin_option(parser: argparse.ArgumentParser) -> None:
    """``--plugin MODULE_OR_FILE`` (repeatable), for every command that reads the registries."""
    parser.add_argument(
        "--plugin", action="append", default=[], metavar="MODULE_OR_FILE", help=PLUGIN_HELP
    )


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML scalars (``0.1``, ``true``, ``[1, 2]``)."""
    import yaml  # deferred: 0.1 s of regexes that --help, list and status do not need

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
    """Create ``folder`` if needed and check that files can be written in it; the error names
    the nearest existing folder that refuses (``/proc`` for ``--out /proc/x``)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        base = next((p for p in (folder, *folder.parents) if p.exists()), folder)
        why = f"{base} is a file, not a folder" if base.is_file() else f"{base} is not writable"
        raise ConfigError(
            f"cannot write to {folder}: {why} ({error.strerror or error}); choose another folder"
        ) from None
    return folder


def _error_lines(error: ConfigError) -> list[str]:
    """One line per problem: a spec's problems each with its file and line, a trial's bad
    settings each on its own."""
    problems = getattr(error, "problems", None)
    if problems is not None:
        return list(problems)
    return [str(e) for e in getattr(error, "errors", [error])]


# -- commands ---------------------------------------------------------------------------------
def _fit_table(rows: list[tuple[str, ...]], headers: tuple[str, ...], width: int) -> str:
    """A plain table whose last column wraps to fit ``width`` characters (at least 20 wide)."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers) - 1)]
    indent = sum(widths) + 2 * len(widths)
    room = max(20, width - indent)
    lines = []
    for row in [headers, tuple("-" * w for w in widths) + ("-" * min(room, 40),), *rows]:
        head = "".join(f"{str(cell):<{w}}  " for cell, w in zip(row, widths, strict=False))
        wrapped = textwrap.wrap(str(row[-1]), room, break_on_hyphens=False) or [""]
        lines.append((head + wrapped[0]).rstrip())
        lines.extend((" " * indent + more).rstrip() for more in wrapped[1:])
    return "\n".join(lines)


def _method_text(doc: str) -> str:
    """A method's docstring as plain text (RST ``::`` block markers become ``:``)."""
    return doc.replace("::\n", ":\n")


def cmd_list(args: argparse.Namespace) -> int:
    """``mtlbench list methods|benchmarks``, from the cached manifest (:mod:`mtlbench.manifest`):
    torch and the implementations are imported only to rebuild a stale cache, or for
    ``--space`` (the search spaces are objects of the methods' classes)."""
    width = shutil.get_terminal_size((100, 24)).columns
    given = tuple(plugins.parse(ref) for ref in args.plugin)  # imported by the manifest
    if args.what == "methods" and getattr(args, "space", False):
        from tabulate import tabulate

        plugins.load(given)
        from mtlbench.method import names
        from mtlbench.tune import space_rows

        print(tabulate(space_rows(names()), headers=["method", "hyper-parameter", "space"]))
        print("\nDeclared in each method's search_space; the protocol's lr for every method.")
        return 0
    catalog = manifest.load(plugins.active(given))
    if args.what == "methods":
        methods = [catalog.methods[n] for n in catalog.method_names()]
        if args.long:
            for m in methods:
                print(f"{m.name}  ({m.cost}, needs {m.needs})\n{'=' * len(m.name)}")
                print(f"{m.summary}\nPaper: {m.paper}\n\n{_method_text(m.doc)}\n")
            return 0
        rows = [(m.name, m.cost, m.needs, m.summary) for m in methods]
        print(_fit_table(rows, ("method", "cost", "needs", "summary"), width))
        print()
        print(
            textwrap.fill(
                f"{len(rows)} methods; 'stl' (single-task runs) is a mode of the trainer. "
                "Papers and full descriptions: mtlbench list methods --long",
                width,
            )
        )
        return 0
    rows = []
    for name in catalog.benchmark_names():
        b = catalog.benchmarks[name]
        text = b.description or b.paper
        if args.long:
            text = f"{text}. {b.paper}"
        rows.append((name, str(len(b.tasks)), str(len(b.metrics)), text))
    print(_fit_table(rows, ("benchmark", "tasks", "metrics", "description"), width))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from mtlbench.trainer import run_trial
    from mtlbench.trial import TrialConfig, resolve

    given = plugins.parse_all(args.plugin)  # before the names are validated
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
    out = ensure_writable(Path(args.out))  # after validation: a rejected run writes nothing
    _check_data(resolved.benchmark, resolved.data_root)
    record = run_trial(resolved, out, device=args.device, progress=not args.quiet, plugins=given)
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
        if not dm_text and record["config"].get("mode") == "mtl":
            print(_no_delta_m_hint(record["config"]["benchmark"], out))
    elif status == "diverged":
        print(f"diverged at step {record['diverged']['step']}")
    else:
        print(f"failed: {record['error']['type']}: {record['error']['message']}")
    print(f"record: {path}")


def _no_delta_m_hint(benchmark: str, out: Path) -> str:
    """One line: why a run has no Δm% (no published reference, no STL records in ``out``) and
    the commands that give it one."""
    from mtlbench import benchmark as benchmarks
    from mtlbench.records import iter_records

    cls = benchmarks.get(benchmark)
    have = {
        r["config"].get("task")
        for r in iter_records(out)
        if r.get("status") == "done"
        and r["config"].get("benchmark") == benchmark
        and r["config"].get("mode") == "stl"
    }
    missing = [t for t in cls.tasks if t not in have]
    if not missing:
        return f"no Δm%: the stl records in {out} do not cover this run's metrics or protocol"
    tasks = missing[0] if len(missing) == 1 else "TASK"
    each = "" if len(missing) == 1 else f" for TASK in {', '.join(missing)}"
    return (
        f"no Δm%: {benchmark} has no published single-task reference and {out} has no stl run "
        f"of {', '.join(missing)}; run `mtlbench run -b {benchmark} -m stl --task {tasks} "
        f"--out {out}`{each} (same protocol --set options), then `mtlbench report {out}`"
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    from mtlbench.run.base import make_executor
    from mtlbench.run.driver import SweepRun, succeeded
    from mtlbench.sweep import load_spec

    given = plugins.parse_all(args.plugin)  # before the spec's names are validated
    only = [m.strip() for item in args.only or [] for m in item.split(",") if m.strip()]
    if args.only is not None and not only:
        raise ConfigError("--only needs method names (repeatable, or a comma-separated list)")
    sweep = load_spec(args.spec, only=only or None, results=args.results)
    sweep.plugins += tuple(p for p in given if p not in sweep.plugins)
    options = sweep.executor.override(kind=args.executor, workers=args.workers)
    driver = SweepRun(sweep, make_executor(options, device=args.device), args.retry_failed)
    if args.dry_run:
        print(driver.describe())
        return 0
    ensure_writable(sweep.results)
    statuses = driver.run(progress=not args.quiet)
    if sweep.report is not None and not args.no_report:
        from mtlbench.report import build_report

        # a sweep that extends a leaderboard reports its methods beside the leaderboard's
        folders = [sweep.base.results, sweep.results] if sweep.base else [sweep.results]
        index = build_report(folders, ensure_writable(sweep.report), sweep.report_formats)
        print(f"report: {index}")
    return 0 if succeeded(statuses) else 1


def cmd_report(args: argparse.Namespace) -> int:
    """Write the report; name every skipped (corrupt or foreign) JSON file on stderr, and with
    ``--strict`` exit 1 when there was one (the report is written all the same)."""
    import warnings

    from mtlbench.report import SkippedRecordWarning, build_report

    plugins.parse_all(args.plugin)
    folders = [Path(r) for r in args.results]
    for results in folders:
        if not results.is_dir():
            raise ConfigError(
                f"no results folder at {results}: run a sweep or `mtlbench run` first"
            )
    if args.timing_reference and not Path(args.timing_reference).is_dir():
        raise ConfigError(
            f"no results folder at {args.timing_reference} (--timing-reference): run LS there "
            "first, e.g. mtlbench sweep SPEC --only ls --results FOLDER"
        )
    name = "+".join(f.name for f in folders)
    out = ensure_writable(Path(args.out) if args.out else Path("reports") / name)
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SkippedRecordWarning)
        index = build_report(
            folders if len(folders) > 1 else folders[0],
            out,
            formats,
            task_avg=args.task_avg,
            published=args.published,
            timing_reference=args.timing_reference,
        )
    skipped = [w for w in caught if issubclass(w.category, SkippedRecordWarning)]
    for w in skipped:
        print(f"mtlbench: warning: {w.message}", file=sys.stderr)
    for w in caught:
        if not issubclass(w.category, SkippedRecordWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    print(f"report: {index}")
    if skipped and args.strict:
        print(
            f"mtlbench: error: {len(skipped)} file(s) under "
            f"{', '.join(map(str, folders))} are not valid records (--strict)",
            file=sys.stderr,
        )
        return 1
    return 0


COMMANDS = {"list": cmd_list, "run": cmd_run, "sweep": cmd_sweep, "report": cmd_report}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtlbench", description="Comparative multi-task learning benchmarks."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list methods or benchmarks")
    p.add_argument("what", choices=["methods", "benchmarks"])
    p.add_argument("--long", action="store_true", help="papers and full descriptions")
    p.add_argument("--space", action="store_true", help="methods: the tunable search spaces")
    add_plugin_option(p)

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
    add_plugin_option(p)

    p = sub.add_parser("sweep", help="run a sweep spec (skips finished trials)")
    p.add_argument("spec", help="sweep YAML file")
    p.add_argument("--results", help="override the spec's results folder")
    p.add_argument(
        "--only",
        action="append",
        metavar="METHOD",
        help="run only these methods (repeatable, or a comma list) with the spec's protocol, "
        "tuning and seeds, into a folder of their own (--results), reading the references "
        "from the spec's results: nothing of the spec's runs again (docs/tuning.md)",
    )
    p.add_argument("--executor", help="override the spec's executor kind (local, slurm)")
    p.add_argument("--workers", type=int, help="local executor: processes")
    p.add_argument("--device", default="auto")
    p.add_argument("--retry-failed", action="store_true", help="run failed trials again")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    p.add_argument("--no-report", action="store_true", help="do not render the spec's report")
    p.add_argument("--quiet", "-q", action="store_true")
    add_plugin_option(p)

    p = sub.add_parser("report", help="render leaderboards and plots from stored records")
    p.add_argument(
        "results",
        nargs="+",
        help="results folder (records); several: one leaderboard per benchmark, when they are "
        "the same comparison (a leaderboard and a sweep run against it with --only)",
    )
    p.add_argument(
        "--timing-reference",
        metavar="FOLDER",
        help="LS runs on this machine: the time x LS of runs made elsewhere than the "
        "leaderboard's LS (docs/reports.md)",
    )
    p.add_argument("--out", help="report folder (default reports/<results names joined by +>)")
    p.add_argument("--format", default="md", help="comma-separated: md,tex,csv,html")
    p.add_argument("--task-avg", action="store_true", help="also the task-averaged Δm%%")
    p.add_argument("--published", action="store_true", help="show the LDC-MTL paper's numbers")
    p.add_argument(
        "--strict", action="store_true", help="exit 1 when a JSON file is not a valid record"
    )
    add_plugin_option(p)
    for extend in EXTENSIONS:
        extend(sub)
    for name, (_, help_line) in LAZY_COMMANDS.items():
        if name not in sub.choices:  # listed by name only: its module is not loaded
            sub.add_parser(name, help=help_line)
    return parser


# Commands defined in other modules: name -> (module with ``add_command(subparsers)``, help
# line). The parser lists each by name and help line, and imports a module only when its
# command runs, so that ``mtlbench --help`` loads none of them (bench and data need torch).
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "status": (
        "mtlbench.run.status_cli",
        "done / running / pending / failed trials of a results folder",
    ),
    "data": ("mtlbench.data_cli", "check, fixture or prepare a benchmark's data"),
    "bench": ("mtlbench.bench", "per-step time and memory of methods relative to LS"),
    "check": ("mtlbench.check_cli", "the conformance kit on a method or a benchmark"),
    "new": ("mtlbench.scaffold", "a plug-in package for your own method or benchmark"),
}

# The ``add_command`` functions loaded for this call (the command's own, see _load_extensions).
EXTENSIONS: list[Any] = []


def _command_word(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option: the
    top-level parser has no option that takes a value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def _load_extensions(command: str | None = None) -> None:
    """Load the ``add_command`` of ``command`` when another module defines it; the other
    such commands stay names in the parser (see :data:`LAZY_COMMANDS`)."""
    EXTENSIONS.clear()  # main() may run more than once in one process (tests, notebooks)
    if command not in LAZY_COMMANDS:
        return
    module = importlib.import_module(LAZY_COMMANDS[command][0])
    EXTENSIONS.append(module.add_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status (2 for a configuration error). Ctrl-C
    propagates as ``KeyboardInterrupt`` (so that a caller such as pytest stops); the console
    script :func:`console` turns it into exit status 130."""
    argv = sys.argv[1:] if argv is None else list(argv)
    _load_extensions(_command_word(argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None) or COMMANDS[args.command]
    try:
        return handler(args)
    except ConfigError as error:
        for line in _error_lines(error):
            print(f"mtlbench: error: {line}", file=sys.stderr)
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
