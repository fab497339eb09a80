"""The run page: a RunResult's tear sheet, written into its run folder as ``report.html``.

Besides the tear sheet it shows what the agent left in the run folder: the contest's scores and
weights per entrant (``contest.json``), the team's roles, reflections and stops
(``tradinggroup_steps.jsonl``), and the LLM cost per agent and role (``llm_journal.jsonl``).
The runner writes the agent's artifacts before this page, so they are there to read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from tradesim.engine.record import RunResult
from tradesim.report.page import Card, escape_html, key_value_table, section
from tradesim.report.tearsheet import write_tearsheet

CONTEST_FILE = "contest.json"  # tradesim.agents.contest's record (the report reads, never imports)
TEAM_STEPS_FILE = "tradinggroup_steps.jsonl"


def write_run_report(result: RunResult, folder: str | Path) -> Path:
    """Write ``report.html`` for ``result`` into ``folder`` and return its path."""
    folder = Path(folder)
    equity = result.equity
    bench = equity["benchmark"] if equity["benchmark"].notna().any() else None
    symbols = [str(c) for c in result.weights.columns] or list(result.config.get("symbols", []))
    extra, extra_cards = _agent_sections(result, folder, symbols)
    return write_tearsheet(folder / "report.html", title=run_title(result, symbols),
                           subtitle=run_subtitle(result, symbols), equity=equity["equity"],
                           benchmark=bench, weights=result.weights, trades=result.trades,
                           metrics=result.metrics, book=equity, fills=result.fills,
                           meta={**result.meta, "fill_mode": result.fill_mode,
                                 "fingerprints": result.fingerprints, "config": result.config},
                           extra=extra, extra_cards=extra_cards)


def run_title(result: RunResult, symbols: Sequence[str]) -> str:
    """Agent, data source, symbols, interval and span, e.g. ``sma_cross on sample: ALPHA,
    BRAVO +5 · 1d · 2010-01-04 → 2019-12-31``."""
    config = result.config
    agent = str(result.meta.get("agent") or config.get("agent") or "agent")
    source = str(config.get("source") or "data")
    if "/" in source or "\\" in source:
        source = Path(source).name
    names = ", ".join(symbols[:4]) + (f" +{len(symbols) - 4}" if len(symbols) > 4 else "")
    interval = str(config.get("interval") or "")
    return " · ".join(x for x in (f"{agent} on {source}: {names or 'no symbols'}", interval,
                                  _span(result.equity.index)) if x)


def run_subtitle(result: RunResult, symbols: Sequence[str]) -> str:
    """One line of context under the title: class, bars, universe, benchmark, wall time."""
    meta, config = result.meta, result.config
    bits = []
    if meta.get("agent_class"):
        bits.append(str(meta["agent_class"]) + (f" ({meta['agent_spec']})"
                                                if meta.get("agent_spec") else ""))
    bits.append(f"{len(result.equity):,} bars")
    if len(symbols) > 4:
        bits.append(f"{len(symbols)} symbols: {', '.join(symbols)}")
    if config.get("benchmark"):
        bits.append(f"benchmark {config['benchmark']}")
    if isinstance(meta.get("seconds"), (int, float)):
        bits.append(f"ran in {meta['seconds']:.2f} s")
    return " · ".join(bits)


def _span(index: pd.Index) -> str:
    if not isinstance(index, pd.DatetimeIndex) or not len(index):
        return ""
    intraday = len(index) > 1 and (index[1:] - index[:-1]).min() < pd.Timedelta(hours=20)
    fmt = "%Y-%m-%d %H:%M" if intraday else "%Y-%m-%d"
    return f"{index[0].strftime(fmt)} → {index[-1].strftime(fmt)}"


def _agent_sections(result: RunResult, folder: Path,
                    symbols: Sequence[str]) -> tuple[list[str], list[Card]]:
    """Contest, team and LLM-cost sections (and their headline cards) for this run's agent."""
    from tradesim.report.llm import JOURNAL_FILE, llm_cost_section, read_journal

    out: list[str] = []
    cards: list[Card] = []
    contest = _read_json(folder / CONTEST_FILE)
    if contest:
        from tradesim.report.contest import contest_sections

        out.extend(contest_sections(contest))
    elif isinstance(result.meta.get("contest"), Mapping):
        out.append(_contest_meta(result.meta["contest"]))
    if (folder / TEAM_STEPS_FILE).is_file():
        from tradesim.report.group import group_sections

        out.append(section("team", "Team (TradingGroup)", "<p class=note>The five roles' "
                           "calls, the style they traded in, the stops and targets they set and "
                           "what their reflections remembered; the team's own page is "
                           "<a href=tradinggroup.html>tradinggroup.html</a>.</p>"))
        out.extend(group_sections(folder, prefix="team-", llm=False))
    records = read_journal(folder / JOURNAL_FILE)
    llm_meta = result.meta.get("llm") if isinstance(result.meta.get("llm"), Mapping) else None
    llm = llm_cost_section(records=records, llm_meta=llm_meta, symbols=symbols)
    if llm:
        out.append(llm)
        dollars = (sum(float(r.get("cost_usd") or 0) for r in records) if records
                   else float((llm_meta or {}).get("cost_usd") or 0.0))
        tokens = (sum(int(r.get("prompt_tokens") or 0) + int(r.get("completion_tokens") or 0)
                      for r in records) if records
                  else int((llm_meta or {}).get("prompt_tokens") or 0)
                  + int((llm_meta or {}).get("completion_tokens") or 0))
        calls = len(records) if records else int((llm_meta or {}).get("calls") or 0)
        cards.append(Card("LLM cost", f"${dollars:.4f}" if math.isfinite(dollars) else "–",
                          f"{calls:,} calls, {tokens:,} tokens", key="llm_cost"))
    return out, cards


def _contest_meta(contest: Mapping[str, Any]) -> str:
    """The contest's summary from the run meta when its record file is not in the folder."""
    facts = {k: v for k, v in contest.items() if k not in {"costs", "mean_weight",
                                                             "entrant_meta"}}
    weights = contest.get("mean_weight") or {}
    table = "".join(f"<tr><th class=k>{escape_html(k)}</th><td>{float(v):.1%}</td></tr>"
                    for k, v in sorted(weights.items(), key=lambda kv: -float(kv[1])))
    return section("contest-setup", "Contest", key_value_table(facts) + (
        f"<h3>Mean weight per entrant</h3><table>{table}</table>" if table else ""))


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
