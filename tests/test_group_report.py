"""The TradingGroup team page, written into the run folder by save_artifacts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tradesim.agents.group import STEPS_FILE
from tradesim.agents.registry import load_agent
from tradesim.data.load import load_market
from tradesim.engine.backtest import BacktestConfig, simulate
from tradesim.llm.testing import FakeOpenAIServer, Reply
from tradesim.report.group import PAGE_FILE, action_counts, path_counts, role_frame

CONFIG = BacktestConfig.build(symbols=("ALPHA", "BRAVO"), start="2018-03-01", end="2018-06-30")


def _steps(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (folder / STEPS_FILE).read_text().splitlines()]


def _section(page: str, anchor: str) -> str:
    return page.split(f"<section id={anchor}>")[1].split("</section>")[0]


def test_the_quant_team_page_shows_roles_style_exits_and_memory(tmp_path: Path) -> None:
    data = load_market(symbols=["ALPHA", "BRAVO"], source="sample", end="2018-06-30")
    result = simulate(config=CONFIG, agent=load_agent("tradinggroup"), data=data,
                      save_to=tmp_path)
    page = (tmp_path / PAGE_FILE).read_text()
    assert all(f"<section id={a}>" in page for a in
               ("setup", "roles", "style", "exits", "memory", "llm"))
    assert page.count('class="chart-spec"') == 3 and "<img" not in page  # 2 symbols + style
    frame = role_frame(_steps(tmp_path))
    assert len(frame) == 2 * len(result.equity)
    counts = path_counts(frame).set_index("role")
    assert counts.loc["trend", "quant"] == len(frame)
    actions = action_counts(frame)
    assert int(actions["buy"].sum()) == int((frame["action"] == "buy").sum()) > 0
    assert int(actions[["buy", "hold", "sell"]].to_numpy().sum()) == len(frame)
    assert "No model calls" in _section(page, "llm")
    exits = _section(page, "exits")
    assert "conservative" in exits or "balanced" in exits
    entries = int((frame["stop_loss"].notna()).sum())
    m = re.findall(r"<tr><td class=k>(ALPHA|BRAVO)</td><td class=k>\w+</td><td>(\d+)</td>",
                   exits)
    assert sum(int(n) for _, n in m) == entries > 0
    memory = _section(page, "memory")
    assert "Retrievals that found realised similar situations" in memory
    assert int(re.search(r"trend (\d+) of", memory)[1]) > 0  # type: ignore[index]


def test_the_llm_team_page_counts_calls_and_cost_fake_openai_server(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_TEST_KEY", "sk-test")
    data = load_market(symbols=["ALPHA", "BRAVO"], source="sample", end="2018-06-30")
    answer = {"[role:news]": {"sentiment": 0.2, "probability": 0.5, "rationale": "ok"},
              "[role:trend]": {"direction": "up", "confidence": 0.6, "rationale": "up"},
              "[role:style]": {"style": "balanced", "rationale": "calm"},
              "[role:decision]": {"action": "buy", "size": 0.5, "confidence": 0.5,
                                  "rationale": "go"}}

    def reply(body: dict[str, Any]) -> Reply:
        system = body["messages"][0]["content"]
        key = next(k for k in answer if k in system)
        return Reply(content=json.dumps(answer[key]), prompt_tokens=100, completion_tokens=10)

    with FakeOpenAIServer(default=reply) as server:
        agent = load_agent("tradinggroup", quant_only=False, every=10, gateway={
            "provider": "openai", "base_url": server.base_url, "api_key_env": "TG_TEST_KEY",
            "model": "gpt-4o-mini", "mode": "cached", "cache_path": str(tmp_path / "c.sqlite")})
        simulate(config=CONFIG, agent=agent, data=data, save_to=tmp_path / "run")
        sent = len(server.requests)
    page = (tmp_path / "run" / PAGE_FILE).read_text()
    llm = _section(page, "llm")
    assert f"{sent} calls to gpt-4o-mini" in llm and sent > 10
    cost = float(re.search(r"\$(\d+\.\d+) in all", llm)[1])  # type: ignore[index]
    assert cost > 0
    counts = path_counts(role_frame(_steps(tmp_path / "run"))).set_index("role")
    assert counts.loc["decision", "llm"] > 0
