"""The out-of-sample study page: verdict, summary over seeds, Sharpe per run, equity, setup.

It takes the study's frames and meta as plain data (what
:meth:`tradesim.evaluate.oos.OOSReport.save` holds), so the report room does not import the
evaluation room above it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from tradesim.report.charts import equity_curves, sharpe_intervals
from tradesim.report.page import details, escape_html, frame_table, key_value_table, section, write_page


def write_oos_page(path: str | Path, *, runs: pd.DataFrame, summary: pd.DataFrame,
                   equity: pd.DataFrame, meta: Mapping[str, Any]) -> Path:
    """Write the study page to ``path``.

    ``runs`` has one row per (policy, seed) with ``sharpe``, ``sharpe_low``, ``sharpe_high``;
    ``summary`` one row per (policy, metric); ``equity`` is time x run label (``qtnet/seed0``,
    a reference's name); ``meta`` the setup (``held_out``, ``verdict`` and ``config`` shown).
    """
    labels = [p if s is None or (isinstance(s, float) and math.isnan(s)) else f"{p}/seed{int(s)}"
              for p, s in zip(runs["policy"], runs["seed"], strict=True)]
    ci = sharpe_intervals(labels, runs["sharpe"], runs["sharpe_low"], runs["sharpe_high"],
                          xlabel="annualised Sharpe, held out, with block-bootstrap CI")
    references = [c for c in equity.columns if not str(c).startswith("qtnet/")]
    curves = equity_curves(equity, ylabel="equity", bold=references)
    verdict = ", ".join(f"{'beats' if v else 'does not beat'} {k}"
                        for k, v in meta.get("verdict", {}).items())
    setup = {k: v for k, v in meta.items() if k != "config"}
    config = meta.get("config")
    body = [
        f"<p>{escape_html(meta.get('held_out', ''))}: QTNet {escape_html(verdict)} "
        "(total return; whole CI of the excess above zero)</p>",
        section("summary", "Summary over seeds", frame_table(summary)),
        section("ci", "Sharpe per run", ci),
        section("equity", "Equity", curves + "<p class=note>References (dashed, thick) are "
                "what QTNet is judged against.</p>"),
        section("runs", "Runs", frame_table(runs)),
        section("setup", "Setup", key_value_table(setup) + details(
            "Show the study's config", key_value_table(config) if isinstance(config, Mapping)
            else f"<pre>{escape_html(json.dumps(config, indent=1, default=str))}</pre>")),
    ]
    return write_page(path, title="QTNet out of sample", body=body)
