"""The one page skeleton every tradesim HTML page shares: style, escaping, sections, inline plots.

Pages are self-contained (no network, no JavaScript): plots are PNGs embedded as base64, so a
page can be mailed, archived or opened offline. Page modules build their body from these pieces
and hand it to :func:`write_page`.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1100px;color:#1d2330}
h1{margin-bottom:4px}h2{border-bottom:1px solid #ccd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 10px;
border-bottom:1px solid #e4e6ee;text-align:right}th{background:#f3f4f8}td.k,th.k{text-align:left}
.metrics{display:grid;grid-template-columns:repeat(3,1fr);gap:0 24px}
.stamp{display:inline-block;padding:4px 10px;border-radius:4px;font-weight:600;background:#e6f4ea;
color:#17612e}.stamp.danger{background:#fde7e7;color:#b00020;border:2px solid #b00020}
.warn{color:#b00020}.note{color:#667;font-size:12px}img{max-width:100%}
"""
_ANCHOR = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def escape_html(value: object) -> str:
    """``value`` as text safe inside an element or a quoted attribute."""
    return html.escape(str(value), quote=True)


def img_tag(png: bytes, alt: str) -> str:
    """An ``<img>`` carrying ``png`` inline (base64), so the page needs no other file."""
    data = base64.b64encode(png).decode()
    return f'<img alt="{escape_html(alt)}" src="data:image/png;base64,{data}">'


def figure_png(fig: Figure) -> bytes:
    """A matplotlib figure as PNG bytes (Agg canvas, no pyplot state: safe in threads)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def section(anchor: str, heading: str, body: str) -> str:
    """A ``<section>`` with an anchor (``page.html#anchor``), an ``<h2>`` and ``body``."""
    if not _ANCHOR.fullmatch(anchor):
        raise ValueError(f"section anchor {anchor!r} must be a letter then letters, digits, - or _")
    return f"<section id={anchor}><h2>{escape_html(heading)}</h2>{body}</section>"


def key_value_table(items: Mapping[str, object]) -> str:
    """A two-column table of ``items`` (the setup of a page: what it ran on)."""
    rows = "".join(f"<tr><th class=k>{escape_html(k)}</th><td class=k>{escape_html(v)}</td></tr>"
                   for k, v in items.items())
    return f"<table>{rows}</table>"


def frame_table(frame: pd.DataFrame) -> str:
    """``frame`` as a table, floats to four significant digits."""
    head = "".join(f"<th>{escape_html(c)}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(
        f"<td>{escape_html(f'{v:.4g}' if isinstance(v, float) else v)}</td>" for v in row)
        + "</tr>" for row in frame.itertuples(index=False))
    return f"<table><tr>{head}</tr>{body}</table>"


def render_page(*, title: str, body: Iterable[str], heading: str | None = None) -> str:
    """The whole document: ``title`` in the tab, ``heading`` (default ``title``) as its ``<h1>``."""
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<title>{escape_html(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{escape_html(title if heading is None else heading)}</h1>"
            + "\n".join(body) + "</body></html>")


def write_page(path: str | Path, *, title: str, body: Iterable[str],
               heading: str | None = None) -> Path:
    """Write :func:`render_page` to ``path`` (UTF-8, parent folders made) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_page(title=title, body=body, heading=heading), encoding="utf-8")
    return target
