"""The LDC-MTL paper's numbers beside this suite's.

``mtlbench/data/ldc_mtl_published.csv`` holds one row per published number with its source
(figure file and commit in the LDC-MTL repository) and the text as printed; mIoU and pixel
accuracy are stored as fractions, this suite's unit.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

PUBLISHED_CSV = Path(__file__).resolve().parent.parent / "data" / "ldc_mtl_published.csv"


def load_published(path: Path | None = None) -> pd.DataFrame:
    """The LDC-MTL paper's numbers: one row per number with ``benchmark, method, paper_label,
    quantity, value, paper_text, unit, source``. ``quantity`` is a metric name of this suite
    (values in this suite's units), ``delta_m``, ``time_rel_ls`` or ``train_s``."""
    return pd.read_csv(path or PUBLISHED_CSV)


def _seconds_to_ratios(pub: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The published numbers and their quantities, the toy's seconds (``train_s``) turned into
    ratios to the paper's LS seconds (``time_rel_ls``) when the paper gives LS's."""
    quantities = list(dict.fromkeys(pub["quantity"]))
    ls_s = pub[(pub["quantity"] == "train_s") & (pub["method"] == "ls")]["value"]
    if "train_s" not in quantities or not len(ls_s):
        return pub, quantities
    extra = pub[pub["quantity"] == "train_s"].assign(
        quantity="time_rel_ls", value=lambda d: d["value"] / float(ls_s.iloc[0])
    )
    pub = pd.concat([pub[pub["quantity"] != "train_s"], extra], ignore_index=True)
    return pub, [q if q != "train_s" else "time_rel_ls" for q in quantities]


def _ours(board: pd.DataFrame) -> dict[str, pd.Series]:
    """Per method (``stl`` for the reference row) the variant with the most runs."""
    mine: dict[str, pd.Series] = {}
    for _, r in board[board["role"] != "not run"].iterrows():
        key = "stl" if r["role"] == "reference" else r["base_method"]
        if key not in mine or r["n"] > mine[key]["n"]:
            mine[key] = r
    return mine


def published_comparison(board: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """This suite's numbers beside the paper's, per method, with the difference (ours − paper).

    Time × LS is compared with total training time (the paper does not say per-step or total);
    the toy's published seconds become a ratio to the paper's LS seconds. ``attrs`` hold
    ``quantities`` and ``sources``.
    """
    bench = board["benchmark"].iloc[0] if len(board) else ""
    pub = published[published["benchmark"] == bench]
    if pub.empty:
        return pd.DataFrame()
    pub, quantities = _seconds_to_ratios(pub)
    ours_col = {"delta_m": "delta_m", "time_rel_ls": "total_x_ls"}
    mine = _ours(board)
    rows = []
    for m in dict.fromkeys([*pub["method"], *mine]):
        ours = mine.get(m)
        labels = pub[pub["method"] == m]["paper_label"]
        row: dict[str, Any] = {
            "method": m,
            "ours_label": ours["method"] if ours is not None else "",
            "paper_label": labels.iloc[0] if len(labels) else "",
        }
        for q in quantities:
            p = pub[(pub["method"] == m) & (pub["quantity"] == q)]["value"]
            paper = float(p.iloc[0]) if len(p) else math.nan
            col = ours_col.get(q, q)
            have = ours is not None and col in ours and pd.notna(ours[col])
            value = float(ours[col]) if have else math.nan  # type: ignore[index]
            row[f"{q}/ours"] = value
            row[f"{q}/paper"] = paper
            row[f"{q}/diff"] = value - paper
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs = {"quantities": quantities, "sources": list(dict.fromkeys(pub["source"]))}
    return table
