"""The report as a list of blocks (heading, text, table, image, code), rendered as markdown or as HTML.

The HTML is one self-contained file: images inlined as base64 data URIs, CSS inline, all text escaped.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Text:
    text: str  # may use **bold** and `code`; everything else is literal


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: str  # relative to the run folder
    alt: str


@dataclass
class Code:
    text: str


MD_SPECIAL = re.compile(r"([\\`*\[\]<>|]|(?<!\w)_|_(?!\w))")  # intraword _ (val_loss) needs no escape


def to_markdown(blocks: list) -> str:
    out = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Text):
            out.append(block.text)
        elif isinstance(block, Image):
            out.append(f"![{block.alt}]({block.path})")
        elif isinstance(block, Code):
            fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", block.text)), default=0))
            out.append(f"{fence}\n{block.text}\n{fence}")
        elif isinstance(block, Table):
            rows = [block.header, ["---"] * len(block.header), *block.rows]
            out.append("\n".join("| " + " | ".join(c if c == "---" else MD_SPECIAL.sub(r"\\\1", c) for c in r) + " |" for r in rows))
    return "\n\n".join(out) + "\n"


def inline_html(text: str) -> str:
    """Escaped text with the two inline marks Text blocks use: **bold** and `code`."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


STYLE_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}pre{background:#f6f6f6;padding:.6em;white-space:pre-wrap;word-break:break-word}
code{background:#f3f3f3;padding:0 .2em}img{max-width:100%}"""


def to_html(blocks: list, run_dir: Path, title: str) -> str:
    """One HTML file with nothing outside it: images inlined as base64 data URIs, CSS inline."""
    out = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Text):
            out.append(f"<p>{inline_html(block.text)}</p>")
        elif isinstance(block, Image):
            data = base64.b64encode((run_dir / block.path).read_bytes()).decode("ascii")
            out.append(f'<p><img alt="{html.escape(block.alt)}" src="data:image/png;base64,{data}"></p>')
        elif isinstance(block, Code):
            out.append(f"<pre>{html.escape(block.text)}</pre>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(c)}</th>" for c in block.header)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE_CSS}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")
