"""Decision expenses (the LLM dollars a decision spent) debited from the account by the engine:
booked in the ledger's cost identity, recorded per decision, carried through isolation and the
paper daemon's reconciliation, and validated like any other decision field."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from user_agents import Spender

from tradesim.agents.isolation import IsolatedAgent
from tradesim.data.load import load_market
from tradesim.data.view import MarketData
from tradesim.engine.backtest import BacktestConfig, simulate
from tradesim.errors import AgentDecisionError
from tradesim.live.config import PaperConfig
from tradesim.live.daemon import PaperDaemon
from tradesim.live.errors import ReconciliationError
from tradesim.live.result import rebuild_result
from tradesim.live.store import SessionStore

CONFIG = BacktestConfig.build(symbols=("ALPHA",), start="2018-01-01", end="2018-03-30")


@pytest.fixture(scope="module")
def market() -> MarketData:
    return load_market(symbols=["ALPHA"], source="sample", end="2018-03-30")


def test_a_hold_only_spender_ends_poorer_by_exactly_what_it_spent(market) -> None:
    run = simulate(config=CONFIG, agent=Spender(fee=2.5, weight=0.0), data=market)
    n = len(run.decisions)
    assert n > 50 and len(run.fills) == 0
    assert run.meta["costs_paid"]["expense"] == pytest.approx(2.5 * n, rel=1e-12)
    assert run.equity["equity"].iloc[-1] == pytest.approx(CONFIG.initial_cash - 2.5 * n,
                                                          rel=1e-12)
    assert run.equity["costs"].sum() == pytest.approx(2.5 * n, rel=1e-12)
    assert (run.decisions["expense"] == 2.5).all()
    assert (run.rewards.dropna() < 0).all()  # every step's reward pays the bill


def test_expenses_count_in_the_ledger_identity_alongside_trading(market) -> None:
    run = simulate(config=CONFIG, agent=Spender(fee=4.0), data=market)
    free = simulate(config=CONFIG, agent=Spender(fee=0.0), data=market)
    paid = run.meta["costs_paid"]
    assert paid["expense"] == pytest.approx(4.0 * len(run.decisions))
    assert free.meta["costs_paid"]["expense"] == 0.0
    assert paid["commission"] + paid["spread"] + paid["slippage"] > 0  # it traded too
    # the first decision's expense came out of cash before the order was sized from equity
    assert run.fills["quantity"].iloc[0] <= free.fills["quantity"].iloc[0]
    assert run.equity["equity"].iloc[-1] < free.equity["equity"].iloc[-1] - paid["expense"] * 0.9


@pytest.mark.parametrize("fee", [math.nan, -1.0, True, "3"])
def test_an_invalid_expense_is_refused_and_nothing_is_charged(market, fee) -> None:
    held = simulate(config=CONFIG.model_copy(update={"on_agent_error": "hold"}),
                    agent=Spender(fee=fee, weight=0.0), data=market)
    assert held.decisions["error"].str.contains("expense is").all()
    assert held.meta["costs_paid"]["expense"] == 0.0
    with pytest.raises(AgentDecisionError, match="expense is .* finite number of dollars >= 0"):
        simulate(config=CONFIG.model_copy(update={"on_agent_error": "raise"}),
                 agent=Spender(fee=fee, weight=0.0), data=market)


def test_an_expense_beyond_equity_ruins_the_account_and_records_the_unpaid_rest(market) -> None:
    run = simulate(config=CONFIG, agent=Spender(fee=40_000.0), data=market)
    assert run.meta["stopped"].startswith("ruin")
    assert run.equity["equity"].iloc[-1] == pytest.approx(0.0, abs=1e-6)
    unpaid = run.events[run.events["kind"] == "expense_unpaid"]
    assert len(unpaid) == 1 and '"expense": 40000.0' in unpaid["detail"].iloc[0]


def test_an_isolated_agent_pays_the_same_expenses(market) -> None:
    inproc = simulate(config=CONFIG, agent=Spender(fee=1.25), data=market)
    iso = simulate(config=CONFIG, agent=IsolatedAgent(Spender(fee=1.25), sandbox="process"),
                   data=market)
    pd.testing.assert_frame_equal(iso.equity, inproc.equity)
    assert iso.meta["costs_paid"] == inproc.meta["costs_paid"]


def _paper(**over) -> PaperConfig:
    return PaperConfig.build({"name": "spend", "agent": "user_agents:Spender", "isolate": False,
                              "symbols": ["ALPHA"], "start": "2018-01-01", "end": "2018-03-30",
                              **over})


class _Pausing(Spender):
    daemon: PaperDaemon | None = None

    def decide(self, obs):
        if obs.step == 30 and self.daemon is not None:
            self.daemon.stop()
        return super().decide(obs)


def test_paper_sessions_debit_expenses_and_reconcile_them_on_restart(tmp_path: Path) -> None:
    cfg = _paper()
    agent = _Pausing()
    daemon = PaperDaemon(cfg, home=tmp_path / "a", agent=agent, handle_signals=False)
    agent.daemon = daemon
    assert daemon.run() == "stopped"
    db = tmp_path / "a" / "spend" / "session.db"
    last = SessionStore(db, readonly=True).last_tick()
    assert last["expense_total"] == pytest.approx(3.0 * 31)
    assert PaperDaemon(cfg, home=tmp_path / "a", handle_signals=False).run() == "finished"
    PaperDaemon(cfg, home=tmp_path / "b", handle_signals=False).run()
    a = rebuild_result(SessionStore(db, readonly=True))
    b = rebuild_result(SessionStore(tmp_path / "b" / "spend" / "session.db", readonly=True))
    pd.testing.assert_frame_equal(a.equity, b.equity)
    back = simulate(config=cfg.engine, agent=Spender(), data=load_market(
        symbols=["ALPHA"], source="sample", end="2018-03-30"))
    pd.testing.assert_frame_equal(a.equity, back.equity)


def test_a_tampered_expense_log_refuses_to_resume(tmp_path: Path) -> None:
    cfg = _paper()
    agent = _Pausing()
    daemon = PaperDaemon(cfg, home=tmp_path, agent=agent, handle_signals=False)
    agent.daemon = daemon
    daemon.run()
    db = sqlite3.connect(tmp_path / "spend" / "session.db")
    db.execute("UPDATE ticks SET expense_total = expense_total - 3 "
               "WHERE step = (SELECT MAX(step) FROM ticks)")
    db.commit()
    db.close()
    with pytest.raises(ReconciliationError, match="cash: the fill log gives"):
        PaperDaemon(cfg, home=tmp_path, handle_signals=False).run()


def _scripted(body: dict) -> object:
    """The scripted analyst (buy after an up bar, sell after a down one), tokens fixed."""
    import json
    import re

    from tradesim.llm.testing import Reply

    last = float(re.search(r"oldest first: (.*)", body["messages"][-1]["content"])[1].split()[-1])
    answer = {"action": "buy" if last > 0 else "sell", "weight": 0.8, "confidence": 0.6,
              "rationale": f"moved {last:+.2f}%"}
    return Reply(content=json.dumps(answer), prompt_tokens=1_000, completion_tokens=50)


def test_llm_analyst_charges_list_priced_calls_and_replays_the_same_fake_openai_server(
        tmp_path: Path, monkeypatch) -> None:
    from tradesim.agents.registry import load_agent
    from tradesim.llm.testing import FakeOpenAIServer

    monkeypatch.setenv("TRADESIM_EXPENSE_KEY", "sk-test")
    config = BacktestConfig.build(agent="llm_analyst", symbols=("ALPHA",), start="2019-01-02",
                                  end="2019-01-31")
    data = load_market(symbols=["ALPHA"], source="sample", end="2019-01-31")
    with FakeOpenAIServer(default=_scripted) as server:
        gateway = {"provider": "openai", "base_url": server.base_url, "mode": "cached",
                   "api_key_env": "TRADESIM_EXPENSE_KEY", "cache_path": str(tmp_path / "c.db"),
                   "model": "gpt-4o-mini", "prices": {"gpt-4o-mini": (0.15, 0.6)}}
        runs = []
        for _ in range(2):  # the second run is answered by the cache: no model call
            agent = load_agent("llm_analyst", gateway=gateway, every=1, charge_llm_cost=True)
            runs.append(simulate(config=config, agent=agent, data=data))
            agent.close()
        calls = len(server.requests)
    first, again = runs
    per_call = (1_000 * 0.15 + 50 * 0.6) / 1e6
    assert calls == len(first.decisions) > 10  # one symbol: one call per decision, then none
    assert first.meta["costs_paid"]["expense"] == pytest.approx(calls * per_call, rel=1e-12)
    assert np.allclose(first.decisions["expense"].to_numpy(), per_call, rtol=1e-12, atol=0)
    pd.testing.assert_frame_equal(first.equity, again.equity)  # the replay paid the same
    free = simulate(config=config, agent=load_agent("llm_analyst", gateway=gateway, every=1),
                    data=data)
    assert free.meta["costs_paid"]["expense"] == 0.0
