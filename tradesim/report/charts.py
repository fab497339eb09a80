"""Interactive charts every page shares (Plotly specs as JSON; :mod:`page` inlines Plotly once).

A chart is a ``<div>`` plus its spec in a ``<script type="application/json">``; the page's loader
draws them, so building a chart in Python is a JSON dump (no figure objects, no validation pass)
and a page with many charts stays fast to write.

Downsampling rule (long runs): a time series longer than :data:`MAX_POINTS` is cut into equal
runs of bars ("buckets"); each bucket keeps its lowest and its highest bar (plus the first and
last bar of the run), so every extreme, drawdown trough and spike stays on the chart at its true
value and time, and hovering shows real bars. Series drawn together (a stack of weights) share
the bars kept, so they still add up.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from tradesim.report.page import escape_html

MAX_POINTS = 5000  # per series drawn; longer series are min/max-decimated (module docstring)
MIN_BUCKETS = 250  # however many series share an axis, at least this many buckets each
PALETTE = ("#1f4e9c", "#e07b00", "#2e7d32", "#b00020", "#6a3d9a", "#00838f", "#8d6e63",
           "#c2185b", "#546e7a", "#9e9d24", "#3949ab", "#f4511e", "#00897b", "#7cb342",
           "#5e35b1", "#fb8c00", "#039be5", "#d81b60", "#6d4c41", "#757575")
_RED_GREEN = [[0, "#d73027"], [0.25, "#fc8d59"], [0.5, "#f7f7f2"], [0.75, "#91cf60"],
              [1, "#1a9850"]]  # ColorBrewer RdYlGn (Plotly.js has no such named scale)
_ids = itertools.count()


def color(i: int) -> str:
    """The ``i``-th colour of the shared palette (cycles)."""
    return PALETTE[i % len(PALETTE)]


def keep_rows(values: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """Row indices to draw of ``values`` [n] or [n, k]: all rows when ``n <= max_points``,
    else each bucket's min and max row per column, first and last row (module docstring)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    n, k = v.shape
    if n <= max_points:
        return np.arange(n)
    buckets = max(MIN_BUCKETS, max_points // (2 * max(1, k)))
    size = math.ceil(n / buckets)
    pad = buckets * size - n
    lo = np.vstack([np.where(np.isnan(v), np.inf, v), np.full((pad, k), np.inf)])
    hi = np.vstack([np.where(np.isnan(v), -np.inf, v), np.full((pad, k), -np.inf)])
    base = (np.arange(buckets) * size)[:, None]
    at_min = lo.reshape(buckets, size, k).argmin(axis=1) + base
    at_max = hi.reshape(buckets, size, k).argmax(axis=1) + base
    rows = np.concatenate([at_min.ravel(), at_max.ravel(), [0, n - 1]])
    return np.unique(np.clip(rows, 0, n - 1))


def xs(index: pd.Index | Sequence[Any]) -> list[Any]:
    """X values for JSON: times as milliseconds since the epoch (UTC; Plotly's date axis reads
    them), anything else as is."""
    if isinstance(index, pd.DatetimeIndex):
        naive = index.tz_convert("UTC").tz_localize(None) if index.tz is not None else index
        return naive.as_unit("ms").asi8.tolist()  # any resolution (s, us, ns) -> ms
    return [v.item() if isinstance(v, np.generic) else v for v in index]


def ys(values: Any, digits: int = 7) -> list[float | None]:
    """Y values for JSON: rounded to ``digits`` significant digits of the largest magnitude
    (a chart needs no more, and the page stays small); NaN and infinities become gaps."""
    a = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return [None] * a.size
    top = float(np.abs(a[finite]).max())
    decimals = int(min(12, max(0, digits - 1 - math.floor(math.log10(top))))) if top > 0 else 6
    out: list[float | None] = np.round(a, decimals).tolist()
    if not finite.all():
        for i in np.flatnonzero(~finite).tolist():
            out[i] = None
    return out


def figure(traces: Sequence[Mapping[str, Any]], *, layout: Mapping[str, Any] | None = None,
           height: int = 320, label: str = "chart", note: str = "") -> str:
    """One chart as HTML: a div, its JSON spec, and ``note`` under it."""
    ident = f"chart-{next(_ids)}"
    lay: dict[str, Any] = {"height": height, "margin": {"l": 64, "r": 20, "t": 30, "b": 40},
                           "hovermode": "x unified", "showlegend": True,
                           "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom",
                                      "x": 0, "font": {"size": 11}},
                           "font": {"family": "-apple-system,Segoe UI,Helvetica,Arial,sans-serif",
                                    "size": 12},
                           "paper_bgcolor": "#fff", "plot_bgcolor": "#fff"}
    lay.update(layout or {})
    for axis in ("xaxis", "yaxis"):
        lay[axis] = {"gridcolor": "#e8eaf0", "zerolinecolor": "#99a", **lay.get(axis, {})}
    spec = json.dumps({"data": list(traces), "layout": lay}, separators=(",", ":"),
                      allow_nan=False).replace("</", "<\\/")
    tail = f"<p class=note>{escape_html(note)}</p>" if note else ""
    return (f'<div class="chart" id="{ident}" role="img" aria-label="{escape_html(label)}"></div>'
            f'<script type="application/json" class="chart-spec" data-for="{ident}">{spec}'
            f"</script>{tail}")


def downsample_note(n: int, kept: int) -> str:
    """The sentence under a chart whose series were decimated (empty when nothing was)."""
    if kept >= n:
        return ""
    return (f"{n:,} bars drawn as {kept:,} points: each equal run of bars keeps its lowest and "
            "highest value, so extremes are exact; every bar is in the run folder.")


def time_chart(frame: pd.DataFrame, *, ytitle: str, height: int = 320, label: str = "",
               styles: Mapping[str, Mapping[str, Any]] | None = None,
               stack: Collection[str] = (), step: bool = False, yformat: str = "",
               log_toggle: bool = False, max_points: int = MAX_POINTS,
               extra: Sequence[Mapping[str, Any]] = (), layout: Mapping[str, Any] | None = None,
               intraday: bool | None = None) -> str:
    """Every column of ``frame`` (time x name) as a line over a date axis.

    ``styles`` adds Plotly trace keys per column (``line``, ``fill``...); ``stack`` columns are
    stacked areas; ``step`` draws steps (held weights); ``yformat`` is a d3 format for the axis
    and hover (``.1%``); ``log_toggle`` adds linear/log buttons; ``extra`` traces are appended
    as given.
    """
    frame = frame.loc[:, [c for c in frame.columns if frame[c].notna().any()]]
    rows = keep_rows(frame.to_numpy(dtype=np.float64), max_points) if len(frame) else np.arange(0)
    shown = frame.iloc[rows]
    x = xs(shown.index)
    traces: list[Mapping[str, Any]] = []
    for i, name in enumerate(shown.columns):
        t: dict[str, Any] = {"type": "scatter", "mode": "lines", "name": str(name), "x": x,
                             "y": ys(shown[name].to_numpy()),
                             "line": {"width": 1.4, "color": color(i)}}
        if step:
            t["line"]["shape"] = "hv"
        if name in stack:
            t.update(stackgroup="pos" if (shown[name].fillna(0) >= 0).all() else "neg",
                     line={"width": 0.5, "color": color(i), **({"shape": "hv"} if step else {})})
        if yformat:
            t["hovertemplate"] = f"%{{y:{yformat}}}"
        t.update((styles or {}).get(name, {}))
        traces.append(t)
    traces.extend(extra)
    if intraday is None:
        intraday = isinstance(frame.index, pd.DatetimeIndex) and len(frame) > 1 and bool(
            (frame.index[1:] - frame.index[:-1]).min() < pd.Timedelta(hours=20))
    dated = isinstance(frame.index, pd.DatetimeIndex)
    lay: dict[str, Any] = {
        "xaxis": {"type": "date", "hoverformat": "%Y-%m-%d %H:%M UTC" if intraday else "%Y-%m-%d"}
        if dated else {"type": "linear"},
        "yaxis": {"title": {"text": ytitle}, **({"tickformat": yformat} if yformat else {})}}
    if log_toggle:
        lay["updatemenus"] = [{"type": "buttons", "direction": "right", "x": 0.005,
                               "xanchor": "left", "y": 0.99, "yanchor": "top", "showactive": True,
                               "bgcolor": "rgba(255,255,255,0.85)", "pad": {"t": 0, "l": 0},
                               "font": {"size": 11}, "buttons": [
                                   {"label": "linear", "method": "relayout",
                                    "args": [{"yaxis.type": "linear"}]},
                                   {"label": "log", "method": "relayout",
                                    "args": [{"yaxis.type": "log"}]}]}]
    lay.update(layout or {})
    return figure(traces, layout=lay, height=height, label=label or ytitle,
                  note=downsample_note(len(frame), len(rows)))


def interval_chart(labels: Sequence[str], point: Sequence[float], low: Sequence[float],
                   high: Sequence[float], *, xtitle: str, baseline: Sequence[float] | None = None,
                   baseline_name: str = "", xrange: Sequence[float] | None = None) -> str:
    """One row per label, top to bottom: the point and its interval (rows without a finite
    interval keep their label and point, without error bars); ``baseline`` marks a reference
    value per row (a random answerer)."""
    p, lo, hi = (np.asarray(v, dtype=np.float64) for v in (point, low, high))
    ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(p)
    names = [str(s) for s in labels]
    traces: list[dict[str, Any]] = [{
        "type": "scatter", "mode": "markers", "name": "estimate", "x": ys(p), "y": names,
        "marker": {"color": color(0), "size": 9},
        "error_x": {"type": "data", "symmetric": False,
                    "array": ys(np.where(ok, hi - p, np.nan)),
                    "arrayminus": ys(np.where(ok, p - lo, np.nan)), "color": color(0),
                    "thickness": 2, "width": 5},
        "customdata": [[a, b] for a, b in zip(ys(lo), ys(hi))],
        "hovertemplate": "%{y}: %{x:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}]"
                         "<extra></extra>"}]
    if baseline is not None:
        traces.append({"type": "scatter", "mode": "markers", "name": baseline_name or "baseline",
                       "x": ys(np.asarray(baseline, dtype=np.float64)), "y": names,
                       "marker": {"symbol": "x", "color": color(3), "size": 9}})
    lay: dict[str, Any] = {"hovermode": "closest",
                           "xaxis": {"title": {"text": xtitle}, "zeroline": True,
                                     **({"range": list(xrange)} if xrange else {})},
                           "yaxis": {"autorange": "reversed", "automargin": True},
                           "margin": {"l": 10, "r": 20, "t": 30, "b": 50}}
    return figure(traces, layout=lay, height=int(32 * len(names) + 110), label=xtitle)


def bar_chart(labels: Sequence[str], values: Sequence[float], *, ytitle: str,
              colors: Sequence[str] | None = None, hline: float | None = None,
              hline_name: str = "", hover: Sequence[str] | None = None) -> str:
    """One bar per label (``colors`` per bar); ``hline`` draws a named reference level."""
    names = [str(s) for s in labels]
    bar: dict[str, Any] = {"type": "bar", "name": ytitle, "x": names, "y": ys(values),
                           "marker": {"color": list(colors) if colors else color(0)}}
    if hover is not None:
        bar.update(text=list(hover), hovertemplate="%{x}: %{y:.3f}<br>%{text}<extra></extra>",
                   textposition="none")
    traces: list[dict[str, Any]] = [bar]
    if hline is not None and math.isfinite(hline):
        traces.append({"type": "scatter", "mode": "lines", "name": hline_name or "reference",
                       "x": [names[0], names[-1]] if names else [], "y": [hline, hline],
                       "line": {"color": color(0), "dash": "dash", "width": 1.5}})
    lay = {"hovermode": "closest", "yaxis": {"title": {"text": ytitle}},
           "xaxis": {"automargin": True, "tickangle": -30}}
    return figure(traces, layout=lay, height=360, label=ytitle)


def heatmap(z: np.ndarray, *, x: Sequence[str], y: Sequence[str], title: str,
            fmt: str = ".1f", unit: str = "") -> str:
    """A red/green heatmap centred on zero with the value written in each cell."""
    vals = np.asarray(z, dtype=np.float64)
    lim = float(np.nanmax(np.abs(vals))) if np.isfinite(vals).any() else 1.0
    trace = {"type": "heatmap", "z": [ys(row) for row in vals], "x": list(x), "y": list(y),
             "colorscale": _RED_GREEN, "zmin": -lim, "zmax": lim,
             "texttemplate": f"%{{z:{fmt}}}", "textfont": {"size": 10},
             "hovertemplate": f"%{{y}} %{{x}}: %{{z:{fmt}}}{unit}<extra></extra>",
             "colorbar": {"title": {"text": unit or title}, "thickness": 12}}
    lay = {"hovermode": "closest", "showlegend": False,
           "yaxis": {"autorange": "reversed", "type": "category"},
           "xaxis": {"type": "category", "side": "top"}, "margin": {"l": 60, "r": 20, "t": 64,
                                                                    "b": 20}}
    return figure([trace], layout=lay, height=int(24 * len(y) + 110), label=title)


def sharpe_intervals(labels: Sequence[str], sharpe: Sequence[float], low: Sequence[float],
                     high: Sequence[float], *, xlabel: str) -> str:
    """Sharpe ratios with their intervals, one row per label (leaderboard, out-of-sample)."""
    return interval_chart(labels, sharpe, low, high, xtitle=xlabel)


def equity_curves(equity: pd.DataFrame, *, ylabel: str, bold: Collection[str] = ()) -> str:
    """Every column of ``equity`` (time x name) as a line; ``bold`` columns (the references a
    study is judged against) are drawn thick and dashed, the others thinner."""
    styles = {str(c): ({"line": {"width": 2.6, "dash": "dash", "color": color(i)}} if c in bold
                       else {"line": {"width": 1.3, "color": color(i)},
                             **({"opacity": 0.8} if bold else {})})
              for i, c in enumerate(equity.columns)}
    frame = equity.copy()
    frame.columns = [str(c) for c in frame.columns]
    if not isinstance(frame.index, pd.DatetimeIndex):
        with contextlib.suppress(ValueError, TypeError):
            frame.index = pd.DatetimeIndex(pd.to_datetime(frame.index, utc=True))
    return time_chart(frame, ytitle=ylabel, styles=styles, log_toggle=True)
