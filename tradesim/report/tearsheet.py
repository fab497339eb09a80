"""One self-contained HTML tear sheet per run: summary cards, interactive charts, monitors, trades.

The page skeleton (style, escaping, cards, the inlined chart library) is
:mod:`tradesim.report.page`'s, shared with every other page; charts come from
:mod:`tradesim.report.charts`; this module draws what is particular to one run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradesim.report.charts import heatmap, time_chart
from tradesim.report.page import (
    Card,
    cards,
    details,
    escape_html,
    grouped_table,
    section,
    write_page,
)
from tradesim.rewards.metrics import drawdown_of

MAX_TRADES = 500
_PERCENT = {"total_return", "cagr", "volatility", "max_drawdown", "best_bar", "worst_bar",
            "exposure_time", "mean_gross_exposure", "mean_net_exposure", "win_rate",
            "avg_trade_return", "benchmark_return", "benchmark_cagr", "alpha", "tracking_error"}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# name -> (what it measures, what it catches, the rule that flags it)
MONITORS: dict[str, tuple[str, str, str]] = {
    "turnover": ("two-sided turnover per year (sum of |weight changes|, annualised)",
                 "churning: a reward gamed by trading that costs must eat",
                 "watch above 12 / yr, tripped above 25 / yr (the balanced score's budget)"),
    "mean_holding_bars": ("mean bars a position is held (closed trades, else runs of weights)",
                          "churning: positions flipped bar to bar",
                          "tripped below 2 bars, watch below 5"),
    "peak_leverage": ("largest gross exposure as a multiple of equity",
                      "leverage maximising",
                      "watch above 1x, tripped above the run's leverage cap"),
    "top1pct_pnl_share": ("share of all gains made in the best 1% of bars",
                          "a result carried by a few lucky (or leaked) bars",
                          "watch above 30%, tripped above 50%"),
    "pnl_without_top1pct": ("P&L left without the best 1% of bars (fraction of start equity)",
                            "profit that exists only thanks to a few bars",
                            "watch when negative while the run made money"),
    "long_pnl": ("P&L of the long side (fraction of start equity)", "context for asymmetry",
                 "not flagged"),
    "short_pnl": ("P&L of the short side (fraction of start equity)", "context for asymmetry",
                  "not flagged"),
    "long_short_asymmetry": ("(long - short P&L) / (|long| + |short|)",
                             "a sign error that pays one side",
                             "watch above 0.9 in size when both sides traded"),
    "reward_gap": ("in-sample reward minus out-of-sample hardened score",
                   "overfitting to the reward", "watch above 0.2, tripped above 0.4"),
}
_NOT_MEASURED = {"long_pnl": "needs per-symbol returns (the leaderboard measures it)",
                 "short_pnl": "needs per-symbol returns (the leaderboard measures it)",
                 "long_short_asymmetry": "needs per-symbol returns (the leaderboard measures it)",
                 "reward_gap": "needs an in-sample reward and an out-of-sample score (training)"}


def write_tearsheet(path: str | Path, *, title: str, equity: pd.Series, benchmark: pd.Series | None,
                    weights: pd.DataFrame, trades: pd.DataFrame, metrics: Mapping[str, float],
                    meta: Mapping[str, Any], log_scale: bool = False,
                    max_trades: int = MAX_TRADES, subtitle: str | None = None,
                    book: pd.DataFrame | None = None, fills: pd.DataFrame | None = None,
                    extra: Sequence[str] = (), extra_cards: Sequence[Card] = ()) -> Path:
    """Write the tear sheet of one run to ``path`` (a single HTML file) and return the path.

    ``meta`` is the run's meta; keys used when present: fill_mode (stamped red when fills are
    same-bar close), warnings, leakage, monitors, costs_paid, hardened, isolation, partial,
    error, config (the frozen run config, shown as a table), fingerprints; the rest is listed
    under the configuration. ``book`` is the equity table (gross/net exposure, cumulative
    costs), ``fills`` the fills table (cost components over time); ``extra`` sections (contest,
    team, LLM cost) go after the monitors, ``extra_cards`` after the summary cards.
    """
    given = meta.get("config")
    config: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    start = float(metrics.get("start_equity", equity.iloc[0] if len(equity) else math.nan))
    paid = _costs_paid(meta, book, fills)
    body = [
        _stamps(meta),
        cards([*_summary_cards(equity, benchmark, metrics, meta, paid, start), *extra_cards]),
        section("equity", "Equity vs benchmark", _equity_chart(equity, benchmark, log_scale)),
        section("drawdown", "Drawdown (underwater)", time_chart(
            (drawdown_of(equity)).to_frame("drawdown"), ytitle="drawdown", yformat=".1%",
            height=240, styles={"drawdown": {"fill": "tozeroy", "line": {
                "color": "#c0392b", "width": 1}, "fillcolor": "rgba(192,57,43,0.35)"}})),
        section("exposure", "Positions and exposure", _exposure(weights, book)),
        section("costs", "Costs", _costs(book, fills, paid, start, config, meta)),
    ]
    if _is_daily(equity, metrics):
        body.append(section("monthly", "Monthly returns", _monthly(equity)))
    body.append(section("monitors", "Hack monitors", _monitors(meta, config, metrics)))
    body.extend(extra)
    body.append(section("metrics", "All metrics", _metrics_table(metrics)))
    body.append(section("trades", "Trades", _trades_table(trades, max_trades)))
    body.append(section("config", "Configuration and record", _configuration(meta, config)))
    return write_page(path, title=title, body=body, subtitle=subtitle)


# --- header -----------------------------------------------------------------------------------


def _same_bar(fill_mode: object) -> bool:
    text = str(fill_mode).lower().replace("-", "_").replace(" ", "_")
    return "same_bar" in text or text in {"close", "same_close", "bar_close"}


def _stamps(meta: Mapping[str, Any]) -> str:
    """Fill mode, isolation, partial run, and every warning, above the numbers they qualify."""
    fill = meta.get("fill_mode", "unknown")
    danger = _same_bar(fill)
    why = " — same-bar close fills: results are optimistic" if danger else ""
    stamps = [f'<span class="stamp{" danger" if danger else ""}" id="fill-mode">FILL MODE: '
              f"{escape_html(fill)}{why}</span>"]
    if meta.get("isolation"):
        stamps.append(f'<span class="stamp info">agent ran {escape_html(meta["isolation"])}</span>')
    if meta.get("partial"):
        stamps.append('<span class="stamp danger" id="partial">PARTIAL RUN: stopped at '
                      f'{escape_html(meta.get("error") or "an error")}</span>')
    alerts = [*map(str, meta.get("warnings") or []),
              *(f"LLM knowledge-cutoff leakage: {item}" for item in meta.get("leakage") or [])]
    if meta.get("metrics_error"):
        alerts.append(f"metrics not computed: {meta['metrics_error']}")
    if meta.get("orders_shrunk"):
        alerts.append(f"{meta['orders_shrunk']} order(s) cut at the fill to the cash and leverage "
                      "the account had (order_shrunk events): the book holds less than the "
                      "weights asked")
    if meta.get("targets_unreached"):
        alerts.append(f"{meta['targets_unreached']} target(s) the participation cap held back "
                      "were not reached before the run ended (target_unreached events)")
    warn = ("<ul class=warn id=warnings>" + "".join(f"<li>{escape_html(a)}</li>" for a in alerts)
            + "</ul>" if alerts else "")
    return f'<section id="run"><div class=stamps>{"".join(stamps)}</div>{warn}</section>'


def _summary_cards(equity: pd.Series, benchmark: pd.Series | None, m: Mapping[str, float],
                   meta: Mapping[str, Any], paid: Mapping[str, float], start: float) -> list[Card]:
    total = m.get("total_return", math.nan)
    bench = m.get("benchmark_return", math.nan)
    final = float(equity.iloc[-1]) if len(equity) else math.nan
    out = [Card("Final equity", _money(final), f"from {_money(start)}", key="final_equity"),
           Card("Total return", _pct(total, signed=True),
                (f"benchmark {_pct(bench, signed=True)}; "
                 f"{_pct(total - bench, signed=True)} vs benchmark" if _finite(bench)
                 else "no benchmark") + (f"; CAGR {_pct(m['cagr'], signed=True)}"
                                         if _finite(m.get("cagr")) else ""),
                _tone(total), key="total_return")]
    ci = sharpe_ci(equity, m.get("periods_per_year", 252.0))
    sharpe = m.get("sharpe", math.nan)
    out.append(Card("Sharpe", _num(sharpe, 2), f"95% CI {_num(ci[0], 2)} .. {_num(ci[1], 2)} "
                    f"({ci[2]})" if ci else "too few bars for an interval", _tone(sharpe),
                    key="sharpe"))
    days = m.get("max_drawdown_days", math.nan)
    out.append(Card("Max drawdown", _pct(m.get("max_drawdown", math.nan)),
                    f"{_count(days)} days to recover or to the end" if _finite(days) else "",
                    "bad" if m.get("max_drawdown", 0) < -0.25 else "", key="max_drawdown"))
    spent = float(sum(paid.values())) if paid else math.nan
    out.append(Card("Costs paid", _money(spent),
                    f"{_pct(spent / start)} of start equity" if _finite(spent) and start > 0
                    else "", key="costs"))
    trades = m.get("trades", math.nan)
    out.append(Card("Trades", _count(trades),
                    f"{_pct(m.get('win_rate', math.nan))} winners, held "
                    f"{_num(m.get('avg_bars_held', math.nan), 1)} bars on average"
                    if _finite(trades) and trades > 0 else "closed round trips", key="trades"))
    gross = m.get("mean_gross_exposure", math.nan)
    if _finite(gross):
        out.append(Card("Exposure", _pct(gross), f"mean gross; in the market "
                        f"{_pct(m.get('exposure_time', math.nan))} of bars", key="exposure"))
    hardened = meta.get("hardened", m.get("hardened"))
    if isinstance(hardened, Mapping):
        hardened = hardened.get("value")
    if isinstance(hardened, (int, float)) and _finite(float(hardened)):
        out.append(Card("Hardened score", _num(float(hardened), 3),
                        "0.5 = level with the references; in (0, 1)", key="hardened"))
    flags = monitor_flags(meta.get("monitors") or {}, meta.get("config") or {}, m)
    tripped = [k for k, (state, _) in flags.items() if state == "tripped"]
    watch = [k for k, (state, _) in flags.items() if state == "watch"]
    out.append(Card("Monitors", f"{len(tripped)} tripped" if tripped else
                    f"{len(watch)} to watch" if watch else "all clear",
                    ", ".join(tripped or watch) or f"{len(flags)} checked",
                    "bad" if tripped else "caution" if watch else "good", key="monitors"))
    return out


def sharpe_ci(equity: pd.Series, periods_per_year: float) -> tuple[float, float, str] | None:
    """A 95% interval for the annualised Sharpe of ``equity``'s bar returns: the asymptotic
    interval of Mertens (2002), which widens with skew and fat tails. NumPy only, so a 100k-bar
    page costs no SciPy import and no resampling; the leaderboard bootstraps blocks instead."""
    values = equity.to_numpy(dtype=np.float64)
    if values.size < 31 or not np.isfinite(values).all() or (values <= 0).any():
        return None
    r = values[1:] / values[:-1] - 1
    sd = float(r.std())
    if not sd > 0:
        return None
    n, ppy = r.size, float(periods_per_year) if _finite(periods_per_year) else 252.0
    z = (r - r.mean()) / sd
    skew, kurt = float((z ** 3).mean()), float((z ** 4).mean())
    sr = float(r.mean() / r.std(ddof=1))
    se = math.sqrt(max(1e-12, (1 - skew * sr + (kurt - 1) / 4 * sr * sr) / (n - 1)))
    scale = math.sqrt(ppy)
    return (sr - 1.96 * se) * scale, (sr + 1.96 * se) * scale, "Mertens 2002"


# --- charts -----------------------------------------------------------------------------------


def _equity_chart(equity: pd.Series, benchmark: pd.Series | None, log_scale: bool) -> str:
    frame = equity.to_frame("strategy")
    if benchmark is not None and len(benchmark) and benchmark.notna().any():
        bench = benchmark.loc[benchmark.index >= equity.index[0]].dropna()
        if len(bench):
            frame["benchmark (rescaled)"] = (bench / bench.iloc[0] * float(equity.iloc[0])
                                             ).reindex(frame.index)
    styles = {"strategy": {"line": {"width": 1.8, "color": "#1f4e9c"}},
              "benchmark (rescaled)": {"line": {"width": 1.2, "color": "#888"}}}
    return time_chart(frame, ytitle="equity", styles=styles, log_toggle=True, height=380,
                      yformat=",.0f",
                      layout={"yaxis": {"type": "log", "title": {"text": "equity"}}}
                      if log_scale else None)


def _exposure(weights: pd.DataFrame | None, book: pd.DataFrame | None) -> str:
    if weights is None or not len(weights):
        return "<p class=note>no weights recorded</p>"
    w = weights.ffill().fillna(0.0)
    held = w.loc[:, (w != 0).any()]
    order = held.abs().mean().sort_values(ascending=False).index
    top = list(order[:12])
    frame = pd.DataFrame(index=w.index)
    stack: list[str] = []
    for s in top:
        col = held[s]
        if (col > 0).any():
            frame[f"{s}"] = col.clip(lower=0)
            stack.append(f"{s}")
        if (col < 0).any():
            frame[f"{s} (short)"] = col.clip(upper=0)
            stack.append(f"{s} (short)")
    if len(order) > len(top):
        rest = held[order[len(top):]]
        frame[f"{len(order) - len(top)} others"] = rest.clip(lower=0).sum(axis=1)
        stack.append(f"{len(order) - len(top)} others")
    gross = (book["gross_exposure"] if book is not None and "gross_exposure" in book
             else w.abs().sum(axis=1))
    net = book["net_exposure"] if book is not None and "net_exposure" in book else w.sum(axis=1)
    frame["gross"] = gross.reindex(frame.index)
    frame["net"] = net.reindex(frame.index)
    styles = {"gross": {"line": {"color": "#111", "width": 1.2}},
              "net": {"line": {"color": "#555", "width": 1, "dash": "dot"}}}
    note = (f"<p class=note>Weights held at each close, stacked per symbol (the {len(top)} "
            f"largest of {len(order)} held; the rest summed); gross and net exposure as "
            "fractions of equity.</p>") if len(order) > len(top) else ""
    return time_chart(frame, ytitle="weight of equity", yformat=".0%", stack=stack, step=True,
                      styles=styles, height=340, label="positions and exposure") + note


def _costs(book: pd.DataFrame | None, fills: pd.DataFrame | None, paid: Mapping[str, float],
           start: float, config: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    line = _costs_line(config, meta)
    parts = []
    if paid:
        rows = "".join(f"<tr><th class=k>{escape_html(k)}</th><td>{escape_html(_money(v, 2))}"
                       f"</td><td>{escape_html(_pct(v / start, digits=3) if start > 0 else '')}"
                       "</td></tr>" for k, v in paid.items())
        parts.append("<table id=costs-paid><tr><th class=k>cost</th><th>paid</th>"
                     f"<th>of start equity</th></tr>{rows}</table>")
    frame = pd.DataFrame()
    if book is not None and "costs" in book and len(book):
        frame = book[["costs"]].cumsum().rename(columns={"costs": "total (all costs)"})
    if fills is not None and len(fills):
        f = fills.sort_values("time", kind="stable")
        comp = pd.DataFrame({k: f[c].to_numpy(dtype=np.float64) for k, c in (
            ("commission", "commission"), ("spread", "spread_cost"),
            ("slippage and impact", "slippage_cost")) if c in f},
            index=pd.DatetimeIndex(f["time"])).groupby(level=0).sum().cumsum()
        frame = (comp if frame.empty else frame.join(
            comp.reindex(frame.index, method="ffill").fillna(0.0)))
    if not frame.empty:
        parts.append(time_chart(frame, ytitle="cumulative costs", height=280, step=True,
                                yformat=",.0f",
                                label="cumulative costs"))
    return line + "".join(parts) if parts or line else "<p class=note>no costs recorded</p>"


def _costs_line(config: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    """One line naming the run's cost model: commission, spread, impact formula and cap."""
    costs = config.get("costs") if config else meta.get("costs")
    if not isinstance(costs, Mapping):
        return ""
    from tradesim.engine.costs import load_costs
    from tradesim.errors import ConfigError

    try:
        text = load_costs(dict(costs)).describe()
    except ConfigError:  # a record from an older cost model: show its fields as saved
        text = ", ".join(f"{k} {v}" for k, v in costs.items())
    return f'<p id="cost-model"><b>COST MODEL:</b> {escape_html(text)}</p>'


def _costs_paid(meta: Mapping[str, Any], book: pd.DataFrame | None,
                fills: pd.DataFrame | None) -> dict[str, float]:
    """What the run paid per cost kind: the ledger's totals when recorded, else from the fills
    (and the book's cumulative total for whatever the fills do not carry, e.g. borrow)."""
    paid = meta.get("costs_paid")
    if isinstance(paid, Mapping) and paid:
        return {str(k): float(v) for k, v in paid.items()
                if isinstance(v, (int, float)) and (v or k in {"commission", "spread"})}
    out: dict[str, float] = {}
    if fills is not None and len(fills):
        for key, col in (("commission", "commission"), ("spread", "spread_cost"),
                         ("slippage", "slippage_cost")):
            if col in fills:
                out[key] = float(fills[col].sum())
    if book is not None and "costs" in book and len(book):
        rest = float(book["costs"].sum()) - sum(out.values())  # the book's costs are per bar
        if rest > 1e-6:
            out["other (borrow, fees)"] = rest
    return out


def _monthly(equity: pd.Series) -> str:
    index = equity.index.tz_localize(None) if equity.index.tz is not None else equity.index
    month_end = pd.Series(equity.to_numpy(), index=index).resample("ME").last().dropna()
    first = pd.Series([float(equity.iloc[0])], index=[index[0] - pd.offsets.MonthEnd(1)])
    monthly = pd.concat([first, month_end]).pct_change().iloc[1:] * 100
    grid = (pd.DataFrame({"year": monthly.index.year, "month": monthly.index.month,
                          "r": monthly.to_numpy()})
            .pivot(index="year", columns="month", values="r").reindex(columns=range(1, 13)))
    yearly = (pd.Series(equity.to_numpy(), index=index).resample("YE").last().dropna())
    ystart = pd.concat([first.iloc[:1], yearly]).pct_change().iloc[1:] * 100
    grid["Year"] = ystart.to_numpy()[:len(grid)]
    return heatmap(grid.to_numpy(), x=[*_MONTHS, "Year"], y=[str(y) for y in grid.index],
                   title="monthly return %", unit="%")


# --- tables -----------------------------------------------------------------------------------


def monitor_flags(monitors: Mapping[str, Any], config: Mapping[str, Any],
                  metrics: Mapping[str, float]) -> dict[str, tuple[str, str]]:
    """Per monitor: its state (ok, watch, tripped or n/a) and the reason, by the rules in
    :data:`MONITORS`."""
    out: dict[str, tuple[str, str]] = {}
    cap = float(config.get("max_leverage", 1.0) or 1.0) if isinstance(config, Mapping) else 1.0
    made_money = metrics.get("total_return", 0.0) > 0
    for name in MONITORS:
        v = monitors.get(name, math.nan)
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            out[name] = ("n/a", _NOT_MEASURED.get(name, "not measured in this run"))
            continue
        state, why = "ok", ""
        if name == "turnover":
            state = "tripped" if v > 25 else "watch" if v > 12 else "ok"
            why = f"{v:.1f} / yr"
        elif name == "mean_holding_bars":
            state = "tripped" if v < 2 else "watch" if v < 5 else "ok"
            why = f"{v:.1f} bars"
        elif name == "peak_leverage":
            state = "tripped" if v > cap * (1 + 1e-6) else "watch" if v > 1 + 1e-6 else "ok"
            why = f"{v:.2f}x (cap {cap:g}x)"
        elif name == "top1pct_pnl_share":
            state = "tripped" if v > 0.5 else "watch" if v > 0.3 else "ok"
            why = f"{v:.0%} of gains"
        elif name == "pnl_without_top1pct":
            state = "watch" if v < 0 and made_money else "ok"
            why = f"{v:+.1%} of start equity"
        elif name == "long_short_asymmetry":
            both = (monitors.get("long_pnl") or 0) != 0 and (monitors.get("short_pnl") or 0) != 0
            state = "watch" if both and abs(v) > 0.9 else "ok"
            why = f"{v:+.2f}"
        elif name == "reward_gap":
            state = "tripped" if v > 0.4 else "watch" if v > 0.2 else "ok"
            why = f"{v:+.3f}"
        else:
            why = f"{v:+.2%}"
        out[name] = (state, why)
    return out


def _monitors(meta: Mapping[str, Any], config: Mapping[str, Any],
              metrics: Mapping[str, float]) -> str:
    monitors = meta.get("monitors") or {}
    if not isinstance(monitors, Mapping) or not monitors:
        return "<p class=note>no monitors recorded for this run</p>"
    if "error" in monitors:
        return f"<p class=warn>monitors not computed: {escape_html(monitors['error'])}</p>"
    flags = monitor_flags(monitors, config, metrics)
    rows = []
    for name, (what, catches, rule) in MONITORS.items():
        state, why = flags[name]
        cls = {"n/a": "na"}.get(state, state)
        rows.append(f'<tr data-monitor="{name}" data-state="{state}"><td class=k><b>'
                    f"{escape_html(name.replace('_', ' '))}</b></td>"
                    f"<td>{escape_html(why if state != 'n/a' else '–')}</td>"
                    f"<td class=k><span class='flag {cls}'>{escape_html(state)}</span></td>"
                    f"<td class=k>{escape_html(what)}; catches {escape_html(catches)}"
                    f"{'' if state != 'n/a' else ' — ' + escape_html(why)}"
                    f"<br><span class=note>flags: {escape_html(rule)}</span></td></tr>")
    tripped = [k for k, (s, _) in flags.items() if s == "tripped"]
    lead = (f"<p class=warn><b>{len(tripped)} monitor(s) tripped:</b> "
            f"{escape_html(', '.join(tripped))}. Read the result with that in mind.</p>"
            if tripped else "<p>Fingerprints of a gamed reward, measured from the ledger; none "
            "tripped.</p>")
    return (lead + "<table id=monitors-table><tr><th class=k>monitor</th><th>value</th>"
            f"<th class=k>flag</th><th class=k>what it means</th></tr>{''.join(rows)}</table>")


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
    if not metrics:
        return "<p class=note>no metrics (a run needs two bars)</p>"
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
            "are in the run folder</p>" if len(trades) > max_trades else
            f"<p class=note>{len(trades)} closed round trips (FIFO lots)</p>")
    stamps = [c for c in shown.columns if pd.api.types.is_datetime64_any_dtype(shown[c])]
    days = pd.concat([shown[c] for c in stamps]) if stamps else pd.Series([], dtype=object)
    daily = bool(stamps) and days.dt.normalize().nunique() == days.nunique()
    head = "".join(f"<th>{escape_html(c)}</th>" for c in shown.columns)
    body = "".join("<tr>" + "".join(f"<td>{escape_html(_cell(v, daily))}</td>" for v in row)
                   + "</tr>" for row in shown.itertuples(index=False))
    return f"{note}<div class=scroll><table id=trades-table><tr>{head}</tr>{body}</table></div>"


def _cell(value: object, daily: bool = False) -> str:
    """A table cell: floats to 4 decimals (2 above 10), times as dates when every stamp of the
    table falls on its own day (daily bars), else to the minute."""
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 10 else f"{value:,.2f}"
    if isinstance(value, pd.Timestamp):
        return "–" if pd.isna(value) else value.strftime("%Y-%m-%d" if daily else "%Y-%m-%d %H:%M")
    return str(value)


_RUN_KEYS = ("agent", "agent_class", "agent_spec", "source", "symbols", "benchmark", "interval",
             "exchange", "start", "end", "seed", "news")
_ACCOUNT_KEYS = ("initial_cash", "fill", "max_leverage", "maintenance_margin", "allow_short",
                 "fractional", "lot_size", "on_agent_error")
_DATA_KEYS = ("quality", "allow", "source_options")


def _configuration(meta: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """The frozen config and the run's record as grouped tables, folded (not a dict dump)."""
    groups: dict[str, dict[str, object]] = {}
    if config:
        groups["Run"] = {k: config[k] for k in _RUN_KEYS if k in config}
        groups["Agent parameters"] = dict(config.get("agent_params") or {})
        groups["Account and fills"] = {k: config[k] for k in _ACCOUNT_KEYS if k in config}
        groups["Costs"] = dict(config.get("costs") or {})
        groups["Data quality"] = {k: config[k] for k in _DATA_KEYS if k in config}
        used = {*_RUN_KEYS, *_ACCOUNT_KEYS, *_DATA_KEYS, "agent_params", "costs"}
        groups["Other settings"] = {k: v for k, v in config.items() if k not in used}
    skip = {"config", "monitors", "warnings", "leakage", "fingerprints", "contest", "llm",
            "costs_paid", "tradinggroup"}
    groups["Run record"] = {k: v for k, v in meta.items() if k not in skip}
    for key in ("llm", "tradinggroup"):
        if isinstance(meta.get(key), Mapping):
            groups[f"Record: {key}"] = {k: v for k, v in meta[key].items() if k != "leakage"}
    if isinstance(meta.get("fingerprints"), Mapping):
        groups["Data fingerprints"] = dict(meta["fingerprints"])
    return ("<p class=note>Everything the run was built from; <code>config.json</code> in the "
            "run folder reruns it exactly.</p>"
            + details("Show configuration, run record and data fingerprints",
                      grouped_table(groups), anchor="config-table"))


# --- formatting -------------------------------------------------------------------------------


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _tone(x: float) -> str:
    return "" if not _finite(x) else "good" if x > 0 else "bad" if x < 0 else ""


def _pct(x: float, *, signed: bool = False, digits: int = 1) -> str:
    if not _finite(x):
        return "–"
    return f"{x:+.{digits}%}" if signed else f"{x:.{digits}%}"


def _num(x: float, digits: int) -> str:
    return f"{x:,.{digits}f}" if _finite(x) else "–"


def _money(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}" if _finite(x) else "–"


def _count(x: float) -> str:
    return f"{x:,.0f}" if _finite(x) else "–"


def _is_daily(equity: pd.Series, metrics: Mapping[str, float]) -> bool:
    ppy = metrics.get("periods_per_year", float("nan"))
    return isinstance(equity.index, pd.DatetimeIndex) and 250 <= ppy <= 366 and len(equity) > 20
