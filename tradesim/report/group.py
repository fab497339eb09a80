"""The TradingGroup team page: decisions per role over time, style, stops/targets, memory, LLM cost.

It reads what the team saved in its run folder (``tradinggroup_steps.jsonl``, the memory
``tradinggroup_memory.sqlite``, ``llm_journal.jsonl`` when the model was asked) and runs
nothing; the agent writes it from ``save_artifacts`` as ``tradinggroup.html``.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradesim.report.charts import color, time_chart, xs, ys
from tradesim.report.page import (
    escape_html,
    frame_table,
    key_value_table,
    section,
    write_page,
)

PAGE_FILE = "tradinggroup.html"
ROLES: tuple[str, ...] = ("news", "report", "trend", "decision")
_STYLES = {"aggressive": 2, "balanced": 1, "conservative": 0}
_SIMILAR = re.compile(r"In the (\d+) most similar past situations your calls won (\d+)%")


def write_group_report(folder: str | Path, *, steps_file: str = "tradinggroup_steps.jsonl",
                       memory_file: str = "tradinggroup_memory.sqlite",
                       settings_file: str = "tradinggroup.json",
                       journal_file: str = "llm_journal.jsonl",
                       out: str = PAGE_FILE) -> Path:
    """Write the team page for the run folder ``folder`` and return its path."""
    folder = Path(folder)
    body = group_sections(folder, steps_file=steps_file, memory_file=memory_file,
                          settings_file=settings_file, journal_file=journal_file)
    settings = _read_json(folder / settings_file)
    mode = "quantitative roles" if settings.get("quant_only", True) else (
        f"model {settings.get('gateway', {}).get('model') or 'from the environment'}")
    return write_page(folder / out, title="TradingGroup team", body=body,
                      subtitle=f"{mode}; run folder {folder.name}")


def group_sections(folder: str | Path, *, prefix: str = "", llm: bool = True,
                   steps_file: str = "tradinggroup_steps.jsonl",
                   memory_file: str = "tradinggroup_memory.sqlite",
                   settings_file: str = "tradinggroup.json",
                   journal_file: str = "llm_journal.jsonl") -> list[str]:
    """The team's sections (setup, roles, style, stops, memory, LLM calls) for its own page or
    a run page; ``prefix`` goes before every anchor so they stay unique on a shared page."""
    folder = Path(folder)
    steps = _read_jsonl(folder / steps_file)
    frame = role_frame(steps)
    settings = _read_json(folder / settings_file)
    body = [section(f"{prefix}setup", "Team setup" if prefix else "Setup",
                    key_value_table(_setup(settings, steps)))]
    if frame.empty:
        body.append("<p class=note>The team made no decision in this run (warm-up only).</p>")
    else:
        body += [
            section(f"{prefix}roles", "Decisions per role over time",
                    _roles_charts(frame)
                    + "<p class=note>Answers by path (llm: the model; quant: the numbers, "
                    "also when the model abstained):</p>" + frame_table(path_counts(frame))
                    + "<p class=note>Decisions by symbol:</p>"
                    + frame_table(action_counts(frame))),
            section(f"{prefix}style", "Style", _style_chart(steps)
                    + frame_table(_style_counts(steps))),
            section(f"{prefix}exits", "Stops and targets", _exits(frame)),
        ]
    body.append(section(f"{prefix}memory", "Memory and reflections",
                        _memory(folder / memory_file, frame)))
    if llm:
        body.append(section(f"{prefix}llm", "LLM calls and cost", _llm(folder / journal_file)))
    return body


def role_frame(steps: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per step and symbol: each role's score, path and the decision's action."""
    rows = []
    for step in steps:
        for symbol, s in step.get("symbols", {}).items():
            roles = s.get("roles", {})
            row: dict[str, Any] = {"time": pd.Timestamp(step["time"]), "symbol": symbol,
                                   "close": s.get("close"), "signal": s.get("signal"),
                                   "style": step.get("style", {}).get("style"),
                                   "weight": s.get("weight"), "stop_loss": s.get("stop_loss"),
                                   "take_profit": s.get("take_profit"),
                                   "news_items": len(s.get("news", []))}
            for role in ROLES:
                out = roles.get(role, {})
                row[f"{role}_path"] = out.get("path")
                row[f"{role}_score"] = out.get("score")
            decision = roles.get("decision", {})
            row["action"] = decision.get("action")
            row["size"] = decision.get("size")
            row["trend_score"] = roles.get("trend", {}).get("score")
            for kind in ("trend", "decision"):
                m = _SIMILAR.search(s.get("experience", {}).get(kind) or "")
                row[f"{kind}_similar"] = int(m[1]) if m else 0
            rows.append(row)
    return pd.DataFrame(rows)


def path_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """How often each role answered from the model, the numbers, or abstained to them."""
    out = []
    for role in ROLES:
        counts = frame[f"{role}_path"].fillna("none").value_counts()
        out.append({"role": role, **{k: int(v) for k, v in counts.items()}})
    return pd.DataFrame(out).fillna(0)


def action_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """The decision role's buy / hold / sell calls per symbol."""
    table = frame.groupby(["symbol", "action"]).size().unstack(fill_value=0)
    return table.reindex(columns=["buy", "hold", "sell"], fill_value=0).reset_index()


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _setup(settings: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, object]:
    keys = ("quant_only", "horizon", "every", "reflection", "risk_manager", "style",
            "max_weight", "allow_short", "memory_k")
    out: dict[str, object] = {k: settings[k] for k in keys if k in settings}
    if settings.get("quant_only") is False:
        out["model"] = settings.get("gateway", {}).get("model")
    out["steps recorded"] = len(steps)
    if steps:
        out["window"] = f"{steps[0]['time'][:10]} .. {steps[-1]['time'][:10]}"
    return out


def _roles_charts(frame: pd.DataFrame) -> str:
    """One chart per symbol (the first six): each role's score, the merged signal, and the
    decision role's buy and sell calls as markers."""
    out = []
    symbols = list(dict.fromkeys(frame["symbol"]))
    for symbol in symbols[:6]:
        f = frame[frame["symbol"] == symbol].set_index("time")
        f.index = pd.DatetimeIndex(f.index)
        lines = pd.DataFrame({role: pd.to_numeric(f[f"{role}_score"], errors="coerce")
                              for role in ("news", "report", "trend")})
        lines["merged"] = pd.to_numeric(f["signal"], errors="coerce")
        styles = {"news": {"line": {"width": 1, "color": color(1)}},
                  "report": {"line": {"width": 1, "dash": "dot", "color": color(2)}},
                  "trend": {"line": {"width": 1, "dash": "dash", "color": color(4)}},
                  "merged": {"line": {"width": 1.8, "color": "#111"}}}
        marks = []
        for action, symbol_mark, colour in (("buy", "triangle-up", "#17612e"),
                                            ("sell", "triangle-down", "#b00020")):
            hit = f[f["action"] == action]
            if len(hit):
                marks.append({"type": "scatter", "mode": "markers", "name": action,
                              "x": xs(pd.DatetimeIndex(hit.index)),
                              "y": ys(pd.to_numeric(hit["signal"], errors="coerce")),
                              "marker": {"symbol": symbol_mark, "size": 8, "color": colour}})
        out.append(f"<h3>{escape_html(symbol)}</h3>" + time_chart(
            lines, ytitle="score", styles=styles, extra=marks, height=260,
            label=f"role scores for {symbol}"))
    if len(symbols) > 6:
        out.append(f"<p class=note>{len(symbols) - 6} more symbols are in the steps file.</p>")
    return "".join(out)


def _style_chart(steps: list[dict[str, Any]]) -> str:
    rows = [(pd.Timestamp(s["time"]), _STYLES.get(s["style"].get("style"), np.nan))
            for s in steps if s.get("style")]
    if not rows:
        return ""
    level = pd.DataFrame({"style": [v for _, v in rows]},
                         index=pd.DatetimeIndex([t for t, _ in rows]))
    return time_chart(level, ytitle="style", step=True, height=200, label="style over time",
                      styles={"style": {"line": {"color": "#335", "width": 1.5, "shape": "hv"},
                                        "hovertemplate": "%{y}"}},
                      layout={"yaxis": {"tickvals": list(_STYLES.values()),
                                        "ticktext": list(_STYLES), "range": [-0.3, 2.3]},
                              "showlegend": False})


def _style_counts(steps: list[dict[str, Any]]) -> pd.DataFrame:
    styles = pd.Series([s.get("style", {}).get("style") for s in steps]).value_counts()
    paths = pd.Series([s.get("style", {}).get("path") for s in steps])
    return pd.DataFrame({"style": styles.index, "steps": styles.to_numpy(),
                         "share": styles.to_numpy() / max(1, len(steps)),
                         "path": [", ".join(sorted(set(paths.dropna()))) or "-"] * len(styles)})


def _exits(frame: pd.DataFrame) -> str:
    levels = frame[frame["stop_loss"].notna() | frame["take_profit"].notna()].copy()
    if levels.empty:
        return "<p>No stop-loss or take-profit levels were set (no entries, or no risk manager).</p>"
    levels["stop_%"] = 100 * (levels["stop_loss"] / levels["close"] - 1)
    levels["target_%"] = 100 * (levels["take_profit"] / levels["close"] - 1)
    summary = levels.groupby(["symbol", "style"]).agg(
        entries=("close", "size"), stop_pct=("stop_%", "mean"),
        target_pct=("target_%", "mean")).reset_index()
    latest = levels[["time", "symbol", "style", "close", "stop_loss", "take_profit", "weight"]]
    latest = latest.tail(15).assign(time=lambda d: d["time"].dt.strftime("%Y-%m-%d"))
    return ("<p>Mean distance of the levels from the decision close, by style (the engine "
            "enforces them: gap-through at the open, stop first when both sit in one bar).</p>"
            + frame_table(summary) + "<p class=note>Latest levels set:</p>"
            + frame_table(latest))


def _memory(path: Path, frame: pd.DataFrame) -> str:
    if not path.is_file():
        return "<p>No memory file in this run folder.</p>"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = pd.read_sql_query("SELECT role, outcome, pnl, realised_at FROM entries", db)
    finally:
        db.close()
    if rows.empty:
        return "<p>The memory is empty.</p>"
    realised = rows[rows["realised_at"].notna()]
    table = rows.groupby("role").agg(entries=("role", "size")).join(
        realised.groupby("role").agg(
            realised=("role", "size"), wins=("outcome", lambda s: int((s == "win").sum())),
            losses=("outcome", lambda s: int((s == "loss").sum())),
            mean_pnl=("pnl", "mean"))).fillna(0).reset_index()
    table["hit_rate"] = table["wins"] / table["realised"].where(table["realised"] > 0)
    hits = ""
    if not frame.empty:
        used = {kind: int((frame[f"{kind}_similar"] > 0).sum()) for kind in ("trend", "decision")}
        hits = ("<p>Retrievals that found realised similar situations: "
                + ", ".join(f"{k} {v} of {len(frame)} decisions" for k, v in used.items())
                + ".</p>")
    return hits + frame_table(table)


def _llm(path: Path) -> str:
    records = _read_jsonl(path)
    if not records:
        return "<p>No model calls: every role ran on its quantitative path.</p>"
    calls = pd.DataFrame(records)
    calls["role"] = calls["tag"].fillna("").str.split(":").str[1].replace("", "?")
    table = calls.groupby("role").agg(
        calls=("role", "size"), cache_hits=("cache_hit", "sum"), abstained=("abstained", "sum"),
        prompt_tokens=("prompt_tokens", "sum"), completion_tokens=("completion_tokens", "sum"),
        cost_usd=("cost_usd", "sum")).reset_index()
    total = float(calls["cost_usd"].sum())
    models = ", ".join(sorted(set(calls["model"].astype(str))))
    return (f"<p>{len(calls)} calls to {escape_html(models)}, ${total:.4f} in all "
            f"({int(calls['cache_hit'].sum())} from the cache).</p>" + frame_table(table))


__all__ = ["PAGE_FILE", "action_counts", "group_sections", "path_counts", "role_frame",
           "write_group_report"]
