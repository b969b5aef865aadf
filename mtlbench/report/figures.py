"""Figures of the statistical kind, drawn with seaborn on matplotlib ``Figure`` objects.

Every function takes data the leaderboards already hold (per-run values, means), writes one PNG
and returns its path; nothing here reads records and no number is typed in. Spreads over seeds
are computed by seaborn from the per-run values (``errorbar="sd"``: the sample standard
deviation, as in the tables) or drawn as the runs themselves. ``pyplot`` is not used, so no
global state leaks between figures; one theme (:func:`theme`) holds for the whole report.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

DPI = 100
MAX_DISTRIBUTION_PANELS = 8  # metrics per distribution figure (CelebA has 40)
MAX_STRIP_POINTS = 2000  # runs drawn one by one over the boxes; above, boxes only


#: Titles sit at a fixed height just above their axes. matplotlib's default (``None``) lifts a
#: title over whatever is drawn above the axes, which measures every tick label of every panel
#: on each draw (a tenth of a figure's time); nothing sits above the axes in these figures, so
#: the pixels are the same. The CD diagram, whose rank axis is on top, keeps the default
#: (:data:`LIFTED_TITLES`).
FIXED_TITLES = {"axes.titley": 1.0}
LIFTED_TITLES = {"axes.titley": None}


@contextmanager
def theme() -> Iterator[None]:
    """The report's one theme: seaborn's ``whitegrid`` style in the ``paper`` context, titles
    at a fixed height (:data:`FIXED_TITLES`)."""
    with sns.axes_style("whitegrid"), sns.plotting_context("paper"), mpl.rc_context(FIXED_TITLES):
        yield


def colors(n: int) -> list[Any]:
    """``n`` distinct colour-blind safe colours (seaborn's ``colorblind``, then ``husl``)."""
    return list(sns.color_palette("colorblind" if n <= 10 else "husl", n))


def family_palette(variants: Mapping[str, str]) -> dict[str, Any]:
    """The report's colours: ``variants`` maps each variant label to its base method. Every base
    method gets its own hue (:func:`colors` over the base methods only), and its variants shades
    of that hue: the variant labelled like the method keeps the hue itself, the others go darker
    and lighter in turn. With 30 tuned variants of 10 methods, one hue per label would give
    neighbouring variants of different methods nearly the same colour; this way a method's
    variants read as one family and different methods stay apart. Base names map to their hue
    (the figures that show methods, not variants: performance profile, per-step scaling)."""
    bases = sorted(set(variants.values()))
    hues = dict(zip(bases, colors(len(bases)), strict=True))
    palette: dict[str, Any] = dict(hues)
    for base in bases:
        own = sorted(v for v, b in variants.items() if b == base and v != base)
        if base in variants:
            palette[base] = hues[base]
        elif own:
            palette[own.pop(0)] = hues[base]
        for i, label in enumerate(own):
            palette[label] = _shade(hues[base], i)
    return palette


def _shade(rgb: Sequence[float], i: int) -> tuple[float, float, float]:
    """The ``i``-th shade of ``rgb`` for a method's further variants: darker, lighter, darker
    still, ... (mixed with black or white by 30 %, 45 %, 60 %, ..., at most 80 %)."""
    t = min(0.3 + 0.15 * (i // 2), 0.8)
    target = 0.0 if i % 2 == 0 else 1.0
    r, g, b = (c + (target - c) * t for c in rgb[:3])
    return (r, g, b)


def palette_for(names: Sequence[str], given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Colours per name: ``given`` where it has the name (the report passes one mapping to every
    figure so that a method keeps its colour), fresh ones, distinct from those, for the rest."""
    given = given or {}
    rest = [n for n in dict.fromkeys(names) if n not in given]
    taken = {str(c) for c in given.values()}
    fresh = [c for c in colors(len(given) + len(rest)) if str(c) not in taken]
    fresh += colors(len(rest))  # only when the palette repeats itself
    return {**{n: given[n] for n in names if n in given}, **dict(zip(rest, fresh, strict=False))}


def save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def grid(n: int, max_cols: int) -> tuple[int, int]:
    """Rows and columns for ``n`` panels, balanced (11 panels in 3 x 4, not 3 x 5)."""
    rows = max(1, math.ceil(n / max_cols))
    return rows, max(1, math.ceil(n / rows))


def figure(
    rows: int,
    cols: int,
    panel: tuple[float, float],
    *,
    left: float = 0.8,
    right: float = 0.3,
    top: float = 0.5,
    bottom: float = 0.6,
    wspace: float = 0.8,
    hspace: float = 0.8,
    sharex: bool = False,
) -> tuple[Figure, np.ndarray]:
    """A figure of ``rows x cols`` panels of ``panel`` inches, with margins in inches.

    Fixed margins instead of matplotlib's constrained layout: the layout engine measures every
    text box of every panel on each draw, which was most of a report's run time on 10,000
    records. Callers widen a margin for what they put there (a legend, rotated labels).
    """
    width = left + right + cols * panel[0] + (cols - 1) * wspace
    height = top + bottom + rows * panel[1] + (rows - 1) * hspace
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        top=1 - top / height,
        bottom=bottom / height,
        wspace=wspace / panel[0],
        hspace=hspace / panel[1],
    )
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False, sharex=sharex)).ravel()
    return fig, axes


def label_room(labels: Sequence[Any], per_char: float = 0.07, base: float = 0.5) -> float:
    """Inches for a margin that holds the longest of ``labels`` (legend entries, rotated
    tick labels)."""
    return base + per_char * max((len(str(x)) for x in labels), default=4)


def panels(
    n: int, max_cols: int, size: tuple[float, float], **margins: Any
) -> tuple[Figure, np.ndarray]:
    """:func:`figure` with ``n`` panels in a balanced grid; unused panels switched off."""
    rows, cols = grid(n, max_cols)
    fig, axes = figure(rows, cols, size, **margins)
    for ax in axes[n:]:
        ax.set_axis_off()
    return fig, axes


def runtime_bars(runs: pd.DataFrame, path: Path, *, title: str = "") -> Path:
    """Bars of training time relative to LS per method, one colour per benchmark, error bars
    the standard deviation over seeds. ``runs``: one row per done run with ``benchmark, method,
    step_x_ls, total_x_ls``. Two panels: per-step median and total training time."""
    methods = list(dict.fromkeys(runs["method"]))
    width = max(5.0, 0.45 * len(methods) * max(1, runs["benchmark"].nunique()) ** 0.5 + 2)
    with theme():
        fig, axes = figure(
            2,
            1,
            (width, 2.6),
            bottom=label_room(methods, 0.06),
            top=0.7 if title else 0.3,
            hspace=0.35,
            left=0.9,
            sharex=True,
        )
        for ax, (col, what) in zip(
            axes,
            [("step_x_ls", "per-step median"), ("total_x_ls", "total training time")],
            strict=True,
        ):
            sns.barplot(
                runs,
                x="method",
                y=col,
                hue="benchmark",
                order=methods,
                errorbar="sd",
                capsize=0.15,
                err_kws={"linewidth": 0.8},
                ax=ax,
            )
            ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
            ax.set_ylabel(f"time × LS\n({what})")
            ax.set_xlabel("")
        for ax in axes:
            if ax.get_legend() is not None:
                ax.get_legend().remove()
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            axes[0].legend(handles, labels, title="benchmark", fontsize=7)
        axes[1].tick_params(axis="x", labelrotation=30)
        if title:
            fig.suptitle(f"{title} (error bars: sd over runs)")
        return save(fig, path)


def accuracy_vs_cost(
    runs: pd.DataFrame, path: Path, *, palette: Mapping[str, Any] | None = None
) -> Path:
    """Δm% against per-step time relative to LS, one panel per benchmark: each run a small dot,
    each method's mean a large one with error bars (sd over seeds) on both axes.
    ``runs``: one row per done run with ``benchmark, method, delta_m, step_x_ls``."""
    benches = list(dict.fromkeys(runs["benchmark"]))
    colours = palette_for(list(dict.fromkeys(runs["method"])), palette)
    with theme():
        methods = list(dict.fromkeys(runs["method"]))
        fig, axes = panels(len(benches), 3, (4.0, 3.1), right=label_room(methods))
        for ax, bench in zip(axes, benches, strict=False):
            sub = runs[runs["benchmark"] == bench]
            sns.scatterplot(
                sub,
                x="step_x_ls",
                y="delta_m",
                hue="method",
                palette=colours,
                s=12,
                alpha=0.35,
                legend=False,
                ax=ax,
            )
            stats = sub.groupby("method", sort=False)[["step_x_ls", "delta_m"]].agg(["mean", "std"])
            for method, r in stats.iterrows():
                ax.errorbar(
                    r[("step_x_ls", "mean")],
                    r[("delta_m", "mean")],
                    xerr=np.nan_to_num(r[("step_x_ls", "std")]),
                    yerr=np.nan_to_num(r[("delta_m", "std")]),
                    fmt="o",
                    ms=6,
                    color=colours[method],
                    capsize=2,
                    lw=0.9,
                    label=str(method),
                )
            ax.axhline(0.0, color="0.5", lw=0.8, ls=":")
            ax.set_title(str(bench))
            ax.set_xlabel("time × LS (per-step median)")
            ax.set_ylabel("Δm% (lower is better)")
        _legend(fig, axes[: len(benches)])
        return save(fig, path)


def _legend(fig: Figure, axes: Sequence[Any]) -> None:
    """One legend for the figure, each label once, outside the panels."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="center right", fontsize=7)


def rank_heatmap(ranks: pd.DataFrame, path: Path) -> Path:
    """Mean rank of each method (rows) on each benchmark (columns), annotated; empty where a
    method did not run. ``ranks``: methods x benchmarks."""
    with theme():
        fig, axes = figure(
            1,
            1,
            (1.2 * len(ranks.columns) + 1.5, 0.3 * len(ranks) + 0.4),
            left=label_room(ranks.index, 0.07, 0.3),
            bottom=label_room(ranks.columns, 0.06, 0.5),
        )
        ax = axes[0]
        sns.heatmap(
            ranks.astype(float),
            annot=True,
            fmt=".2f",
            cmap="viridis_r",
            linewidths=0.5,
            cbar_kws={"label": "mean rank (1 = best)"},
            ax=ax,
        )
        ax.set_xlabel("benchmark")
        ax.set_ylabel("")
        ax.set_title("mean rank over metrics, per benchmark")
        return save(fig, path)


def metric_distributions(
    runs: pd.DataFrame,
    metrics: Sequence[tuple[str, str]],
    path: Path,
    *,
    palette: Mapping[str, Any] | None = None,
    title: str = "",
) -> Path:
    """Per metric, the distribution over seeds of each method's test value: a box per method
    (quartiles, whiskers at the extremes) and each run as a dot (seaborn's strip plot; boxes
    only above :data:`MAX_STRIP_POINTS` runs). ``runs``: one row per done run with ``method``
    and ``test/<metric>``; ``metrics``: (name, header) pairs."""
    methods = list(dict.fromkeys(runs["method"]))
    colours = palette_for(methods, palette)
    shown = list(metrics)[:MAX_DISTRIBUTION_PANELS]
    with theme():
        fig, axes = panels(
            len(shown),
            4,
            (max(2.6, 0.4 * len(methods) + 0.8), 2.6),
            bottom=label_room(methods, 0.06),
            top=0.8 if title else 0.5,
            hspace=label_room(methods, 0.06) + 0.3,
        )
        for ax, (name, header) in zip(axes, shown, strict=False):
            column = f"test/{name}"
            _boxes(ax, runs, column, methods, colours)
            if len(runs) <= MAX_STRIP_POINTS:
                _strip(ax, runs, column, methods)
            ax.set_title(header)
            ax.set_xlabel("")
            ax.set_ylabel("test value")
            ax.tick_params(axis="x", labelrotation=30)
        if title:
            fig.suptitle(title)
        return save(fig, path)


@contextmanager
def _fixed_jitter(seed: int = 0) -> Iterator[None]:
    """seaborn's strip plot jitters the dots with numpy's global generator, whose state is
    seeded from the OS at start-up: a fixed seed gives the same picture on every run, in this
    process or in a figure worker. The global state is restored afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _strip(ax: Any, runs: pd.DataFrame, column: str, methods: list[str]) -> None:
    """Each run as a dot over the boxes, jittered sideways (the same jitter on every run)."""
    with _fixed_jitter():
        sns.stripplot(
            runs, x="method", y=column, order=methods, color="0.15", size=3, jitter=0.15, ax=ax
        )


def _boxes(
    ax: Any, runs: pd.DataFrame, column: str, methods: list[str], colours: Mapping[str, Any]
) -> None:
    """One box per method from quartiles computed once by pandas (``ax.bxp``: seaborn's
    boxplot, one matplotlib call per method, cost seconds on 10,000 records)."""
    q = runs.groupby("method", sort=False)[column].quantile([0.0, 0.25, 0.5, 0.75, 1.0])
    stats, positions = [], []
    for i, method in enumerate(methods):
        if method not in q.index.get_level_values(0) or not np.isfinite(q[method]).all():
            continue
        lo, q1, med, q3, hi = q[method].to_numpy()
        stats.append({"whislo": lo, "q1": q1, "med": med, "q3": q3, "whishi": hi, "fliers": []})
        positions.append(i)
    if stats:
        boxes = ax.bxp(stats, positions=positions, widths=0.6, patch_artist=True, showfliers=False)
        for patch, i in zip(boxes["boxes"], positions, strict=True):
            patch.set(facecolor=colours[methods[i]], alpha=0.75, linewidth=0.8)
        for line in boxes["medians"]:
            line.set(color="0.15", linewidth=1.2)
    ax.set_xticks(range(len(methods)), methods)
    ax.set_xlim(-0.6, len(methods) - 0.4)


def scaling(data: pd.DataFrame, path: Path, *, palette: Mapping[str, Any] | None = None) -> Path:
    """Per-step time against the number of tasks K, one line per method (dashed: the sequential
    Jacobian), one panel per workload; repeated rows give the error band (sd). Log axes.
    ``data``: ``workload, method, K, step_median_s``."""
    data = data.assign(
        ms=data["step_median_s"] * 1e3,
        base=data["method"].astype(str).str.split("@").str[0],
        jacobian=np.where(
            data["method"].astype(str).str.contains("sequential"), "sequential", "batched"
        ),
    )
    workloads = list(dict.fromkeys(data["workload"]))
    colours = palette_for(list(dict.fromkeys(data["base"])), palette)
    with theme():
        fig, axes = panels(len(workloads), 3, (4.4, 3.4))
        for ax, workload in zip(axes, workloads, strict=False):
            sns.lineplot(
                data[data["workload"] == workload],
                x="K",
                y="ms",
                hue="base",
                style="jacobian",
                style_order=["batched", "sequential"],
                palette=colours,
                marker="o",
                errorbar="sd",
                ax=ax,
            )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(str(workload))
            ax.set_xlabel("number of tasks K")
            ax.set_ylabel("per-step time (ms, median)")
            ax.legend(fontsize=7, ncols=2)
        return save(fig, path)


def seconds_bars(runs: pd.DataFrame, path: Path, *, ylabel: str) -> Path:
    """Mean training time per method with error bars (sd over runs); ``runs``: one row per run
    with ``method, train_s`` (the toy's running time when its records hold no trajectory)."""
    order = list(dict.fromkeys(runs["method"]))
    with theme():
        fig, axes = figure(1, 1, (max(3.0, 0.6 * len(order) + 1), 2.8), bottom=label_room(order))
        ax = axes[0]
        sns.barplot(
            runs,
            x="method",
            y="train_s",
            hue="method",
            order=order,
            errorbar="sd",
            legend=False,
            ax=ax,
        )
        ax.set_xlabel("")
        ax.set_ylabel(ylabel)
        ax.tick_params(axis="x", labelrotation=30)
        return save(fig, path)
