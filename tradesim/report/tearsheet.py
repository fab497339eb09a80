"""One self-contained HTML tear sheet per run: header, metrics, plots (inline PNG), trades.

The page skeleton (style, escaping, inline plots) is :mod:`tradesim.report.page`'s, shared with
every other page; this module draws what is particular to one run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from tradesim.report.page import escape_html, figure_png, img_tag, section, write_page
from tradesim.rewards.metrics import drawdown_of

MAX_TRADES = 500
_PERCENT = {"total_return", "cagr", "volatility", "max_drawdown", "best_bar", "worst_bar",
            "exposure_time", "mean_gross_exposure", "mean_net_exposure", "turnover", "win_rate",
            "avg_trade_return", "benchmark_return", "benchmark_cagr", "alpha", "tracking_error"}


def write_tearsheet(path: str | Path, *, title: str, equity: pd.Series, benchmark: pd.Series | None,
                    weights: pd.DataFrame, trades: pd.DataFrame, metrics: Mapping[str, float],
                    meta: Mapping[str, Any], log_scale: bool = False,
                    max_trades: int = MAX_TRADES) -> Path:
    """Write the tear sheet of one run to ``path`` (a single HTML file) and return the path.

    ``meta`` keys shown in the header when present: agent, symbols, start, end, interval, costs,
    fill_mode (stamped red when fills are same-bar close), fingerprints, warnings, leakage,
    knowledge_cutoff; any other keys are listed too.
    """
    sections = [
        _header(meta),
        section("metrics", "Metrics", _metrics_table(metrics)),
        section("equity", "Equity vs benchmark",
                img_tag(_plot_equity(equity, benchmark, log_scale), "equity curve")),
        section("drawdown", "Drawdown (underwater)", img_tag(_plot_drawdown(equity), "drawdown")),
        section("exposure", "Exposure and positions",
                img_tag(_plot_weights(weights), "weights") if weights is not None and len(weights)
                else "<p class=note>no weights recorded</p>"),
    ]
    if _is_daily(equity, metrics):
        sections.append(section("monthly", "Monthly returns",
                                img_tag(_plot_monthly(equity), "monthly returns")))
    sections.append(section("trades", "Trades", _trades_table(trades, max_trades)))
    return write_page(path, title=title, body=sections)


def _same_bar(fill_mode: object) -> bool:
    text = str(fill_mode).lower().replace("-", "_").replace(" ", "_")
    return "same_bar" in text or text in {"close", "same_close", "bar_close"}


def _header(meta: Mapping[str, Any]) -> str:
    fill = meta.get("fill_mode", "unknown")
    danger = _same_bar(fill)
    why = " — same-bar close fills: results are optimistic" if danger else ""
    stamp = (f'<span class="stamp{" danger" if danger else ""}" id="fill-mode">FILL MODE: '
             f"{escape_html(fill)}{why}</span>")
    rows = []
    for key, value in meta.items():
        if key in {"fill_mode", "warnings", "leakage"}:
            continue
        if isinstance(value, Mapping):
            value = "<br>".join(f"{escape_html(k)}: {escape_html(v)}" for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            value = escape_html(", ".join(map(str, value)))
        else:
            value = escape_html(value)
        rows.append(f"<tr><th class=k>{escape_html(key)}</th><td class=k>{value}</td></tr>")
    alerts = [*map(str, meta.get("warnings") or []),
              *(f"LLM knowledge-cutoff leakage: {item}" for item in meta.get("leakage") or [])]
    warn = ("<ul class=warn id=warnings>" + "".join(f"<li>{escape_html(a)}</li>" for a in alerts)
            + "</ul>" if alerts else "")
    return (f'<section id="run"><p>{stamp}</p>{_costs_line(meta)}{warn}'
            f'<table>{"".join(rows)}</table></section>')


def _costs_line(meta: Mapping[str, Any]) -> str:
    """One line naming the run's cost model: commission, spread, impact formula and cap."""
    config = meta.get("config")
    costs = config.get("costs") if isinstance(config, Mapping) else meta.get("costs")
    if not isinstance(costs, Mapping):
        return ""
    from tradesim.engine.costs import load_costs
    from tradesim.errors import ConfigError

    try:
        text = load_costs(dict(costs)).describe()
    except ConfigError:  # a record from an older cost model: show its fields as saved
        text = ", ".join(f"{k} {v}" for k, v in costs.items())
    return f'<p id="costs"><b>COST MODEL:</b> {escape_html(text)}</p>'


def _fmt(key: str, value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if key in _PERCENT:
        return f"{value:.2%}"
    if float(value).is_integer() and abs(value) >= 1:
        return f"{value:,.0f}"
    return f"{value:,.3f}"


def _metrics_table(metrics: Mapping[str, float]) -> str:
    cells = [f"<tr><th class=k>{escape_html(k.replace('_', ' '))}</th>"
             f"<td>{escape_html(_fmt(k, v))}</td></tr>" for k, v in metrics.items()]
    thirds = max(1, math.ceil(len(cells) / 3))
    return '<div class="metrics">' + "".join(
        f"<table>{''.join(cells[i:i + thirds])}</table>" for i in range(0, len(cells), thirds)
    ) + "</div>"


def _trades_table(trades: pd.DataFrame | None, max_trades: int) -> str:
    if trades is None or not len(trades):
        return "<p class=note>no closed trades</p>"
    shown = trades.tail(max_trades)
    note = (f"<p class=note>showing the last {max_trades} of {len(trades)} trades; all trades "
            "are in the run folder</p>" if len(trades) > max_trades else "")
    head = "".join(f"<th>{escape_html(c)}</th>" for c in shown.columns)
    body = "".join("<tr>" + "".join(f"<td>{escape_html(_cell(v))}</td>" for v in row) + "</tr>"
                   for row in shown.itertuples(index=False))
    return f"{note}<table id=trades-table><tr>{head}</tr>{body}</table>"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 10 else f"{value:,.2f}"
    return str(value)


def _is_daily(equity: pd.Series, metrics: Mapping[str, float]) -> bool:
    ppy = metrics.get("periods_per_year", float("nan"))
    return isinstance(equity.index, pd.DatetimeIndex) and 250 <= ppy <= 366


def _figure(height: float) -> tuple[Figure, Any]:
    fig = Figure(figsize=(11, height))
    return fig, fig.subplots()


def _plot_equity(equity: pd.Series, benchmark: pd.Series | None, log_scale: bool) -> bytes:
    fig, ax = _figure(4)
    ax.plot(equity.index, equity.to_numpy(), lw=1.2, label="strategy", color="#1f4e9c")
    if benchmark is not None and len(benchmark):
        bench = benchmark.loc[benchmark.index >= equity.index[0]]
        if len(bench):
            scaled = bench / bench.iloc[0] * float(equity.iloc[0])
            ax.plot(scaled.index, scaled.to_numpy(), lw=1.0, label="benchmark (rescaled)",
                    color="#888")
    if log_scale:
        ax.set_yscale("log")
    ax.set_ylabel("equity")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    return figure_png(fig)


def _plot_drawdown(equity: pd.Series) -> bytes:
    dd = drawdown_of(equity) * 100
    fig, ax = _figure(2.5)
    ax.fill_between(dd.index, dd.to_numpy(), 0, color="#c0392b", alpha=0.5, lw=0)
    ax.set_ylabel("drawdown %")
    ax.grid(alpha=0.3)
    return figure_png(fig)


def _plot_weights(weights: pd.DataFrame) -> bytes:
    w = weights.ffill().fillna(0.0)
    fig, ax = _figure(3)
    values = w.to_numpy(dtype=float).T
    labels = [str(c) for c in w.columns]
    colors = colormaps["tab20"](np.arange(len(labels)) % 20)
    ax.stackplot(w.index, np.clip(values, 0, None), labels=labels, colors=colors, alpha=0.85,
                 step="post")
    if (values < 0).any():
        ax.stackplot(w.index, np.clip(values, None, 0), colors=colors, alpha=0.85, step="post")
    ax.plot(w.index, np.abs(values).sum(axis=0), color="black", lw=0.8, label="gross")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylabel("weight")
    ax.grid(alpha=0.3)
    if len(labels) <= 20:
        ax.legend(loc="upper left", ncol=min(len(labels) + 1, 8), fontsize=8)
    return figure_png(fig)


def _plot_monthly(equity: pd.Series) -> bytes:
    index = equity.index.tz_localize(None) if equity.index.tz is not None else equity.index
    month_end = pd.Series(equity.to_numpy(), index=index).resample("ME").last().dropna()
    first = pd.Series([float(equity.iloc[0])], index=[index[0] - pd.offsets.MonthEnd(1)])
    monthly = pd.concat([first, month_end]).pct_change().iloc[1:] * 100
    grid = (pd.DataFrame({"year": monthly.index.year, "month": monthly.index.month,
                          "r": monthly.to_numpy()})
            .pivot(index="year", columns="month", values="r").reindex(columns=range(1, 13)))
    fig, ax = _figure(0.35 * len(grid) + 1.2)
    lim = float(np.nanmax(np.abs(grid.to_numpy()))) if grid.notna().any().any() else 1.0
    ax.imshow(grid.to_numpy(), cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(12), ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
                              "Oct", "Nov", "Dec"])
    ax.set_yticks(range(len(grid)), [str(y) for y in grid.index])
    if len(grid) <= 30:
        for (i, j), v in np.ndenumerate(grid.to_numpy()):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7)
    ax.set_title("monthly return %", fontsize=10)
    return figure_png(fig)
