"""Render: numbers to text, and display tables to Markdown, HTML and LaTeX.

Number formatting has one rule per column: a column's decimals give 4 significant digits to its
largest finite mean (:func:`column_decimals`), and a standard deviation takes its mean's
decimals, so that every cell of a column is written alike (``0.0002 ± 0.4810`` beside
``-0.0109 ± 0.4751``). Δm%, ranks and time ratios use 2 decimals.

Markdown and HTML go through ``tabulate``; LaTeX through pandas' ``Styler.to_latex`` (booktabs
rules, ``escape="latex-math"``, bold and underline as Styler commands). The report's own glyphs
(±, arrows, Δ, the dash of a missing value) are written in LaTeX math first: pdflatex has no
Unicode math glyphs; every other character is escaped by the Styler.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from tabulate import tabulate

from mtlbench.report.base import tie_round

MISSING = "—"
SIG = 4  # significant digits of a metric column's largest mean
TEX_SYMBOLS = {
    "±": r"$\pm$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "Δ": r"$\Delta$",
    "—": "---",
    "×": r"$\times$",
    "−": "-",
    "…": r"$\ldots$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "≈": r"$\approx$",
}


def decimals_for(x: Any, sig: int = SIG) -> int | None:
    """Decimals that give ``x`` ``sig`` significant digits (None when ``x`` is missing)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(v):
        return None
    if v == 0:
        return sig - 1
    return max(sig - 1 - math.floor(math.log10(abs(v))), 0)


def column_decimals(values: Sequence[Any], sig: int = SIG) -> int | None:
    """The decimals of a column: ``sig`` significant digits for its largest finite value."""
    finite = [abs(float(v)) for v in values if _finite(v)]
    return decimals_for(max(finite), sig) if finite else None


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def fmt_sig(x: Any, sig: int = SIG) -> str:
    """``x`` with ``sig`` significant digits in fixed notation; ``—`` when missing."""
    d = decimals_for(x, sig)
    return MISSING if d is None else f"{float(x):.{d}f}"


def fmt_pm(mean: Any, std: Any = None, *, decimals: int | None = None, sig: int = SIG) -> str:
    """``mean ± std`` (the std with the mean's decimals); the mean alone when std is missing;
    ``—`` when the mean is. ``decimals`` default: ``sig`` significant digits of the mean."""
    if not _finite(mean):
        return MISSING
    d = decimals if decimals is not None else decimals_for(mean, sig)
    text = _fixed(float(mean), d)
    return f"{text} ± {_fixed(float(std), d)}" if _finite(std) else text


def _fixed(x: float, decimals: int | None) -> str:
    """``x`` with ``decimals`` decimals, never ``-0.00`` (a negative value that rounds to 0)."""
    text = f"{x:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def marks(values: Sequence[float], lower_is_better: bool) -> list[str]:
    """``best`` for the best value(s), ``second`` for the next distinct value(s); values equal to
    10 significant digits tie."""
    v = tie_round(values)
    ranks = (v if lower_is_better else -v).rank(method="dense")
    return ["best" if r == 1 else "second" if r == 2 else "" for r in ranks]


@dataclass
class Cell:
    text: str
    mark: str = ""  # "best" | "second" | ""


@dataclass
class Table:
    """A display table: cells (with best / second marks) and, for CSV, the raw numbers."""

    name: str
    headers: list[str]
    rows: list[list[Cell]]
    data: pd.DataFrame | None = None
    caption: str = ""


def _md(cell: Cell) -> str:
    text = cell.text.replace("|", "\\|")
    return {"best": f"**{text}**", "second": f"<u>{text}</u>"}.get(cell.mark, text)


def _html(cell: Cell) -> str:
    text = html.escape(cell.text)
    return {"best": f"<b>{text}</b>", "second": f"<u>{text}</u>"}.get(cell.mark, text)


def tex_text(text: str) -> str:
    """The report's glyphs of ``text`` in LaTeX (the rest is escaped by the Styler)."""
    for glyph, tex in TEX_SYMBOLS.items():
        text = text.replace(glyph, tex)
    return text


def _latex(table: Table) -> str:
    """booktabs LaTeX through pandas' Styler."""
    headers = [tex_text(h) for h in table.headers]
    body = pd.DataFrame([[tex_text(c.text) for c in row] for row in table.rows], columns=headers)
    styles = pd.DataFrame(
        [
            [{"best": "textbf:--rwrap;", "second": "underline:--rwrap;"}.get(c.mark, "") for c in r]
            for r in table.rows
        ],
        columns=headers,
    )
    styler = body.style.hide(axis="index").format(escape="latex-math")
    styler = styler.format_index(escape="latex-math", axis=1)
    if len(body):
        styler = styler.apply(lambda _: styles.set_axis(body.index), axis=None)
    return styler.to_latex(hrules=True, column_format="l" * len(headers)).strip()


def render(table: Table, fmt: str) -> str:
    """The table as Markdown (``md``), LaTeX booktabs (``tex``) or HTML (``html``)."""
    if fmt == "tex":
        return _latex(table)
    if fmt == "md":
        headers = [h.replace("|", "\\|") for h in table.headers]
        body = [[_md(c) for c in row] for row in table.rows]
        return tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True)
    headers = [html.escape(h) for h in table.headers]
    body = [[_html(c) for c in row] for row in table.rows]
    return tabulate(body, headers=headers, tablefmt="unsafehtml", disable_numparse=True)
