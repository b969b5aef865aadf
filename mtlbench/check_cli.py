"""``mtlbench check method NAME`` and ``mtlbench check benchmark NAME``: the conformance kit
(:mod:`mtlbench.conformance`) on one method or benchmark, before any cluster hour is spent.

Exit 0 with a one-line summary when everything conforms; 1 with one line per finding
otherwise; 2 (through :func:`mtlbench.cli.main`) for an unknown name, with the valid ones.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from mtlbench import benchmark as benchmarks
from mtlbench import plugins
from mtlbench.cli import _parse_set, add_plugin_option
from mtlbench.conformance import check_method
from mtlbench.conformance.benchmark import check_benchmark
from mtlbench.conformance.findings import Finding
from mtlbench.method import METHODS, names


def _report(what: str, findings: list[Finding], info: list[str]) -> int:
    for line in info:
        print(f"  {line}")
    if not findings:
        print(f"{what}: conforms")
        return 0
    print(f"{what}: {len(findings)} problem(s):")
    for finding in findings:
        print(f"  - {finding.check}: {finding.reason}")
    return 1


def _origin(module: str, given: tuple[plugins.Plugin, ...]) -> list[str]:
    """``plug-in: ...`` (module, distribution and version, digest) when a plug-in's code
    defines ``module``; nothing for a built-in."""
    found = plugins.owner(module, plugins.active(given))
    if found is None:
        return []
    return [f"plug-in: {plugins.describe(plugins.provenance([found])[0])}"]


def cmd_check_method(args: argparse.Namespace) -> int:
    given = plugins.parse_all(args.plugin)
    findings = check_method(args.name, **_parse_set(args.set or []))
    module = METHODS.get(args.name).__module__ if args.name in names() else ""
    return _report(f"method {args.name}", findings, _origin(module, given))


def cmd_check_benchmark(args: argparse.Namespace) -> int:
    given = plugins.parse_all(args.plugin)
    origin = _origin(benchmarks.get(args.name).__module__, given)
    with tempfile.TemporaryDirectory(prefix="mtlbench-check-") as scratch:
        findings, info = check_benchmark(
            args.name,
            args.root,
            workdir=Path(scratch),
            device=args.device,
            fixture_only=args.fixture,
        )
    return _report(f"benchmark {args.name}", findings, origin + info)


def add_command(sub: argparse._SubParsersAction) -> None:
    check = sub.add_parser("check", help="the conformance kit on a method or a benchmark")
    what = check.add_subparsers(dest="what", required=True)
    p = what.add_parser(
        "method", help="shapes, finiteness and declared properties on hard inputs, state"
    )
    p.add_argument("name")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a hyper-parameter")
    add_plugin_option(p)
    p.set_defaults(handler=cmd_check_method)
    p = what.add_parser(
        "benchmark", help="declarations, data, one smoke epoch, the reference of Δm%%"
    )
    p.add_argument("name")
    p.add_argument("--root", help="data folder (default $MTLBENCH_DATA/<name>)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--fixture", action="store_true", help="check on the fixture only (data not downloaded)"
    )
    add_plugin_option(p)
    p.set_defaults(handler=cmd_check_benchmark)
