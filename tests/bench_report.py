"""Time ``build_report`` on 10,000 records (a benchmark, not a test: its number goes into
docs/reports.md). Run: ``.venv/bin/python tests/bench_report.py [--results DIR]``."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from report_records import ten_thousand_records

from mtlbench.report import build_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", help="an existing folder of records (default: generate)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(args.results) if args.results else Path(tmp) / "results"
        if not args.results:
            ten_thousand_records(results)
        load = os.getloadavg()[0]
        cpu0, t0 = time.process_time(), time.perf_counter()
        build_report(
            results,
            Path(tmp) / "report",
            ["md", "csv", "tex", "html"],
            task_avg=True,
            published=True,
        )
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        files = sum(1 for _ in results.rglob("*.json"))
        print(
            f"build_report on {files} records: {wall:.2f} s wall, {cpu:.2f} s CPU, load {load:.1f}"
        )


if __name__ == "__main__":
    main()
