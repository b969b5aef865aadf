"""Small-sample inference on arrays of per-seed scores: what a leaderboard of 3-20 seeds can
and cannot say (issue 21, "statistics that can answer at the sample sizes used").

* :func:`t_interval`: Student's t interval of a mean, exact coverage for normal scores at
  every n >= 2 (the percentile bootstrap of 3 seeds is the seeds' range, about 75%).
* :func:`paired_test` and :func:`smallest_p`: the paired test of one comparison, chosen so that
  it can reach the threshold it must pass (the exact Wilcoxon test cannot go below
  ``2 / 2**n``), and the smallest p each test can give.
* :func:`detectable_difference` and :func:`seeds_to_detect`: the power analysis of the paired
  t-test (Cohen 1988, "Statistical Power Analysis for the Behavioral Sciences", ch. 2) with the
  noncentral t distribution: the smallest difference a table can detect, and the seeds needed.

:mod:`mtlbench.stats` applies them to frames of records.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize
from scipy import stats as st

#: The power at which :func:`mtlbench.stats.minimal_detectable_difference` states the
#: smallest difference the table's test can detect.
POWER = 0.8


def t_interval(x: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student's t interval of the mean of ``x``: ``mean ± t_{(1 + c) / 2, n - 1} s / sqrt(n)``.

    Its coverage is exact for normal scores at every n >= 2, where the percentile bootstrap of
    3 seeds has 10 distinct resample means and its "95%" interval is the seeds' range (about
    75% coverage). NaN for fewer than two values; a point for constant ones."""
    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    half = float(st.t.ppf((1 + confidence) / 2, len(x) - 1) * np.std(x, ddof=1) / math.sqrt(len(x)))
    return float(x.mean()) - half, float(x.mean()) + half


def smallest_p(test: str, n: int) -> float:
    """The smallest two-sided p-value ``test`` can return on ``n`` pairs: 0 for the paired t
    (its statistic is unbounded), ``2 / 2**n`` for the exact Wilcoxon signed-rank test (all
    differences of one sign), 1 for identical samples, NaN without a test."""
    if test == "wilcoxon":
        return 2.0 / 2.0**n
    return {"paired-t": 0.0, "identical": 1.0}.get(test, math.nan)


def paired_test(x: np.ndarray, y: np.ndarray, threshold: float = 0.05) -> tuple[str, float]:
    """Two-sided paired test of x against y (same seeds, same order): the test's name and p.

    The exact Wilcoxon signed-rank test (no normality assumption) when it can reach
    ``threshold`` on these many pairs (``2 / 2**n < threshold``), else the paired t-test, which
    can reach any threshold from two pairs on. Pass the strictest level the p-value must pass:
    Holm's first, ``alpha / m`` for m comparisons; with ``alpha = 0.05`` and m = 9 the rank test
    takes over from 9 pairs (2 / 2**8 = 0.0078 > 0.0056 > 2 / 2**9). Identical samples give
    p = 1; fewer than two pairs give NaN.
    """
    d = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    if len(d) < 2:
        return "none", math.nan
    if np.all(d == 0):
        return "identical", 1.0
    if smallest_p("wilcoxon", len(d)) < threshold:
        return "wilcoxon", float(st.wilcoxon(x, y).pvalue)
    p = float(st.ttest_rel(x, y).pvalue)
    return "paired-t", 0.0 if math.isnan(p) else p  # constant nonzero difference: exact


def detectable_difference(spread: float, n: int, level: float, power: float = POWER) -> float:
    """The smallest true mean difference a two-sided paired t-test at ``level`` detects with
    probability ``power`` on ``n`` pairs whose differences have standard deviation ``spread``:
    the d with ``P(|T| > t_{1 - level / 2, n - 1}) = power`` for T noncentral t with ``n - 1``
    degrees of freedom and noncentrality ``d sqrt(n) / spread`` (Cohen 1988, ch. 2). NaN below
    two pairs or without a finite spread; 0 for a zero spread."""
    if n < 2 or not math.isfinite(spread):
        return math.nan
    if spread == 0:
        return 0.0
    df = n - 1
    crit = float(st.t.ppf(1 - level / 2, df))

    def shortfall(nc: float) -> float:
        # the far tail P(T < -crit) underflows to NaN in scipy for large nc: it is 0 there
        far = float(np.nan_to_num(st.nct.cdf(-crit, df, nc)))
        return float(st.nct.sf(crit, df, nc)) + far - power

    high = crit + 10.0
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high, xtol=1e-10)) * spread / math.sqrt(n)


def seeds_to_detect(
    difference: float, spread: float, level: float, power: float = POWER, limit: int = 1000
) -> int | None:
    """The fewest pairs at which :func:`detectable_difference` is at most ``difference`` (None
    when ``limit`` pairs do not suffice)."""
    for n in range(2, limit + 1):
        if detectable_difference(spread, n, level, power) <= difference:
            return n
    return None
