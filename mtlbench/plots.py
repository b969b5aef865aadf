"""Figures of the report, drawn with matplotlib's object API on the Agg canvas.

Every function takes data that :mod:`mtlbench.report` has already reduced (one row per method
and benchmark, mean curves), writes one PNG and returns its path. Nothing here reads records,
and no number is typed in: titles, labels and values all come from the arguments.

``pyplot`` is not used: figures are plain :class:`matplotlib.figure.Figure` objects, so there is
no global state to leak between figures and nothing depends on the user's backend. The report
draws a bounded number of figures (one per benchmark and kind, not one per record). Seaborn is
left out on purpose: it adds about a second of import time to every ``mtlbench report`` and the
figures need nothing it provides beyond a palette.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 100
# A colour-blind friendly qualitative palette (Okabe & Ito), then tab20 for more series.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#000000",
)


def colors(n: int) -> list[str]:
    """``n`` distinct colours."""
    if n <= len(PALETTE):
        return list(PALETTE[:n])
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return [cmap(i % 20) for i in range(n)]  # type: ignore[misc]


def _palette(names: Sequence[str], given: Mapping[str, str] | None) -> dict[str, str]:
    """Colours per name: ``given`` where it has the name (the report passes one mapping to every
    figure so that a method keeps its colour), fresh ones for the rest."""
    given = given or {}
    rest = [n for n in dict.fromkeys(names) if n not in given]
    taken = {str(c) for c in given.values()}
    fresh = [c for c in colors(len(given) + len(rest)) if str(c) not in taken]
    fresh += colors(len(rest))  # only when the palette repeats itself (more than 20 names)
    return {
        **{n: given[n] for n in names if n in given},
        **dict(zip(rest, fresh, strict=False)),
    }


def _label(text: object) -> str:
    """A legend label (matplotlib hides labels that start with an underscore)."""
    text = str(text)
    return f" {text}" if text.startswith("_") else text


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = max(1, min(n, max_cols))
    return math.ceil(n / cols), cols


def _figure(
    rows: int,
    cols: int,
    panel: tuple[float, float] = (3.6, 2.8),
    *,
    left: float = 0.9,
    right: float = 0.25,
    top: float = 0.55,
    bottom: float = 0.65,
    wspace: float = 0.85,
    hspace: float = 0.8,
    sharex: bool = False,
) -> tuple[Figure, np.ndarray]:
    """A figure of ``rows x cols`` panels of ``panel`` inches with fixed margins in inches.

    Fixed margins instead of matplotlib's constrained layout: the layout engine measures every
    text box of every panel on each draw, which made it most of a report's run time.
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


def runtime_bars(data: pd.DataFrame, path: Path, *, title: str = "") -> Path:
    """Grouped bars of training time relative to LS: one group per method, one bar per benchmark.

    ``data``: columns ``benchmark, method, step_x_ls, total_x_ls`` (``*_std`` optional, used
    as error bars). Two panels: from per-step medians and from total training time.
    """
    benches = list(dict.fromkeys(data["benchmark"]))
    methods = list(dict.fromkeys(data["method"]))
    panels = [("step_x_ls", "per-step median"), ("total_x_ls", "total training time")]
    width = max(5.0, 0.3 * len(methods) * max(1, len(benches)) ** 0.5 + 1.5)
    longest = max((len(str(m)) for m in methods), default=4)
    fig, axes = _figure(
        2,
        1,
        (width, 2.6),
        bottom=0.4 + 0.065 * longest,
        hspace=0.35,
        sharex=True,
        top=0.7 if title else 0.3,
    )
    x = np.arange(len(methods))
    bar = 0.8 / max(1, len(benches))
    palette = colors(len(benches))
    for ax, (col, what) in zip(axes, panels, strict=True):
        for i, bench in enumerate(benches):
            sub = data[data["benchmark"] == bench].set_index("method").reindex(methods)
            y = sub[col].to_numpy(dtype=float)
            err = sub[f"{col}_std"].to_numpy(dtype=float) if f"{col}_std" in sub else None
            ax.bar(
                x + (i - (len(benches) - 1) / 2) * bar,
                y,
                bar,
                label=_label(bench),
                color=palette[i],
                yerr=err,
                capsize=2,
                error_kw={"elinewidth": 0.8},
            )
        ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
        ax.set_ylabel(f"time × LS\n({what})")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, ncols=min(4, len(benches)))
    axes[-1].set_xticks(x, methods, rotation=30, ha="right")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def accuracy_vs_cost(
    data: pd.DataFrame, path: Path, *, palette: Mapping[str, str] | None = None
) -> Path:
    """Δm% against training time relative to LS, one point per method, one panel per benchmark.

    ``data``: columns ``benchmark, method, delta_m, delta_m_std, time_x_ls, time_x_ls_std``;
    error bars are standard deviations over seeds.
    """
    benches = list(dict.fromkeys(data["benchmark"]))
    methods = list(dict.fromkeys(data["method"]))
    rows, cols = _grid(len(benches), 3)
    longest = max((len(str(m)) for m in methods), default=4)
    fig, axes = _figure(rows, cols, (3.8, 3.0), right=0.5 + 0.075 * longest)
    palette = _palette(methods, palette)
    for ax, bench in zip(axes, benches, strict=False):
        sub = data[data["benchmark"] == bench]
        x = sub["time_x_ls"].to_numpy(dtype=float)
        y = sub["delta_m"].to_numpy(dtype=float)
        ax.errorbar(
            x,
            y,
            xerr=_std(sub, "time_x_ls_std"),
            yerr=_std(sub, "delta_m_std"),
            fmt="none",
            ecolor="0.55",
            elinewidth=0.8,
            capsize=2,
            zorder=1,
        )
        for method, xi, yi in zip(sub["method"], x, y, strict=True):
            ax.scatter([xi], [yi], color=palette[method], s=30, zorder=2, label=_label(method))
        ax.axhline(0.0, color="0.5", lw=0.8, ls=":")
        ax.set_title(str(bench), fontsize=10)
        ax.set_xlabel("time × LS (per-step median)", fontsize=8)
        ax.set_ylabel("Δm% (lower is better)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(benches) :]:
        ax.set_axis_off()
    handles = {}
    for ax in axes[: len(benches)]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="center right", fontsize=7, frameon=False)
    return _save(fig, path)


def _std(frame: pd.DataFrame, col: str) -> np.ndarray | None:
    if col not in frame:
        return None
    return np.nan_to_num(frame[col].to_numpy(dtype=float), nan=0.0)


def scaling(data: pd.DataFrame, path: Path, *, palette: Mapping[str, str] | None = None) -> Path:
    """Per-step time against the number of tasks K, one line per method, one panel per workload.

    ``data``: columns ``workload, method, K, step_median_s`` (several rows per point are
    averaged). Both axes logarithmic.
    """
    workloads = list(dict.fromkeys(data["workload"]))
    rows, cols = _grid(len(workloads), 3)
    fig, axes = _figure(rows, cols, (4.4, 3.4))
    methods = list(dict.fromkeys(data["method"]))
    palette = _palette([str(m).split("@")[0] for m in methods], palette)
    for ax, workload in zip(axes, workloads, strict=False):
        sub = data[data["workload"] == workload]
        mean = sub.groupby(["method", "K"], sort=True)["step_median_s"].mean()
        for method in methods:
            if method not in mean.index.get_level_values(0):
                continue
            line = mean.loc[method]
            ls = "--" if "sequential" in str(method) else "-"
            ax.plot(
                line.index,
                line.to_numpy() * 1e3,
                marker="o",
                ms=3,
                ls=ls,
                color=palette[str(method).split("@")[0]],
                label=_label(method),
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(str(workload))
        ax.set_xlabel("number of tasks K")
        ax.set_ylabel("per-step time (ms, median)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, ncols=2)
    for ax in axes[len(workloads) :]:
        ax.set_axis_off()
    return _save(fig, path)


def toy_trajectories(
    trajectories: pd.DataFrame,
    path: Path,
    *,
    front: np.ndarray | None = None,
    runtime: pd.DataFrame | None = None,
    runtime_label: str = "training time (s)",
) -> Path:
    """Loss-space trajectories of each method on the toy (FAMO / LDC-MTL Figure 1).

    ``trajectories``: one row per run with ``method, start`` and arrays ``L1, L2`` (the
    subsampled trajectory), ``start_L1, start_L2`` (the initial point's losses, or NaN) and
    ``final_L1, final_L2`` (the convergence point, starred). ``front``: ``(n, 2)`` points of the
    Pareto front (grey) or None. ``runtime``: ``method, seconds, seconds_std`` for a last panel
    of bars.
    """
    methods = list(dict.fromkeys(trajectories["method"]))
    n_panels = len(methods) + (1 if runtime is not None and len(runtime) else 0)
    rows, cols = _grid(n_panels, 5)
    fig, axes = _figure(rows, cols, (2.8, 2.6), bottom=0.9)
    starts = sorted(trajectories["start"].dropna().unique())
    palette = dict(zip(starts, colors(len(starts)), strict=True))
    for i, method in enumerate(methods):
        ax = axes[i]
        if front is not None:
            ax.plot(front[:, 0], front[:, 1], color="0.6", lw=3, alpha=0.7, zorder=1)
        sub = trajectories[trajectories["method"] == method]
        for _, r in sub.iterrows():
            color = palette.get(r["start"], "C0")
            l1 = np.asarray(r["L1"], dtype=float)
            l2 = np.asarray(r["L2"], dtype=float)
            if np.isfinite(r["start_L1"]) and np.isfinite(r["start_L2"]):
                l1 = np.concatenate([[r["start_L1"]], l1])
                l2 = np.concatenate([[r["start_L2"]], l2])
                ax.scatter([r["start_L1"]], [r["start_L2"]], color="k", s=14, zorder=3)
            ax.plot(l1, l2, color=color, lw=1.2, alpha=0.85, zorder=2)
            ax.scatter(
                [r["final_L1"]],
                [r["final_L2"]],
                marker="*",
                s=110,
                color=color,
                edgecolors="k",
                linewidths=0.6,
                zorder=4,
            )
        ax.set_title(method)
        ax.set_xlabel("L1")
        ax.set_ylabel("L2")
        ax.grid(alpha=0.3)
    if runtime is not None and len(runtime):
        ax = axes[len(methods)]
        x = np.arange(len(runtime))
        ax.bar(
            x,
            runtime["seconds"],
            yerr=runtime.get("seconds_std"),
            capsize=2,
            color=colors(len(runtime)),
        )
        tops = (
            runtime["seconds"] + runtime.get("seconds_std", 0).fillna(0)
            if "seconds_std" in runtime
            else runtime["seconds"]
        )
        for xi, s, top in zip(x, runtime["seconds"], tops, strict=True):
            ax.annotate(f"{s:.3g}", (xi, top), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, runtime["method"], rotation=30, ha="right")
        ax.set_ylabel(runtime_label)
        ax.set_title("running time")
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[n_panels:]:
        ax.set_axis_off()
    return _save(fig, path)


def training_dynamics(
    loss: Mapping[str, Mapping[str, np.ndarray]],
    weights: Mapping[str, Mapping[str, np.ndarray]],
    path: Path,
    *,
    title: str = "",
    max_task_panels: int = 4,
    palette: Mapping[str, str] | None = None,
) -> Path:
    """Per-task training loss (top row) and task weights (bottom row) against the epoch, one
    line per method (each a mean over seeds).

    ``loss`` / ``weights``: ``{method: {task: values}}``. Up to ``max_task_panels`` tasks get a
    column each. With more tasks (CelebA's 40) one column summarises them: the loss relative to
    its first epoch, averaged over tasks, and the spread of the weights over tasks (standard
    deviation / mean; 0 = equal weights).
    """
    methods = list(dict.fromkeys([*loss, *weights]))
    tasks = list(dict.fromkeys(t for d in (*loss.values(), *weights.values()) for t in d))
    per_task = len(tasks) <= max_task_panels
    cols = len(tasks) if per_task else 1
    longest = max((len(str(m)) for m in methods), default=4)
    fig, axes = _figure(
        2,
        cols,
        (3.2, 2.3),
        right=0.5 + 0.075 * longest,
        top=0.7 if title else 0.35,
        hspace=0.75,
        sharex=True,
    )
    axes = axes.reshape(2, cols)
    palette = _palette(methods, palette)
    for row, (data, what) in enumerate(((loss, "training loss"), (weights, "task weight"))):
        for col in range(cols):
            ax = axes[row, col]
            for method in methods:
                curves = data.get(method) or {}
                if per_task:
                    y = curves.get(tasks[col])
                    if y is None:
                        continue
                    y = np.asarray(y, dtype=float)
                else:
                    if not curves:
                        continue
                    y = _summary(curves, relative=row == 0)
                ax.plot(np.arange(len(y)), y, color=palette[method], lw=1.3, label=_label(method))
            name = (
                tasks[col]
                if per_task
                else (
                    f"mean over {len(tasks)} tasks of loss / first-epoch loss"
                    if row == 0
                    else f"spread of weights over {len(tasks)} tasks (std / mean)"
                )
            )
            ax.set_title(f"{what}: {name}" if per_task else name, fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[1, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _summary(curves: Mapping[str, np.ndarray], *, relative: bool) -> np.ndarray:
    length = max(len(v) for v in curves.values())
    arr = np.full((len(curves), length), np.nan)
    for i, v in enumerate(curves.values()):
        arr[i, : len(v)] = np.asarray(v, dtype=float)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if relative:
            return np.nanmean(arr / arr[:, :1], axis=0)
        return np.nanstd(arr, axis=0) / np.abs(np.nanmean(arr, axis=0))


def bars(values: Sequence[float], labels: Sequence[str], path: Path, *, ylabel: str) -> Path:
    """A plain bar chart (used for the toy's running time when no trajectory is available)."""
    fig, axes = _figure(1, 1, (max(3.0, 0.6 * len(values) + 1), 2.8), bottom=1.0)
    ax = axes[0]
    x = np.arange(len(values))
    ax.bar(x, values, color=colors(len(values)))
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
