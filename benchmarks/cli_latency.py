"""The command line's own latency: the median wall time (and the median CPU time, user +
system, which a busy machine inflates less) of ``mtlbench --help``, ``status``,
``list methods`` and ``list benchmarks`` over several runs, each a fresh process, and the
heavy libraries each one imported (docs/performance.md, "The command line's own latency").

    python benchmarks/cli_latency.py [--runs 7] [--results results/multidigits]

The manifest cache (:mod:`mtlbench.manifest`) is warmed by one untimed ``list`` first; a cold
run (an edited method, a new checkout) pays the imports once.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "numpy", "pandas", "scipy", "yaml", "tabulate")
PROBE = (
    "import sys, contextlib, io\n"
    "from mtlbench.cli import main\n"
    "with contextlib.redirect_stdout(io.StringIO()):\n"
    "    try:\n"
    "        main(sys.argv[1:])\n"
    "    except SystemExit:\n"
    "        pass\n"
    f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules) or '-')\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--results", default="results/multidigits", help="folder for status")
    args = parser.parse_args()
    commands = [["--help"], ["status", args.results], ["list", "methods"], ["list", "benchmarks"]]
    script = [sys.executable, "-m", "mtlbench.cli"]
    subprocess.run([*script, "list", "methods"], capture_output=True, check=True)  # warm cache
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'command':<38}{'median s':>9}{'min s':>7}{'CPU s':>7}  imported")
    for command in commands:
        times, cpu = [], []
        for _ in range(args.runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run([*script, *command], capture_output=True, check=True)
            times.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, *command], capture_output=True, text=True, check=True
        )
        name = "mtlbench " + " ".join(command)
        print(
            f"{name:<38}{statistics.median(times):>9.2f}{min(times):>7.2f}"
            f"{statistics.median(cpu):>7.2f}  {probe.stdout.strip()}"
        )


if __name__ == "__main__":
    main()
