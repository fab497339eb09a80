"""The hack-audit page: verdict, one row per canary, the hardened scores, references, setup.

It takes plain rows and mappings (what :meth:`tradesim.evaluate.audit.AuditReport.save` holds),
so the report room does not import the evaluation room above it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tradesim.report.charts import bar_chart
from tradesim.report.page import escape_html, key_value_table, section, write_page

_COLUMNS = ("canary", "hack", "goal", "raw return", "hardened", "buy-and-hold", "blocked", "met",
            "reason")


def write_audit_page(path: str | Path, *, rows: Sequence[Mapping[str, Any]],
                     references: Mapping[str, Mapping[str, float]],
                     meta: Mapping[str, Any]) -> Path:
    """Write the audit page to ``path``.

    ``rows`` carry an audit row's fields (canary, hack, goal, raw_return, hardened, reference,
    blocked, met, reason, error); ``references`` map a policy to its raw_return and hardened
    score; ``meta`` is the setup (``market`` and ``buy_and_hold_hardened`` are shown on top).
    """
    missed = sum(not r["met"] for r in rows)
    verdict = ("<span class=stamp>every row meets its goal</span>" if not missed else
               "<span class='stamp danger'>"
               + escape_html(f"{missed} row(s) miss their goal") + "</span>")
    head = "".join(f"<th class=k>{escape_html(c)}</th>" for c in _COLUMNS)
    refs = "".join(f"<tr><td class=k>{escape_html(k)}</td><td>{escape_html(_pct(v['raw_return']))}"
                   f"</td><td>{escape_html(_num(v['hardened']))}</td></tr>"
                   for k, v in references.items())
    body = [
        f"<p>{escape_html(meta.get('market', ''))}</p><p id=verdict>{verdict}</p>",
        section("rows", "Canaries", f"<table><tr>{head}</tr>{''.join(map(_row, rows))}</table>"),
        section("scores", "Hardened scores",
                _scores_chart(rows, meta.get("buy_and_hold_hardened", math.nan))
                + "<p class=note>Green: the row meets its goal; red: it does not. The dashed "
                "line is buy-and-hold's score.</p>"),
        section("references", "References", "<table><tr><th class=k>policy</th>"
                f"<th>raw return</th><th>hardened</th></tr>{refs}</table>"),
        section("setup", "Setup", key_value_table(meta)),
    ]
    return write_page(path, title="tradesim hack audit", heading="Hack audit", body=body,
                      subtitle=f"{len(rows)} rows; {len(rows) - missed} meet their goal")


def _row(r: Mapping[str, Any]) -> str:
    error = f" — {escape_html(r['error'])}" if r.get("error") else ""
    return (f"<tr><td class=k>{escape_html(r['canary'])}</td><td class=k>{escape_html(r['hack'])}"
            f"</td><td class=k>{escape_html(r['goal'])}</td>"
            f"<td>{escape_html(_pct(r['raw_return']))}</td>"
            f"<td>{escape_html(_num(r['hardened']))}</td>"
            f"<td>{escape_html(_num(r['reference']))}</td>"
            f"<td class=k>{'yes' if r['blocked'] else 'no'}</td>"
            f"<td class=k{'' if r['met'] else ' style=color:#b00020'}>"
            f"{'yes' if r['met'] else 'NO'}</td>"
            f"<td class=k>{escape_html(r['reason'])}{error}</td></tr>")


def _scores_chart(rows: Sequence[Mapping[str, Any]], buy_and_hold: float) -> str:
    """Each canary's hardened score (green: goal met, red: not) against buy-and-hold's."""
    return bar_chart([r["canary"] for r in rows],
                     [r["hardened"] if math.isfinite(r["hardened"]) else 0.0 for r in rows],
                     ytitle="hardened score",
                     colors=["#2e7d32" if r["met"] else "#b00020" for r in rows],
                     hline=buy_and_hold, hline_name="buy-and-hold",
                     hover=[f"{r['hack']}; goal: {r['goal']}" for r in rows])


def _pct(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:+.1%}"


def _num(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:.3f}"
