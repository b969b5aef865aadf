"""The ``mtlbench bench`` command: arguments, the printed table and the CSV."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import torch

from mtlbench import plugins
from mtlbench.bench.run import run_bench
from mtlbench.cli import add_plugin_option
from mtlbench.method import names
from mtlbench.registry import ConfigError


def format_table(rows: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    def f(x: Any, spec: str) -> str:
        return "—" if x is None else format(x, spec)

    table = [
        (
            r["workload"],
            r["K"],
            r["method"],
            r["cost"],
            f(r["step_median_s"] * 1e3, ".2f"),
            f(r["ratio_to_ls"], ".3f"),
            f(r["ratio_min_to_ls"], ".3f"),
            f(r["speedup_vs_sequential"], ".2f"),
            f(r["solver_share"], ".1%"),
            f(r["weights_share"], ".1%"),
            f(r["peak_ratio_to_ls"], ".2f"),
            f(r["update_rel_err"], ".1e"),
            f(r["ratio_to_peer"], ".2f"),
            f(r["peer_update_rel_diff"], ".1e"),
        )
        for r in rows
    ]
    return tabulate(
        table,
        headers=[
            "workload",
            "K",
            "method",
            "cost",
            "ms/step",
            "× LS",
            "× LS (min)",
            "batched speed-up",
            "solver share",
            "solve (G) share",
            "peak mem × LS",
            "batched vs seq err",
            "× TorchJD",
            "update vs ours",
        ],
    )


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def default_out(workload: str) -> Path:
    """Where ``mtlbench bench`` writes by default: ``results/bench/bench-<workload>.csv``, one file
    per workload, so that the runs of several workloads sit side by side and ``mtlbench report
    results`` (which reads every ``bench*.csv`` under the results folder) draws all of them."""
    return Path("results") / "bench" / f"bench-{workload}.csv"


def cmd_bench(args: argparse.Namespace) -> int:
    given = plugins.parse_all(args.plugin)
    try:
        tasks = (
            [int(t) for t in args.tasks.split(",")]
            if args.tasks
            else ([2] if args.workload in ("multidigits", "toy") else [2, 4, 10, 20, 40])
        )
    except ValueError:
        raise ConfigError(f"--tasks expects comma-separated integers, got {args.tasks!r}") from None
    if any(k < 1 for k in tasks):
        raise ConfigError(f"--tasks must be positive, got {args.tasks!r}")
    if args.methods:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    else:
        methods = names()
    if args.cost:
        import mtlbench.methods  # noqa: F401  (registers the built-in methods)
        from mtlbench.method import METHODS

        methods = [m for m in methods if m in names() and METHODS.get(m).cost == args.cost]
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run_bench(
        args.workload,
        tasks,
        methods,
        reps=args.reps,
        warmup=args.warmup,
        device=args.device,
        sequential=not args.no_sequential,
        gramian=args.gramian,
        next_step=args.next_step,
        peers=[p.strip() for p in args.peers.split(",") if p.strip()] if args.peers else [],
        batch_size=args.batch_size,
        jacobian_chunk=args.jacobian_chunk,
        memory=args.memory,
        plugins=given,
    )
    print(format_table(rows))
    out = Path(args.out) if args.out else default_out(args.workload)
    write_csv(rows, out)
    print(f"saved: {out}")
    return 0


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="per-step time and memory of methods relative to LS")
    p.add_argument("--workload", default="mlp", help="mlp, celeba, multidigits or toy")
    p.add_argument("--tasks", help="comma-separated K values (default 2,4,10,20,40)")
    p.add_argument("--methods", help="comma-separated methods (default: all; LS is always run)")
    p.add_argument("--cost", choices=["O(1)", "O(K)"], help="only the methods of this cost")
    p.add_argument("--reps", type=int, default=10, help="timed steps per method (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--batch-size", type=int, help="batch size (default 256)")
    p.add_argument(
        "--jacobian-chunk", type=int, help="tasks per vmapped backward (default: all K at once)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--memory",
        action="store_true",
        help="on the CPU, also measure each method's extra peak memory (a process each)",
    )
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--no-sequential", action="store_true", help="skip the K-backward comparison")
    p.add_argument(
        "--gramian",
        action="store_true",
        help="also each Gramian method's Gramian-only path (jacobian_mode=gramian)",
    )
    p.add_argument(
        "--next-step",
        action="store_true",
        help="also FAMO fed the next step's losses instead of a post-step forward",
    )
    p.add_argument(
        "--peers",
        help="peer libraries to run side by side on the methods they share: torchjd "
        "(install the extra: pip install 'mtlbench[peers]')",
    )
    p.add_argument(
        "--out", help="CSV path (default results/bench/bench-<workload>.csv, read by the report)"
    )
    add_plugin_option(p)
    p.set_defaults(handler=cmd_bench)
