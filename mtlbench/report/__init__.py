"""Reports from stored run records: leaderboards, runtime tables and figures, in one folder.

``build_report(results_dir, out_dir, formats)`` reads every record under ``results_dir`` (and
any ``bench*.csv`` written by ``mtlbench bench``) and writes ``out_dir/index.md`` (plus
``index.html``), ``figures/*.png`` and, on request, ``tables/*.tex`` (booktabs) and
``tables/*.csv`` (raw numbers). Nothing is typed in: every number comes from the records, from a
benchmark's published reference, or from the LDC-MTL paper's numbers shipped as data.

The package, in the order of the data (``docs/reports.md`` has the same map for users):

* :mod:`.base` - the shared types (``Col``, ``BenchInfo``, ``RefInfo``, ``Significance``,
  ``Across``, ``Board``), at the bottom: it imports no other module of the package
* :mod:`.load` - records -> one frame (one row per trial) + per-epoch curves; ``bench*.csv``
* :mod:`.benchmarks` - each benchmark's metrics (task, direction) and published reference
* :mod:`.variants` - runs with different settings are labelled apart, never averaged together
  (tuned values left out of the labels)
* :mod:`.reference` - the Δm% reference of each variant (through :mod:`mtlbench.references`)
* :mod:`.leaderboard` - pure numbers: means, sample stds, Δm% per run, ranks, ratios to LS
* :mod:`.significance` - CIs, P(improvement) and Holm-corrected marks (:mod:`mtlbench.stats`)
* :mod:`.missing` - runs without a result and why
* :mod:`.selected` - the configurations the tuning stages selected, with their declared ranges
* :mod:`.published` - the LDC-MTL paper's numbers beside ours
* :mod:`.render`, :mod:`.tables` - numbers to text, display tables to md / html / tex
* :mod:`.document`, :mod:`.page` - the page's blocks; ``Report``, the state of the report
  being written
* :mod:`.sections`, :mod:`.build` - the page's sections, and :func:`build_report`
* :mod:`.uncertainty` - across benchmarks: mean ranks with CIs, CD diagram, profiles
* :mod:`.figures`, :mod:`.dynamics`, :mod:`.toy` - seaborn / matplotlib figures (imported only
  while a report is built, so that importing this package does not import matplotlib; those
  imports inside functions are marked as deferring an optional heavy dependency)
* :mod:`.workers` - the figures drawn in forked worker processes (reports of 1,000 records or
  more) while the tables are built, else in the report's process
"""

from mtlbench.registry import ConfigError
from mtlbench.report.build import FORMATS, SkippedRecordWarning, build_report
from mtlbench.report.leaderboard import Board, compute_board, cross_benchmark, leaderboard
from mtlbench.report.load import Results, read_bench_csv, read_results
from mtlbench.report.published import PUBLISHED_CSV, load_published, published_comparison
from mtlbench.report.render import render
from mtlbench.report.tables import leaderboard_tables
from mtlbench.report.variants import label_variants

__all__ = [
    "PUBLISHED_CSV",
    "Board",
    "ConfigError",
    "FORMATS",
    "Results",
    "SkippedRecordWarning",
    "build_report",
    "compute_board",
    "cross_benchmark",
    "label_variants",
    "leaderboard",
    "leaderboard_tables",
    "load_published",
    "published_comparison",
    "read_bench_csv",
    "read_results",
    "render",
]
