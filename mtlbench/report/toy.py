"""The toy's figure (FAMO's and LDC-MTL's Figure 1): each method's trajectories in loss space
from the five initial points over the Pareto front, and the training time per method. Drawn
with matplotlib's object API (seaborn has nothing to add to a trajectory), in the report's
theme; one colour per starting point, named in the legend."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.lines import Line2D

from mtlbench.records import first_line
from mtlbench.report.figures import colors, grid, panels, save, theme

MAX_TOY_RUNS = 3  # trajectories per (method, initial point) drawn on the toy figure


def _start_losses(extra: Mapping[str, Any], toy_losses: Any) -> tuple[float, float]:
    """The losses at a run's initial point (NaN when unknown)."""
    point = extra.get("start_point")
    if toy_losses is None or point is None:
        return math.nan, math.nan
    s1, s2 = toy_losses(torch.tensor(point, dtype=torch.float64), extra.get("scale", 0.1)).tolist()
    return s1, s2


def _trajectory(r: pd.Series, c: Mapping[str, Any], toy_losses: Any) -> dict[str, Any]:
    l1, l2 = c["traj"]
    extra = c.get("extra") or {}
    final = extra.get("final_losses") or {}
    s1, s2 = _start_losses(extra, toy_losses)
    return {
        "method": r["variant"],
        "start": r["start"],
        "start_point": tuple(extra["start_point"]) if extra.get("start_point") else None,
        "L1": l1,
        "L2": l2,
        "start_L1": s1,
        "start_L2": s2,
        "final_L1": final.get("L1", l1[-1] if l1 else math.nan),
        "final_L2": final.get("L2", l2[-1] if l2 else math.nan),
    }


def toy_data(
    rows: pd.DataFrame, curves: Mapping[int, Mapping[str, Any]]
) -> tuple[pd.DataFrame, np.ndarray | None, list[str]]:
    """The toy's trajectories (one row per drawn run), its Pareto front and notes. At most
    :data:`MAX_TOY_RUNS` runs per (method, initial point) are drawn."""
    notes: list[str] = []
    done = rows[(rows["status"] == "done") & (rows["mode"] != "stl")]
    done = done.sort_values(["variant", "start", "seed"], kind="stable", na_position="last")
    done = done.groupby(["variant", "start"], dropna=False, sort=False).head(MAX_TOY_RUNS)
    try:  # deferred so that a missing or broken toy module costs the figure its front only
        from mtlbench.datasets.toy import pareto_front, toy_losses
    except Exception as error:
        pareto_front = toy_losses = None  # type: ignore[assignment]
        notes.append(
            "Pareto front and initial points not drawn: mtlbench.datasets.toy unavailable "
            f"({type(error).__name__}: {first_line(error)})"
        )
    traj, scales, shortened = [], set(), 0
    for _, r in done.iterrows():
        c = curves.get(int(r["rid"]), {})
        if "traj" in c:
            extra = c.get("extra") or {}
            scales.add(extra.get("scale", 0.1))
            shortened += bool(extra.get("shortened"))
            traj.append(_trajectory(r, c, toy_losses))
    front = None
    if pareto_front is not None and traj:
        if len(scales) == 1:
            front = pareto_front(scales.pop(), 200).numpy()
        else:
            notes.append(f"Pareto front not drawn: runs use several scales {sorted(scales)}")
    if shortened:
        notes.append(
            f"{shortened} drawn toy runs are shorter than the standard 50,000 steps "
            "(extra.shortened): their end points need not be converged"
        )
    return pd.DataFrame(traj), front, notes


def _start_label(start: Any, point: Any) -> str:
    s = int(start) if isinstance(start, float) and start.is_integer() else start
    return f"start {s}" + (f" ({point[0]:g}, {point[1]:g})" if point else "")


def _draw_runs(ax: Any, sub: pd.DataFrame, colours: Mapping[Any, Any]) -> None:
    for _, r in sub.iterrows():
        color = colours.get(r["start"], "C0")
        l1, l2 = np.asarray(r["L1"], dtype=float), np.asarray(r["L2"], dtype=float)
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


def _runtime_panel(ax: Any, runs: pd.DataFrame, label: str) -> None:
    """Mean training time per method over its runs, error bars the sd (grey bars: the
    figure's colours are starting points)."""
    order = list(dict.fromkeys(runs["method"]))
    sns.barplot(
        runs,
        x="method",
        y="train_s",
        order=order,
        color="0.65",
        errorbar="sd",
        capsize=0.2,
        legend=False,
        ax=ax,
    )
    stats = runs.groupby("method", sort=False)["train_s"].agg(["mean", "std"])
    for i, method in enumerate(order):
        mean, std = stats.at[method, "mean"], stats.at[method, "std"]
        top = mean + (std if np.isfinite(std) else 0.0)
        ax.annotate(f"{mean:.3g}", (i, top), ha="center", va="bottom", fontsize=7)
    ax.set_xlabel("")
    ax.set_ylabel(label)
    ax.set_title("running time (sd over runs)")
    ax.tick_params(axis="x", labelrotation=30)


def toy_trajectories(
    trajectories: pd.DataFrame,
    path: Path,
    *,
    front: np.ndarray | None = None,
    runtime: pd.DataFrame | None = None,
    runtime_label: str = "training time (s)",
) -> Path:
    """One panel per method: its runs from each initial point (black dot; one colour per
    point, named in the legend) to where it ended (star), over the Pareto front (grey); a last
    panel of training time per method. ``trajectories``: :func:`toy_data`'s frame;
    ``runtime``: one row per run with ``method, train_s``."""
    methods = list(dict.fromkeys(trajectories["method"]))
    has_runtime = runtime is not None and len(runtime) > 0
    n = len(methods) + int(has_runtime)
    _, cols = grid(n, 5)
    starts = sorted(trajectories["start"].dropna().unique())
    colours = dict(zip(starts, colors(len(starts)), strict=True))
    with theme():
        fig, axes = panels(n, cols, (2.8, 2.6), bottom=1.5, hspace=0.9)
        for ax, method in zip(axes, methods, strict=False):
            if front is not None:
                ax.plot(front[:, 0], front[:, 1], color="0.6", lw=3, alpha=0.7, zorder=1)
            _draw_runs(ax, trajectories[trajectories["method"] == method], colours)
            ax.set_title(str(method))
            ax.set_xlabel("L1")
            ax.set_ylabel("L2")
        if has_runtime:
            assert runtime is not None
            _runtime_panel(axes[len(methods)], runtime, runtime_label)
        points = trajectories.groupby("start", sort=True)["start_point"].first()
        handles = [Line2D([], [], color=colours[s], lw=2) for s in starts]
        labels = [_start_label(s, points.get(s)) for s in starts]
        handles += [
            Line2D([], [], marker="o", color="k", ls="", ms=4),
            Line2D([], [], marker="*", color="0.5", mec="k", ls="", ms=10),
            Line2D([], [], color="0.6", lw=3),
        ]
        labels += ["initial point", "end point", "Pareto front"]
        fig.legend(handles, labels, loc="lower center", ncols=min(4, len(labels)), fontsize=8)
        return save(fig, path)
