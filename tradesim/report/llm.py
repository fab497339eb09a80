"""The LLM cost section: calls, tokens and dollars per agent and role, from the run's journal.

It reads ``llm_journal.jsonl`` (one gateway call per line; what every LLM agent saves into its
run folder) and the run meta's ``llm`` record; it runs nothing.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from tradesim.report.charts import color, figure
from tradesim.report.page import escape_html, frame_table, key_value_table, section

JOURNAL_FILE = "llm_journal.jsonl"  # tradesim.llm.JOURNAL_FILE (the report room sits beside llm)
_FACTS = ("provider", "model", "mode", "endpoint", "knowledge_cutoff", "cutoff_source",
          "anonymized", "data_sources")


def read_journal(path: str | Path) -> list[dict[str, Any]]:
    """The journal's records (an empty list when the file is absent)."""
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]


def cost_table(records: list[dict[str, Any]], *, symbols: Collection[str] = ()) -> pd.DataFrame:
    """One row per (agent, role): calls, model calls, cache hits, abstentions, tokens, dollars.

    The agent and role come from the call's tag (``agent:role[:symbol]``; a trailing symbol of
    the run is dropped so a role's calls add up across symbols); a total row closes the table.
    """
    rows = []
    for r in records:
        parts = [p for p in str(r.get("tag") or "untagged").split(":") if p]
        if len(parts) > 1 and parts[-1] in symbols:
            parts = parts[:-1]
        rows.append({"agent": parts[0] if parts else "untagged",
                     "role": ":".join(parts[1:]) or "-",
                     "calls": 1, "model calls": int(not r.get("cache_hit")),
                     "cache hits": int(bool(r.get("cache_hit"))),
                     "abstained": int(bool(r.get("abstained"))),
                     "errors": int(bool(r.get("error"))),
                     "prompt tokens": int(r.get("prompt_tokens") or 0),
                     "completion tokens": int(r.get("completion_tokens") or 0),
                     "cost usd": float(r.get("cost_usd") or 0.0)})
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows).groupby(["agent", "role"], sort=True).sum().reset_index()
    total = frame.drop(columns=["agent", "role"]).sum()
    return pd.concat([frame, pd.DataFrame([{"agent": "total", "role": "", **total}])],
                     ignore_index=True)


def llm_cost_section(*, records: list[dict[str, Any]], llm_meta: Mapping[str, Any] | None = None,
                     symbols: Collection[str] = (), anchor: str = "llm-cost") -> str:
    """The section: the model and its knowledge cutoff, then tokens and dollars per agent/role
    (a chart and a table), from the journal; the meta's totals when no journal was saved."""
    meta = dict(llm_meta or {})
    facts = {k: meta[k] for k in _FACTS if k in meta and meta[k] not in (None, "", [])}
    table = cost_table(records, symbols=symbols)
    parts = [key_value_table(facts)] if facts else []
    if table.empty:
        totals: dict[str, object] = {k: meta[k] for k in ("calls", "model_calls", "cache_hits", "abstained",
                                       "prompt_tokens", "completion_tokens", "cost_usd")
                  if k in meta}
        if not totals:
            return ""
        parts.append("<p class=note>No journal in the run folder (an isolated agent keeps it "
                     "in its process); the run's totals:</p>" + key_value_table(totals))
    else:
        total = table.iloc[-1]
        models = sorted({str(r.get("model")) for r in records if r.get("model")})
        parts.insert(0, f"<p id=llm-total><b>{int(total['calls']):,} calls</b> to "
                        f"{escape_html(', '.join(models) or 'the model')}: "
                        f"{int(total['prompt tokens']):,} prompt + "
                        f"{int(total['completion tokens']):,} completion tokens, "
                        f"<b>${float(total['cost usd']):.4f}</b> "
                        f"({int(total['cache hits']):,} answered from the cache, "
                        f"{int(total['abstained']):,} abstained).</p>")
        rows = table.iloc[:-1]
        labels = [f"{a}:{r}" if r != "-" else a for a, r in zip(rows["agent"], rows["role"])]
        traces = [{"type": "bar", "name": name, "x": labels, "y": rows[col].tolist(),
                   "marker": {"color": color(i)}, "customdata": rows["cost usd"].tolist(),
                   "hovertemplate": "%{x}: %{y:,} " + name + " (USD %{customdata:.4f} in all)"
                                    "<extra></extra>"}
                  for i, (name, col) in enumerate((("prompt tokens", "prompt tokens"),
                                                   ("completion tokens", "completion tokens")))]
        parts.append(figure(traces, layout={"barmode": "stack", "hovermode": "closest",
                                            "yaxis": {"title": {"text": "tokens"}},
                                            "xaxis": {"automargin": True}},
                            height=300, label="tokens per agent and role"))
        parts.append(frame_table(table, table_id="llm-cost-table"))
    return section(anchor, "LLM cost", "".join(parts))
