"""Time ``build_report`` on 10,000 records (a benchmark, not a test: its number goes into
docs/reports.md). Run: ``.venv/bin/python tests/bench_report.py [--results DIR]``.

Prints the wall time, the CPU time of this process and of the figure workers it forked (the
machine's load average beside them: on a busy machine wall time says little, CPU time more)."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from report_records import ten_thousand_records

from mtlbench.report import build_report


def _children_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", help="an existing folder of records (default: generate)")
    parser.add_argument("--out", help="the report folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(args.results) if args.results else Path(tmp) / "results"
        if not args.results:
            ten_thousand_records(results)
        load = os.getloadavg()[0]
        cpu0, workers0, t0 = time.process_time(), _children_cpu(), time.perf_counter()
        build_report(
            results,
            Path(args.out) if args.out else Path(tmp) / "report",
            ["md", "csv", "tex", "html"],
            task_avg=True,
            published=True,
        )
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        workers = _children_cpu() - workers0
        files = sum(1 for _ in results.rglob("*.json"))
        print(
            f"build_report on {files} records: {wall:.2f} s wall, {cpu:.2f} s CPU here + "
            f"{workers:.2f} s CPU in figure workers, load {load:.1f}"
        )


if __name__ == "__main__":
    main()
