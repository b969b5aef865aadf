"""``mtlbench data check | fixture | prepare``: what a benchmark's data needs, tiny fixtures in the
real on-disk formats, and offline preparation (QM9 from the ``qm9pack`` package)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mtlbench import benchmark as benchmarks
from mtlbench.registry import ConfigError, unknown

PREPARERS = {("qm9", "qm9pack"): "mtlbench.datasets.qm9:prepare_from_qm9pack"}


def cmd_check(args: argparse.Namespace) -> int:
    cls = benchmarks.get(args.name)
    bench = cls(cls.default_protocol(), args.root)
    missing = bench.check_data()
    if not missing:
        print(f"{args.name}: data ready in {bench.data_root}")
        return 0
    print(f"{args.name}: data missing in {bench.data_root}:")
    for line in missing:
        print(f"  - {line}")
    return 1


def cmd_fixture(args: argparse.Namespace) -> int:
    cls = benchmarks.get(args.name)
    root = Path(args.dir)
    cls.write_fixture(root)
    print(f"{args.name}: fixture written to {root}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    key = (args.name, args.source)
    if key not in PREPARERS:
        valid = [f"{n} --from {s}" for n, s in PREPARERS]
        raise unknown("data preparation", f"{args.name} --from {args.source}", valid)
    module, _, func = PREPARERS[key].partition(":")
    prepare = getattr(__import__(module, fromlist=[func]), func)
    cls = benchmarks.get(args.name)
    root = Path(args.root) if args.root else cls(cls.default_protocol()).data_root
    summary = prepare(root, limit=args.limit, progress=not args.quiet)
    print(f"{args.name}: prepared in {root}: {summary}")
    return 0


def add_command(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="check, fixture or prepare a benchmark's data")
    verbs = data.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("check", help="say what is missing, where to get it, where to put it")
    p.add_argument("name")
    p.add_argument("--root", help="data folder (default $MTLBENCH_DATA/<name>)")
    p.set_defaults(handler=cmd_check)

    p = verbs.add_parser("fixture", help="write a tiny dataset in the real on-disk format")
    p.add_argument("name")
    p.add_argument("dir")
    p.set_defaults(handler=cmd_fixture)

    p = verbs.add_parser("prepare", help="build a dataset offline (qm9 --from qm9pack)")
    p.add_argument("name")
    p.add_argument("--from", dest="source", required=True)
    p.add_argument("--root", help="data folder (default $MTLBENCH_DATA/<name>)")
    p.add_argument("--limit", type=int, help="only the first N molecules (for a quick check)")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(handler=cmd_prepare)


__all__ = ["add_command", "ConfigError"]
