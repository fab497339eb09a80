"""LLMAnalyst backtests through the real gateway and openai client: record, replay, leakage, estimate.

The only fake is the remote API (tradesim.llm.testing.FakeOpenAIServer on 127.0.0.1), the one
edge a test cannot reach; the agent, gateway, cache, engine and run folder are the real code.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tradesim.agents.llm_agent import AGENT_FILE, LLMAnalyst
from tradesim.agents.registry import available_agents, load_agent
from tradesim.contracts import RunArtifacts
from tradesim.data.load import load_market
from tradesim.data.view import MarketData
from tradesim.evaluate.backtest import BacktestConfig, run_backtest
from tradesim.engine.record import RunResult
from tradesim.errors import (
    AgentDecisionError,
    BudgetExceededError,
    EngineError,
    ReplayMissError,
)
from tradesim.llm import CACHE_FILE, JOURNAL_FILE, Journal
from tradesim.llm.budget import count_tokens
from tradesim.llm.testing import FakeOpenAIServer, Reply

KEY = "sk-test-LLMBACKTEST0123456789abcdef"
SYMBOLS = ("ALPHA", "BRAVO")
START, END = "2019-01-02", "2019-02-13"  # 29 daily bars of the embedded sample
_RETURNS = re.compile(r"oldest first: (.*)")
_STOCK = re.compile(r"Stock: (\S+)\.")


def _analyst_reply(body: dict[str, Any]) -> Reply:
    """Buy after an up bar, sell after a down bar; tokens counted like the dry-run estimate."""
    prompt = body["messages"][-1]["content"]
    last = float(_RETURNS.search(prompt)[1].split()[-1])
    stock = _STOCK.search(prompt)[1]
    answer = {"action": "buy" if last > 0 else "sell", "weight": 0.8, "confidence": 0.6,
              "rationale": f"{stock} moved {last:+.2f}% on the last bar"}
    text = "".join(m["content"] for m in body["messages"])
    return Reply(content=json.dumps(answer), prompt_tokens=count_tokens(text),
                 completion_tokens=30)


def _gateway(server: FakeOpenAIServer, folder: Path, **kw: Any) -> dict[str, Any]:
    return {"provider": "openai", "base_url": server.base_url, "mode": "cached",
            "cache_path": str(folder / "work_cache.sqlite"), "timeout_s": 5.0,
            "backoff_s": 0.01, **kw}


def _backtest(agent: LLMAnalyst, data: MarketData, folder: Path, *, start: str = START,
              end: str = END) -> RunResult:
    """A backtest saved to ``folder``; the runner merges the agent's run meta and saves its
    journal and cache beside the record (also on failure, with the partial record)."""
    config = BacktestConfig.build(agent="llm_analyst", symbols=SYMBOLS, start=start, end=end)
    return run_backtest(config=config, agent=agent, data=data, save_to=folder)


@pytest.fixture(scope="module")
def data() -> MarketData:
    return load_market(symbols=list(SYMBOLS), source="sample")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TRADESIM_LLM"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def recorded(data: MarketData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One backtest in cached mode against the fake server, saved with its LLM artifacts."""
    folder = tmp_path_factory.mktemp("recorded")
    with pytest.MonkeyPatch.context() as mp, FakeOpenAIServer(default=_analyst_reply) as server:
        for var in ("OPENAI_BASE_URL", "TRADESIM_LLM"):
            mp.delenv(var, raising=False)
        mp.setenv("OPENAI_API_KEY", KEY)
        agent = load_agent("llm_analyst", every=1, gateway=_gateway(server, folder))
        try:
            result = _backtest(agent, data, folder / "run")
            estimate = agent.estimate_run(n_steps=len(result.equity), n_symbols=len(SYMBOLS))
        finally:
            agent.close()
        requests = list(server.requests)
    return {"run": folder / "run", "result": result, "requests": requests, "estimate": estimate}


def test_cached_backtest_records_journal_and_cache_fake_openai_server(recorded):
    run, result = recorded["run"], recorded["result"]
    n_calls = len(result.equity) * len(SYMBOLS)
    assert len(recorded["requests"]) == n_calls
    assert {p.name for p in run.iterdir()} >= {CACHE_FILE, JOURNAL_FILE, AGENT_FILE, "meta.json"}
    journal = Journal.load(run / JOURNAL_FILE)
    assert len(journal) == n_calls and not any(r.cache_hit for r in journal)
    assert {r.tag for r in journal} == {"llm_analyst:ALPHA", "llm_analyst:BRAVO"}
    assert KEY not in (run / JOURNAL_FILE).read_text() + (run / AGENT_FILE).read_text()
    # every decision names its calls, and the calls are in the journal
    calls = [c for cell in result.decisions["llm_calls"] for c in json.loads(cell)]
    assert len(calls) == n_calls and set(calls) == {r.call_id for r in journal}
    # buys after up bars, long-only sells go flat: the journal's answers drive the weights
    weights = [json.loads(w) for w in result.decisions["weights"]]
    assert {v for w in weights for v in w.values()} == {0.0, 0.4}
    assert len(result.fills) > 0
    llm = RunResult.load(run).meta["llm"]
    assert llm["calls"] == llm["model_calls"] == n_calls and llm["cache_hits"] == 0


def test_replay_twice_identical_zero_model_calls_fake_openai_server_stopped(recorded, data,
                                                                            tmp_path):
    runs = []
    for i in range(2):
        agent = LLMAnalyst.from_run(recorded["run"])  # no key, server stopped: replay only
        result = _backtest(agent, data, tmp_path / f"replay{i}")
        assert agent.gateway.model_calls == 0
        assert result.meta["llm"]["model_calls"] == 0
        assert result.meta["llm"]["cache_hits"] == result.meta["llm"]["calls"] > 0
        agent.close()
        runs.append(result)
    for replay in runs:
        for table in ("decisions", "fills", "equity"):
            pd.testing.assert_frame_equal(getattr(replay, table), getattr(recorded["result"], table))
    # the replayed run folder travels on: it replays again from its own copy of the cache
    again = LLMAnalyst.from_run(tmp_path / "replay0")
    third = _backtest(again, data, tmp_path / "replay0")  # in place: the cache stays put
    again.close()
    pd.testing.assert_frame_equal(third.fills, recorded["result"].fills)


def test_replay_changed_prompt_names_the_missed_call_fake_openai_server_stopped(recorded, data,
                                                                               tmp_path):
    agent = LLMAnalyst.from_run(recorded["run"], lookback=10)
    with pytest.raises(AgentDecisionError) as info:
        _backtest(agent, data, tmp_path / "miss")
    agent.close()
    assert isinstance(info.value.__cause__, ReplayMissError)
    message = str(info.value)
    assert "llm_analyst:ALPHA" in message or "llm_analyst:BRAVO" in message
    assert "2019-01-02" in message and "llm-" in message
    partial = RunResult.load(tmp_path / "miss")
    assert partial.partial and partial.meta["llm"]["model_calls"] == 0
    assert (tmp_path / "miss" / JOURNAL_FILE).is_file()


def test_synthetic_sample_has_cutoff_recorded_but_no_leakage_warning_fake_openai_server(recorded):
    # the embedded sample is generated: no model can remember it (real data: test_llm_runs)
    meta = RunResult.load(recorded["run"]).meta
    assert meta["llm"]["model"] == "gpt-4o-mini" and meta["llm"]["knowledge_cutoff"] == "2023-10-01"
    assert meta["llm"]["leakage"] == [] and meta["llm"]["data_sources"] == ["synthetic"]
    assert not any("knowledge-cutoff" in w for w in meta.get("warnings", []))
    report = (recorded["run"] / "report.html").read_text(encoding="utf-8")
    assert "may remember the outcomes" not in report


def test_spec_loads_without_key_or_model_and_estimates_offline():
    agent = load_agent("llm_analyst")  # agents/llm_analyst.toml; the provider comes from the env
    assert "llm_analyst" in available_agents() and isinstance(agent, RunArtifacts)
    assert agent.every == 5 and agent.gateway_config.provider == "local"
    estimate = agent.estimate_run(n_steps=252, n_symbols=3)
    assert estimate.calls == 51 * 3 and estimate.cost_usd == 0.0  # the embedded model is free
    assert estimate.completion_tokens == estimate.calls * 200


def test_window_after_cutoff_has_no_leakage_warning():
    agent = LLMAnalyst(gateway={"provider": "openai", "model": "gpt-4o-mini"})
    meta = agent.run_meta(start=np.datetime64("2024-01-02"), end=np.datetime64("2024-06-28"))
    assert meta["warnings"] == [] and meta["llm"]["leakage"] == []
    partial = agent.run_meta(start=np.datetime64("2023-06-01"), end=np.datetime64("2024-06-28"))
    assert [f["level"] for f in partial["llm"]["leakage"]] == ["partial"]


def test_dry_run_estimate_matches_real_calls_fake_openai_server(recorded):
    estimate, requests = recorded["estimate"], recorded["requests"]
    assert estimate.calls == len(requests)
    real_in = sum(count_tokens("".join(m["content"] for m in r["body"]["messages"]))
                  for r in requests)
    assert 0.8 <= estimate.prompt_tokens / real_in <= 1.25
    max_tokens = LLMAnalyst.from_run(recorded["run"]).gateway_config.max_tokens
    assert estimate.completion_tokens == estimate.calls * max_tokens  # an upper bound
    assert estimate.cost_usd > 0


def test_every_k_bars_and_state_round_trip_fake_openai_server(data, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer(default=_analyst_reply) as server:
        agent = LLMAnalyst(every=5, gateway=_gateway(server, tmp_path))
        result = _backtest(agent, data, tmp_path / "run")
        n_steps = len(result.equity)
        assert len(server.requests) == -(-n_steps // 5) * len(SYMBOLS)
        assert agent.estimate_run(n_steps=n_steps, n_symbols=2).calls == len(server.requests)
        assert agent.state() == {"steps": n_steps}
        resumed = LLMAnalyst(every=5, gateway=_gateway(server, tmp_path))
        resumed.load_state(agent.state())
        assert resumed.state() == agent.state()
        agent.close()
        resumed.close()


def test_anonymized_prompts_hide_tickers_and_dates_fake_openai_server(data, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer(default=_analyst_reply) as server:
        agent = LLMAnalyst(anonymize=True, allow_short=True, every=10,
                           gateway=_gateway(server, tmp_path))
        config = BacktestConfig.build(agent="llm_analyst", symbols=SYMBOLS, start=START, end=END,
                                      allow_short=True)
        result = run_backtest(config=config, agent=agent, data=data)
        agent.close()
    sent = "\n".join(m["content"] for r in server.requests for m in r["body"]["messages"])
    assert "ALPHA" not in sent and "BRAVO" not in sent and "STOCK_A" in sent
    assert re.search(r"\d{4}-\d{2}-\d{2}", sent) is None and "D+0" in sent
    # aliases are reversed on the way out, and shorts are allowed here
    assert "ALPHA moved" in " ".join(result.decisions["rationale"])
    weights = {v for w in result.decisions["weights"] for v in json.loads(w).values()}
    assert weights <= {0.4, -0.4} and -0.4 in weights


def test_budget_abort_keeps_partial_run_and_its_calls_fake_openai_server(data, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer(default=_analyst_reply) as server:
        agent = LLMAnalyst(gateway=_gateway(server, tmp_path, budget_tokens=2_000))
        with pytest.raises(AgentDecisionError) as info:
            _backtest(agent, data, tmp_path / "run")
        agent.close()
    assert isinstance(info.value.__cause__, BudgetExceededError)
    partial = RunResult.load(tmp_path / "run")
    assert partial.partial and 0 < len(partial.equity) < 29
    journal = Journal.load(tmp_path / "run" / JOURNAL_FILE)
    llm = partial.meta["llm"]
    # every call sent is recorded; calls that could not fit were refused before sending, so the
    # real spend stays within the budget
    assert len(journal) == llm["calls"] == len(server.requests) > 0
    assert 0 < llm["prompt_tokens"] + llm["completion_tokens"] <= 2_000
