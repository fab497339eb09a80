"""The agent contract, checked on every registered agent and on a user's own agent.

A new agent gets these checks by registering (a built-in name, a spec in ``agents/`` or an
installed plug-in): lifecycle hooks called once each, state through a file gives the same next
decisions, no look-ahead (counterfactual twins), same seed same decisions, short history
handled. Agents that need parameters to exist at all (a checkpoint, a model server) get them
from ``_NEEDS`` below; a new such agent must add its entry, or the suite fails naming it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from golden_runs import CHECKPOINT, llm_reply
from tradesim.agents.registry import available_agents, load_agent
from tradesim.contracts import Agent, RunContext, load_agent_state, save_agent_state
from tradesim.data.load import load_market
from tradesim.data.view import MarketData
from tradesim.engine.account import Account
from tradesim.engine.backtest import BacktestConfig, simulate, universe_and_clock
from tradesim.engine.feed import HistoricalFeed
from tradesim.engine.record import Recorder
from tradesim.engine.session import Session
from tradesim.evaluate.lookahead import check_lookahead
from tradesim.llm.testing import FakeOpenAIServer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

USER_AGENT = "user_agents:MeanReversion"
AGENTS = sorted({*available_agents(), USER_AGENT})
CONFIG = BacktestConfig.build(symbols=("ALPHA", "BRAVO"), start="2018-03-01", end="2018-08-31",
                              allow_short=True, max_leverage=2.0, seed=7)


@pytest.fixture(scope="module")
def market() -> MarketData:
    return load_market(symbols=["ALPHA", "BRAVO"], source="sample", end="2018-08-31")


@pytest.fixture(scope="module")
def llm_server() -> Iterator[FakeOpenAIServer]:
    """The remote model is the one edge we fake: a scripted server on 127.0.0.1."""
    with FakeOpenAIServer(default=llm_reply) as server:
        yield server


@pytest.fixture
def make(llm_server: FakeOpenAIServer, tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Agent]:
    """A factory of fresh agents by name, with what each agent needs to exist."""
    monkeypatch.setenv("TRADESIM_GOLDEN_KEY", "sk-conformance")
    needs: dict[str, dict[str, Any]] = {
        "qtnet": {"checkpoint": str(CHECKPOINT)},
        "llm_analyst": {"every": 3, "gateway": {
            "provider": "openai", "base_url": llm_server.base_url, "mode": "live",
            "api_key_env": "TRADESIM_GOLDEN_KEY", "cache_path": str(tmp_path / "llm.sqlite")}},
        "contest": {"every": 45, "samples": 1, "gateway": {
            "provider": "openai", "base_url": llm_server.base_url, "mode": "live",
            "api_key_env": "TRADESIM_GOLDEN_KEY", "cache_path": str(tmp_path / "contest.sqlite")}},
    }

    def factory(name: str) -> Agent:
        return load_agent(name, **needs.get(name, {}))
    return factory


def _journal(result: Any) -> pd.DataFrame:
    return result.decisions[["step", "weights", "stop_loss", "take_profit"]].reset_index(drop=True)


def _session(agent: Agent, data: MarketData, config: BacktestConfig) -> tuple[Session, HistoricalFeed, Recorder]:
    universe, clock = universe_and_clock(config=config, data=data)
    account = Account(symbols=universe, config=config)
    recorder = Recorder(clock=clock, symbols=universe)
    context = RunContext(universe=universe, interval=config.interval, seed=config.seed,
                         start=clock[0], end=clock[-1])
    return (Session(agent=agent, account=account, recorder=recorder, context=context),
            HistoricalFeed(data=data, universe=universe, clock=clock), recorder)


def _build(recorder: Recorder) -> Any:
    return recorder.build(config={}, fingerprints={}, fill_mode="next_open", benchmark=None,
                          initial_cash=CONFIG.initial_cash, meta={})


@pytest.mark.parametrize("name", AGENTS)
def test_lifecycle_hooks_are_called_once_each(name: str, make, market) -> None:
    agent = make(name)
    calls: dict[str, int] = {"start": 0, "stop": 0}
    for hook in calls:
        original = getattr(agent, hook)

        def counted(*args: Any, _hook: str = hook, _original: Any = original, **kw: Any) -> Any:
            calls[_hook] += 1
            return _original(*args, **kw)
        setattr(agent, hook, counted)
    simulate(config=CONFIG, agent=agent, data=market)
    assert calls == {"start": 1, "stop": 1}


@pytest.mark.parametrize("name", AGENTS)
def test_state_through_a_file_gives_the_same_next_decisions(name: str, make, market,
                                                           tmp_path: Path) -> None:
    whole_session, feed, whole = _session(make(name), market, CONFIG)
    whole_session.run(feed)
    session, feed, recorder = _session(make(name), market, CONFIG)
    ticks = list(feed)
    half = len(ticks) // 2
    session.begin()
    for tick in ticks[:half]:
        session.step(tick)
    path = save_agent_state(session.agent, tmp_path / "state.json")
    json.loads(path.read_text())  # plain JSON: a daemon can store it anywhere
    session.agent.stop()
    resumed = make(name)
    resumed.start(session.context)
    load_agent_state(resumed, path)
    session.agent = resumed
    for tick in ticks[half:]:
        session.step(tick)
    session.end()
    pd.testing.assert_frame_equal(_journal(_build(recorder)), _journal(_build(whole)))


@pytest.mark.parametrize("name", AGENTS)
def test_no_look_ahead_on_counterfactual_twins(name: str, make, market) -> None:
    assert check_lookahead(make_agent=lambda: make(name), data=market, config=CONFIG,
                           twins=1) == []


@pytest.mark.parametrize("name", AGENTS)
def test_same_seed_same_decisions(name: str, make, market) -> None:
    first = simulate(config=CONFIG, agent=make(name), data=market)
    again = simulate(config=CONFIG, agent=make(name), data=market)
    pd.testing.assert_frame_equal(_journal(first), _journal(again))
    np.testing.assert_array_equal(first.equity["equity"], again.equity["equity"])


@pytest.mark.parametrize("name", AGENTS)
def test_short_history_is_handled(name: str, make, market) -> None:
    config = CONFIG.model_copy(update={"start": "2018-08-27", "end": "2018-08-31"})
    short = MarketData({s: market.full(s).head(int(np.searchsorted(
        market.full(s).time, np.datetime64("2018-08-27"), "left")) + 5) for s in market.symbols})
    result = simulate(config=config, agent=make(name), data=short)
    assert len(result.equity) == 5 and np.isfinite(result.final_equity)


def test_the_user_agent_is_a_plain_module_class() -> None:
    assert USER_AGENT in AGENTS and ":" in USER_AGENT
