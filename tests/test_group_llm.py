"""TradingGroup LLM paths: every role through the gateway, cached re-runs replay bit for bit."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tradesim.agents.registry import load_agent
from tradesim.data.load import load_market
from tradesim.engine.backtest import BacktestConfig, simulate
from tradesim.llm.testing import FakeOpenAIServer, Reply

CONFIG = BacktestConfig.build(symbols=("ALPHA", "BRAVO"), start="2018-06-01", end="2018-07-31")


def _team_reply(body: dict[str, Any]) -> Reply:
    """A scripted team: each role answers its schema, deterministically from the prompt."""
    role = re.search(r"\[role:(\w+)\]", body["messages"][0]["content"])[1]  # type: ignore[index]
    user = body["messages"][-1]["content"]
    up = "close vs SMA-20 +" in user
    answer = {
        "news": {"sentiment": 0.4, "probability": 0.7, "rationale": "constructive headlines"},
        "report": {"score": 0.1, "rationale": "steady"},
        "trend": {"direction": "up" if up else "down", "confidence": 0.8, "rationale": "sma"},
        "style": {"style": "balanced", "rationale": "normal market"},
        "decision": {"action": "buy" if up else "sell", "size": 0.6, "confidence": 0.7,
                     "rationale": "trend and news agree" if up else "trend is down"},
    }[role]
    return Reply(content=json.dumps(answer), prompt_tokens=80, completion_tokens=20)


def _agent(server: FakeOpenAIServer, cache: Path, mode: str = "cached") -> Any:
    return load_agent("tradinggroup", quant_only=False, every=5, gateway={
        "provider": "openai", "base_url": server.base_url, "api_key_env": "TG_TEST_KEY",
        "mode": mode, "cache_path": str(cache)})


def _journal(result: Any) -> pd.DataFrame:
    return result.decisions[["step", "weights", "stop_loss", "take_profit", "llm_calls"]]


def test_every_role_asks_the_model_and_a_cached_rerun_sends_nothing_fake_openai_server(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_TEST_KEY", "sk-test")
    data = load_market(symbols=["ALPHA", "BRAVO"], source="sample", end="2018-07-31")
    with FakeOpenAIServer(default=_team_reply) as server:
        first = simulate(config=CONFIG, agent=_agent(server, tmp_path / "c.sqlite"), data=data,
                         save_to=tmp_path / "run")
        sent, url = len(server.requests), server.base_url
        roles = {re.search(r"\[role:(\w+)\]", r["body"]["messages"][0]["content"])[1]
                 for r in server.requests}
        again = simulate(config=CONFIG, agent=_agent(server, tmp_path / "c.sqlite"), data=data)
        assert len(server.requests) == sent  # zero requests on the re-run
    assert roles == {"news", "trend", "style", "decision"}  # no report file: no report call
    assert sent > 20 and first.meta["llm"]["model_calls"] == sent
    pd.testing.assert_frame_equal(_journal(first), _journal(again))
    assert first.equity["equity"].tolist() == again.equity["equity"].tolist()
    steps = [json.loads(x) for x in (tmp_path / "run" / "tradinggroup_steps.jsonl")
             .read_text().splitlines()]
    paths = {r["symbols"][s]["roles"]["decision"]["path"] for r in steps for s in r["symbols"]}
    assert paths == {"llm"}
    # strict replay from the run folder alone (the server is gone): identical decisions
    replay = simulate(config=CONFIG, data=data, agent=load_agent(
        "tradinggroup", quant_only=False, every=5, gateway={
            "provider": "openai", "base_url": url,
            "api_key_env": "TG_TEST_KEY", "mode": "replay",
            "cache_path": str(tmp_path / "run" / "llm_cache.sqlite")}))
    pd.testing.assert_frame_equal(_journal(first), _journal(replay))


def test_an_abstaining_model_falls_back_to_the_quantitative_role_fake_openai_server(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_TEST_KEY", "sk-test")
    data = load_market(symbols=["ALPHA", "BRAVO"], source="sample", end="2018-07-31")
    with FakeOpenAIServer(default=Reply(content="not json")) as server:
        result = simulate(config=CONFIG, agent=_agent(server, tmp_path / "c.sqlite"),
                          data=data)
    quant = simulate(config=CONFIG, agent=load_agent("tradinggroup", every=5), data=data)
    assert result.meta["llm"]["abstained"] > 0
    pd.testing.assert_frame_equal(result.decisions[["step", "weights"]],
                                  quant.decisions[["step", "weights"]])


def test_the_team_charges_its_list_priced_calls_to_the_account_fake_openai_server(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """charge_llm_cost: each decision's calls become its expense; the cached rerun pays the same."""
    monkeypatch.setenv("TG_TEST_KEY", "sk-test")
    data = load_market(symbols=["ALPHA", "BRAVO"], source="sample", end="2018-07-31")
    runs = []
    with FakeOpenAIServer(default=_team_reply) as server:
        for _ in range(2):
            agent = load_agent("tradinggroup", quant_only=False, every=5, charge_llm_cost=True,
                               gateway={"provider": "openai", "base_url": server.base_url,
                                        "api_key_env": "TG_TEST_KEY", "model": "gpt-4o-mini",
                                        "prices": {"gpt-4o-mini": (0.15, 0.6)},
                                        "cache_path": str(tmp_path / "c.sqlite")})
            runs.append(simulate(config=CONFIG, agent=agent, data=data))
        sent = len(server.requests)
    per_call = (80 * 0.15 + 20 * 0.6) / 1e6
    first, again = runs
    assert sent > 20
    assert first.meta["costs_paid"]["expense"] == pytest.approx(sent * per_call, rel=1e-9)
    assert again.meta["costs_paid"]["expense"] == first.meta["costs_paid"]["expense"]
    assert first.equity["equity"].tolist() == again.equity["equity"].tolist()
