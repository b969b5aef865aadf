"""Training dynamics: per-task training loss and task weights against the epoch, per method,
as the mean over runs with a band of ± one standard deviation (the spread over seeds).

Weights of some methods spike (DB-MTL's reach about 220 on the toy while the others stay near
1): a row whose values are all positive and span more than :data:`LOG_RANGE` is drawn on a log
scale, so that no method flattens the others.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from mtlbench.report.figures import figure, label_room, palette_for, save, theme

Curves = dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]  # variant -> task -> (mean, std)
LOG_RANGE = 30.0  # max / min of a row's values above which it is drawn on a log scale


def _stack(lists: list[list[float]]) -> np.ndarray:
    """Runs of different lengths as one array, padded with NaN (runs of one length, the usual
    case, in one conversion instead of one per run)."""
    lengths = {len(v) for v in lists}
    if len(lengths) == 1:
        return np.array(lists, dtype=float)
    arr = np.full((len(lists), max(lengths)), math.nan)
    for i, v in enumerate(lists):
        arr[i, : len(v)] = np.asarray(v, dtype=float)
    return arr


def _mean_std(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN epochs stay NaN
        n = np.sum(np.isfinite(arr), axis=0)
        std = np.where(n > 1, np.nanstd(arr, axis=0, ddof=1), math.nan)
        return np.nanmean(arr, axis=0), std


def curve_stats(rows: pd.DataFrame, curves: Mapping[int, Mapping[str, Any]], key: str) -> Curves:
    """``{variant: {task: (mean, std)}}`` over the runs of each variant, per epoch, of
    ``curves[key]`` (``train_loss`` or ``weights``); std is NaN with one run."""
    out: Curves = {}
    for variant, g in rows.groupby("variant", sort=False):
        per_task: dict[str, list[list[float]]] = {}
        for rid in g["rid"]:
            for task, values in (curves.get(int(rid), {}).get(key) or {}).items():
                if isinstance(values, list) and values:
                    per_task.setdefault(task, []).append(values)
        if per_task:
            out[str(variant)] = {t: _mean_std(_stack(v)) for t, v in per_task.items()}
    return out


def _summary(stats: Mapping[str, tuple[np.ndarray, np.ndarray]], relative: bool) -> np.ndarray:
    """Many tasks in one line: the mean over tasks of loss / first-epoch loss, or the spread of
    the weights over tasks (std / mean; 0 = equal weights)."""
    arr = _stack([list(mean) for mean, _ in stats.values()])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if relative:
            return np.nanmean(arr / arr[:, :1], axis=0)
        return np.nanstd(arr, axis=0) / np.abs(np.nanmean(arr, axis=0))


def _log_scale(data: Curves) -> bool:
    values = np.concatenate(
        [m[np.isfinite(m)] for d in data.values() for m, _ in d.values()] or [np.array([])]
    )
    return bool(len(values) and values.min() > 0 and values.max() / values.min() > LOG_RANGE)


def _band(mean: np.ndarray, std: np.ndarray, floor: float | None) -> tuple[np.ndarray, np.ndarray]:
    """mean ± std; on a log axis the lower edge is held at ``floor`` (half the row's smallest
    mean) where it would fall to zero or below."""
    lower = mean - std
    if floor is not None:
        lower = np.maximum(lower, floor)
    return lower, mean + std


def _draw_row(
    axes: np.ndarray,
    data: Curves,
    tasks: list[str],
    colours: Mapping[str, Any],
    what: str,
    band: bool,
) -> None:
    per_task = len(axes) == len(tasks)  # one column per task, else one summary column
    log = _log_scale(data)
    floor = 0.5 * min(np.nanmin(m) for d in data.values() for m, _ in d.values()) if log else None
    for col, ax in enumerate(axes):
        for method, stats in data.items():
            if per_task:
                if tasks[col] not in stats:
                    continue
                mean, std = stats[tasks[col]]
            else:
                mean, std = _summary(stats, what == "training loss"), None
            x = np.arange(len(mean))
            ax.plot(x, mean, color=colours[method], lw=1.3, label=method)
            if band and std is not None and np.isfinite(std).any():
                lower, upper = _band(mean, std, floor)
                ax.fill_between(x, lower, upper, color=colours[method], alpha=0.15, lw=0)
        if per_task:
            title = f"{what}: {tasks[col]}"
        elif what == "training loss":
            title = f"mean over {len(tasks)} tasks of loss / first-epoch loss"
        else:
            title = f"spread of weights over {len(tasks)} tasks (std / mean)"
        if log and per_task:
            ax.set_yscale("log")
            title += " (log scale)"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))


def training_dynamics(
    loss: Curves,
    weights: Curves,
    path: Path,
    *,
    title: str = "",
    max_task_panels: int = 4,
    palette: Mapping[str, Any] | None = None,
    band: bool = True,
) -> Path:
    """Per-task training loss (top row) and task weights (bottom row) against the epoch, one
    line per method with a ± sd band over its runs (``band=False``: the mean alone, for runs
    that are not seeds of one setting, such as the toy's starting points). Up to
    ``max_task_panels`` tasks get a column each; with
    more (CelebA's 40) one column summarises them (:func:`_summary`, no band)."""
    methods = list(dict.fromkeys([*loss, *weights]))
    tasks = list(dict.fromkeys(t for d in (*loss.values(), *weights.values()) for t in d))
    cols = len(tasks) if len(tasks) <= max_task_panels else 1
    colours = palette_for(methods, palette)
    with theme():
        fig, flat = figure(
            2,
            cols,
            (3.2, 2.3),
            right=label_room(methods),
            top=0.7 if title else 0.35,
            hspace=0.75,
            sharex=True,
        )
        axes = flat.reshape(2, cols)
        _draw_row(axes[0], loss, tasks, colours, "training loss", band)
        _draw_row(axes[1], weights, tasks, colours, "task weight", band)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        if not handles:
            handles, labels = axes[1, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center right", fontsize=7)
        if title:
            fig.suptitle(title)
        return save(fig, path)
