"""Document: the report page as a list of blocks (headings, paragraphs, lists, tables, images),
written as Markdown and as a standalone HTML page. Paragraph text may use ``**bold**``,
backticks, ``<u>underline</u>`` and ``[text](link)``."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

from mtlbench.report.render import Table, render

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;"
    "line-height:1.4}table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
    "th,td{border-bottom:1px solid #ccc;padding:3px 8px;text-align:left}"
    "th{border-bottom:2px solid #333}img{max-width:100%}code{background:#f3f3f3}"
)


class Doc:
    """A list of blocks rendered to Markdown and HTML."""

    def __init__(self) -> None:
        self.blocks: list[tuple[Any, ...]] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, table: Table) -> None:
        self.blocks.append(("table", table))

    def img(self, path: str, alt: str) -> int:
        """An image; returns its block index (a figure that fails replaces it by a note)."""
        self.blocks.append(("img", path, alt))
        return len(self.blocks) - 1

    def markdown(self) -> str:
        return "\n\n".join(_md_block(block) for block in self.blocks) + "\n"

    def html(self, title: str) -> str:
        head = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{STYLE}</style></head><body>",
        ]
        body = [_html_block(block) for block in self.blocks]
        return "\n".join([*head, *body, "</body></html>"]) + "\n"


def _md_block(block: tuple[Any, ...]) -> str:
    kind = block[0]
    if kind == "h":
        return f"{'#' * block[1]} {block[2]}"
    if kind == "p":
        return block[1]
    if kind == "ul":
        return "\n".join(f"- {item}" for item in block[1])
    if kind == "table":
        return render(block[1], "md")
    return f"![{block[2]}]({block[1]})"


def _html_block(block: tuple[Any, ...]) -> str:
    kind = block[0]
    if kind == "h":
        level = min(block[1], 6)
        return f'<h{level} id="{anchor(block[2])}">{inline_html(block[2])}</h{level}>'
    if kind == "p":
        return f"<p>{inline_html(block[1])}</p>"
    if kind == "ul":
        return "<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in block[1]) + "</ul>"
    if kind == "table":
        return render(block[1], "html")
    return f'<p><img src="{html.escape(block[1])}" alt="{html.escape(block[2])}"></p>'


def anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def inline_html(text: str) -> str:
    """Paragraph markup (bold, code, links, underline) as HTML, everything else escaped."""
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"`(.+?)`", r"<code>\1</code>", out)
    out = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', out)
    return out.replace("&lt;u&gt;", "<u>").replace("&lt;/u&gt;", "</u>")
