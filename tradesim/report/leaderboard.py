"""The leaderboard page: ranked table, Sharpe intervals, equity curves, setup.

It takes the leaderboard's frames and meta as plain data (what
:meth:`tradesim.evaluate.leaderboard.Leaderboard.save` holds), so the report room does not import
the evaluation room above it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from tradesim.report.charts import equity_curves, sharpe_intervals
from tradesim.report.page import details, escape_html, key_value_table, section, write_page


def write_leaderboard_page(path: str | Path, *, table: pd.DataFrame, equity: pd.DataFrame,
                           meta: Mapping[str, Any]) -> Path:
    """Write the leaderboard page to ``path``.

    ``table`` has one ranked row per agent (``agent``, ``sharpe``, ``sharpe_low``,
    ``sharpe_high``, ``error`` and the other scores, all shown; ``isolation`` and ``lookahead``
    when present, a leak in red and named under the table); ``equity`` is time x agent;
    ``meta`` is the setup (``market``, ``n_trials`` and ``confidence`` are used on top).
    """
    records = table.to_dict("records")
    shown = [str(c) for c in table.columns if c != "error"]
    head = "".join(f"<th class=k>{escape_html(c.replace('_', ' '))}</th>" for c in ["#", *shown])
    body = "".join("<tr>" + f"<td>{i}</td>" + "".join(
        f"<td{_cls(c, r[c])}>{escape_html(_cell(r[c]))}</td>" for c in shown)
        + "</tr>" for i, r in enumerate(records, start=1))
    errors = "".join(f"<li>{escape_html(r['agent'])}: {escape_html(r['error'])}</li>"
                     for r in records if r.get("error"))
    errors += "".join(f"<li>{escape_html(r['agent'])}: look-ahead check found a leak "
                      f"({escape_html(r['lookahead'])}); its scores are not to be trusted</li>"
                      for r in records if str(r.get("lookahead", "")).startswith("LEAK"))
    conf = meta.get("confidence", 0.95)
    ci = sharpe_intervals(table["agent"].tolist(), table["sharpe"], table["sharpe_low"],
                          table["sharpe_high"],
                          xlabel=f"annualised Sharpe with {conf:.0%} block-bootstrap CI")
    page = [
        f"<p>{escape_html(meta.get('market', ''))}; ranked by hardened score; deflated Sharpe "
        f"counts {escape_html(meta.get('n_trials', 0))} trials</p>",
        section("table", "Agents", "<div class=scroll><table id=leaderboard-table>"
                f"<tr>{head}</tr>{body}</table></div>"
                + (f"<ul class=warn>{errors}</ul>" if errors else "")),
        section("ci", "Sharpe confidence intervals", ci),
        section("equity", "Equity", equity_curves(equity, ylabel="equity (mean over seeds)")),
        section("setup", "Setup", key_value_table({k: meta[k] for k in _SETUP if k in meta})
                + details("Show the whole setup (costs, score config, fingerprints)",
                          key_value_table(meta))),
    ]
    return write_page(path, title="tradesim leaderboard", heading="Leaderboard", body=page,
                      subtitle=f"{len(records)} agents on {meta.get('market', 'the market')}")


_SETUP = ("market", "bars", "seeds", "n_trials", "confidence", "n_boot", "fill_mode", "isolate",
          "lookahead_check")


def _cls(column: str, value: object) -> str:
    if column == "agent":
        return " class=k"
    if column == "lookahead" and str(value).startswith("LEAK"):
        return " class=warn"
    return ""


def _cell(x: object) -> str:
    if isinstance(x, float):
        return "–" if not math.isfinite(x) else f"{x:.4g}"
    return str(x)
