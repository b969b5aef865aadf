"""``mtlbench bench``: per-step time and peak memory of every method relative to LS, and side
by side with a peer library (TorchJD) on the methods it shares.

Every contender gets its own copy of the same model, and all of them step on the same batches,
interleaved in one process (round-robin, each round starting one contender later), after
warm-up, so that machine noise hits all alike; times are CUDA-synchronized on GPU. Reported:
the median, quartiles and minimum of the per-step time, the ratios of medians and of minima to
LS, the peak memory of a step relative to LS (on CUDA; on the CPU with ``memory``, a process
per contender), the cost of the method's own computation on a fixed Jacobian (``aggregate``, and
for Gramian methods the K x K solve alone), for O(K) methods the same step with the
``sequential`` Jacobian (K backward passes) and the relative error between the two updates,
with ``gramian`` the Gramian-only engine path, and with ``peers`` the peer's steps, their time
relative to mtlbench's and the relative difference of their first update from ours. The CSV
goes by default to ``results/bench/bench-<workload>.csv``, where ``mtlbench report results``
finds it.

Modules, lowest first: :mod:`~mtlbench.bench.spec` (what a contender runs),
:mod:`~.workloads` (the models and batches), :mod:`~.peers` (TorchJD), :mod:`~.measure`
(contenders, timing, memory), :mod:`~.run` (the interleaved run and its rows), :mod:`~.command`
(the command line). See docs/performance.md.
"""

from mtlbench.bench.command import add_command, default_out, format_table, write_csv
from mtlbench.bench.measure import cpu_step_memory, solver_time, update_error
from mtlbench.bench.run import run_bench
from mtlbench.bench.spec import Spec
from mtlbench.bench.workloads import (
    WORKLOADS,
    Workload,
    celeba_workload,
    mlp_workload,
    multidigits_workload,
    toy_workload,
)
from mtlbench.registry import ConfigError

__all__ = [
    "WORKLOADS",
    "ConfigError",
    "Spec",
    "Workload",
    "add_command",
    "celeba_workload",
    "cpu_step_memory",
    "default_out",
    "format_table",
    "mlp_workload",
    "multidigits_workload",
    "run_bench",
    "solver_time",
    "toy_workload",
    "update_error",
    "write_csv",
]
