"""The one page skeleton every tradesim HTML page shares: style, escaping, sections, cards, charts.

Pages are self-contained and work offline: charts are interactive Plotly figures (zoom, pan,
hover) whose specs sit in the page as JSON, and the Plotly library is inlined once per page, at
the end, only when the page has a chart (no CDN, no network fetch). Page modules build their
body from these pieces and hand it to :func:`write_page`.
"""

from __future__ import annotations

import functools
import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

CSS = """
:root{--ink:#1d2330;--mute:#667085;--line:#e4e6ee;--head:#f3f4f8;--good:#17612e;--bad:#b00020;
--warn:#8a5300;--blue:#1f4e9c}
*{box-sizing:border-box}
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;padding:20px 24px;
max-width:1180px;color:var(--ink);line-height:1.4}
h1{margin:0 0 4px;font-size:26px}h2{border-bottom:1px solid #ccd;padding-bottom:4px;margin-top:34px;
font-size:20px}h3{font-size:15px;margin:18px 0 6px}
p.sub{margin:0 0 10px;color:var(--mute)}
nav.toc{margin:8px 0 4px;font-size:13px}nav.toc a{margin-right:12px;color:var(--blue);
text-decoration:none}nav.toc a:hover{text-decoration:underline}
table{border-collapse:collapse;font-size:13px;margin:4px 0}td,th{padding:3px 10px;
border-bottom:1px solid var(--line);text-align:right;vertical-align:top}th{background:var(--head)}
td.k,th.k{text-align:left}tr.group th{background:#e8eaf2;text-align:left;font-size:12px;
text-transform:uppercase;letter-spacing:.04em}
.scroll{max-height:520px;overflow:auto;border:1px solid var(--line)}
.metrics{display:grid;grid-template-columns:repeat(3,1fr);gap:0 24px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px;margin:14px 0}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 12px;background:#fafbfd}
.card .label{font-size:12px;color:var(--mute);text-transform:uppercase;letter-spacing:.03em}
.card .value{font-size:22px;font-weight:600;margin:2px 0}.card .detail{font-size:12px;color:var(--mute)}
.card.good .value{color:var(--good)}.card.bad .value{color:var(--bad)}
.card.caution{border-color:#e0b25c}.card.caution .value{color:var(--warn)}
.stamps{display:flex;flex-wrap:wrap;gap:8px;margin:8px 0}
.stamp{display:inline-block;padding:4px 10px;border-radius:4px;font-weight:600;background:#e6f4ea;
color:var(--good);font-size:13px}.stamp.danger{background:#fde7e7;color:var(--bad);
border:2px solid var(--bad)}.stamp.info{background:#eef1f8;color:#334}
.flag{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.flag.ok{background:#e6f4ea;color:var(--good)}.flag.watch{background:#fff4de;color:var(--warn)}
.flag.tripped{background:#fde7e7;color:var(--bad)}.flag.na{background:#eef0f4;color:var(--mute)}
.warn{color:var(--bad)}.note{color:var(--mute);font-size:12px}img{max-width:100%}
details{margin:8px 0}details>summary{cursor:pointer;font-weight:600;padding:4px 0}
.chart{width:100%;min-height:120px}
"""
_ANCHOR = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_SECTION = re.compile(r"<section id=\"?([A-Za-z][A-Za-z0-9_-]*)\"?><h2>(.*?)</h2>")
CHART_MARK = 'class="chart-spec"'  # what a chart's JSON spec carries (see tradesim.report.charts)

# Draws every chart spec on the page once Plotly is loaded (a chart that fails says so on the
# console and the others still draw); charts in a closed <details> are resized when it opens
# (Plotly cannot measure a hidden element).
_LOADER = """(function(){
if(typeof Plotly==='undefined'){return;}
var specs=document.querySelectorAll('script.chart-spec');
for(var i=0;i<specs.length;i++){var s=specs[i];var el=document.getElementById(s.getAttribute('data-for'));
if(!el){continue;}
try{var spec=JSON.parse(s.textContent);
Plotly.newPlot(el,spec.data,spec.layout,{responsive:true,displaylogo:false,
modeBarButtonsToRemove:['select2d','lasso2d']});}
catch(e){console.error('chart '+el.id+' failed: '+e);}}
var ds=document.querySelectorAll('details');
for(var j=0;j<ds.length;j++){ds[j].addEventListener('toggle',function(ev){var d=ev.target;
if(!d.open){return;}var ps=d.querySelectorAll('.js-plotly-plot');
for(var k=0;k<ps.length;k++){Plotly.Plots.resize(ps[k]);}});}
})();"""


def escape_html(value: object) -> str:
    """``value`` as text safe inside an element or a quoted attribute."""
    return html.escape(str(value), quote=True)


def section(anchor: str, heading: str, body: str) -> str:
    """A ``<section>`` with an anchor (``page.html#anchor``), an ``<h2>`` and ``body``."""
    if not _ANCHOR.fullmatch(anchor):
        raise ValueError(f"section anchor {anchor!r} must be a letter then letters, digits, - or _")
    return f"<section id={anchor}><h2>{escape_html(heading)}</h2>{body}</section>"


def details(summary: str, body: str, *, open_: bool = False, anchor: str | None = None) -> str:
    """A collapsible block: ``summary`` always shown, ``body`` on a click."""
    ident = f" id={anchor}" if anchor and _ANCHOR.fullmatch(anchor) else ""
    return (f"<details{ident}{' open' if open_ else ''}><summary>{escape_html(summary)}</summary>"
            f"{body}</details>")


@dataclass(frozen=True, slots=True)
class Card:
    """One headline figure: a label, the value as text, a line of context and a tone."""

    label: str
    value: str
    detail: str = ""
    tone: str = ""  # "good", "bad", "caution" or "" (neutral)
    key: str = ""  # data-key attribute, so tests and scripts find a card by name


def cards(items: Sequence[Card]) -> str:
    """The summary header: one card per headline figure, in a responsive grid."""
    out = []
    for c in items:
        tone = f" {c.tone}" if c.tone in {"good", "bad", "caution"} else ""
        key = f' data-key="{escape_html(c.key)}"' if c.key else ""
        out.append(f'<div class="card{tone}"{key}><div class=label>{escape_html(c.label)}</div>'
                   f"<div class=value>{escape_html(c.value)}</div>"
                   f"<div class=detail>{escape_html(c.detail)}</div></div>")
    return f'<div class="cards" id="summary">{"".join(out)}</div>'


def key_value_table(items: Mapping[str, object]) -> str:
    """A two-column table of ``items`` (the setup of a page: what it ran on); nested mappings
    become dotted keys and lists comma-separated values, so nothing is shown as a dict dump."""
    rows = "".join(f"<tr><th class=k>{escape_html(k)}</th><td class=k>{escape_html(v)}</td></tr>"
                   for k, v in flatten(items).items())
    return f"<table>{rows}</table>"


def grouped_table(groups: Mapping[str, Mapping[str, object]]) -> str:
    """A two-column table in titled groups (a run's configuration: run, agent, costs...)."""
    rows = []
    for title, items in groups.items():
        flat = flatten(items)
        if not flat:
            continue
        rows.append(f"<tr class=group><th colspan=2>{escape_html(title)}</th></tr>")
        rows += [f"<tr><th class=k>{escape_html(k)}</th><td class=k>{escape_html(v)}</td></tr>"
                 for k, v in flat.items()]
    return f"<table class=config>{''.join(rows)}</table>"


def flatten(items: Mapping[str, object], prefix: str = "") -> dict[str, str]:
    """``items`` as dotted key -> display text (``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``)."""
    out: dict[str, str] = {}
    for key, value in items.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if value:
                out.update(flatten(value, f"{name}."))
            else:
                out[name] = "–"
        else:
            out[name] = display(value)
    return out


def display(value: object) -> str:
    """One value as short text: lists comma-separated, None as a dash, floats to 6 digits."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, (list, tuple, set, frozenset)):
        if not value:
            return "–"
        return ", ".join(display(v) if not isinstance(v, Mapping) else
                         "{" + ", ".join(f"{k}: {display(x)}" for k, x in v.items()) + "}"
                         for v in value)
    return str(value)


def frame_table(frame: pd.DataFrame, *, table_id: str | None = None) -> str:
    """``frame`` as a table, floats to four significant digits, text columns left-aligned."""
    text = [not pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    head = "".join(f"<th{' class=k' if t else ''}>{escape_html(c)}</th>"
                   for c, t in zip(frame.columns, text))
    body = "".join("<tr>" + "".join(
        f"<td{' class=k' if t else ''}>{escape_html(_cell(v))}</td>" for v, t in zip(row, text))
        + "</tr>" for row in frame.itertuples(index=False))
    ident = f" id={table_id}" if table_id else ""
    return f"<table{ident}><tr>{head}</tr>{body}</table>"


def _cell(v: object) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4g}"
    return str(v)


@functools.cache
def plotly_js() -> str:
    """The Plotly library's source (shipped inside the ``plotly`` package; read once)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().replace("</script", "<\\/script")


def render_page(*, title: str, body: Iterable[str], heading: str | None = None,
                subtitle: str | None = None, toc: bool = True) -> str:
    """The whole document: ``title`` in the tab, ``heading`` (default ``title``) as its ``<h1>``,
    ``subtitle`` under it, a contents line of the sections, then ``body``; Plotly is inlined
    once at the end when a chart is on the page."""
    content = "\n".join(body)
    nav = ""
    if toc:
        links = [f'<a href="#{a}">{h}</a>' for a, h in _SECTION.findall(content)]
        nav = f'<nav class="toc">{"".join(links)}</nav>' if len(links) > 2 else ""
    sub = f'<p class="sub">{escape_html(subtitle)}</p>' if subtitle else ""
    scripts = ""
    if CHART_MARK in content:
        scripts = (f"<noscript><p class=warn>The charts need JavaScript.</p></noscript>"
                   f"<script>{plotly_js()}</script><script>{_LOADER}</script>")
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape_html(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{escape_html(title if heading is None else heading)}</h1>{sub}{nav}"
            + content + scripts + "</body></html>")


def write_page(path: str | Path, *, title: str, body: Iterable[str],
               heading: str | None = None, subtitle: str | None = None) -> Path:
    """Write :func:`render_page` to ``path`` (UTF-8, parent folders made) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_page(title=title, body=body, heading=heading, subtitle=subtitle),
                      encoding="utf-8")
    return target
