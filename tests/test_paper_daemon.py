"""The paper daemon: replay parity with a backtest, reconciliation, lock, kill switch, risk."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tradesim.agents.baselines import SmaCross
from tradesim.contracts import BaseAgent, Decision, Observation
from tradesim.engine.backtest import simulate
from tradesim.evaluate.backtest import prepare_backtest
from tradesim.live.config import PaperConfig
from tradesim.live.daemon import PaperDaemon, _Lock
from tradesim.live.errors import PaperSessionError, ReconciliationError, SessionLockedError
from tradesim.live.result import rebuild_result
from tradesim.live.store import SCHEMA_VERSION, SessionStore
from tradesim.live.switch import request_switch

BASE = {"agent": "sma_cross", "symbols": ["ALPHA", "BRAVO"], "start": "2018-01-01",
        "end": "2018-12-31"}


def _config(**over: Any) -> PaperConfig:
    raw = {"name": "t", **BASE, **over}
    return PaperConfig.build(raw)


def _store(home: Path, name: str = "t") -> SessionStore:
    return SessionStore(home / name / "session.db", readonly=True)


def test_replay_parity_with_backtest(tmp_path: Path) -> None:
    cfg = _config()
    assert PaperDaemon(cfg, home=tmp_path, handle_signals=False).run() == "finished"
    paper = rebuild_result(_store(tmp_path))
    engine, agent, data, _ = prepare_backtest(config=cfg.engine)
    back = simulate(config=engine, agent=agent, data=data)
    assert len(back.fills) > 10
    pd.testing.assert_frame_equal(paper.fills, back.fills)
    pd.testing.assert_frame_equal(paper.orders, back.orders)
    pd.testing.assert_frame_equal(paper.equity, back.equity)
    pd.testing.assert_frame_equal(paper.decisions, back.decisions)
    pd.testing.assert_frame_equal(paper.events, back.events)
    assert pd.Series(paper.metrics).equals(pd.Series(back.metrics))  # NaN-aware
    store = _store(tmp_path)
    meta = store.meta()
    assert meta["schema_version"] == SCHEMA_VERSION and meta["finished"] == "end"
    assert [r["version"] for r in store.table("migrations")] == [1, 2]
    coids = [r["client_order_id"] for r in store.table("orders")]
    assert len(coids) == len(set(coids)) == len(back.orders)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


class _StopAt(SmaCross):
    """sma_cross that asks the daemon to stop after deciding at ``at`` (a clean pause)."""

    daemon: PaperDaemon | None = None
    at = 60

    def decide(self, obs: Observation) -> Decision:
        if obs.step == self.at and self.daemon is not None:
            self.daemon.stop()
        return super().decide(obs)


def _paused(home: Path, at: int = 60) -> PaperConfig:
    cfg = _config()
    agent = _StopAt()
    daemon = PaperDaemon(cfg, home=home, agent=agent, handle_signals=False)
    agent.daemon, agent.at = daemon, at
    assert daemon.run() == "stopped"
    return cfg


def test_pause_and_resume_equals_uninterrupted(tmp_path: Path) -> None:
    cfg = _paused(tmp_path / "a", at=70)
    assert _store(tmp_path / "a").last_step() == 70
    assert PaperDaemon(cfg, home=tmp_path / "a", handle_signals=False).run() == "finished"
    PaperDaemon(cfg, home=tmp_path / "b", handle_signals=False).run()
    a, b = rebuild_result(_store(tmp_path / "a")), rebuild_result(_store(tmp_path / "b"))
    pd.testing.assert_frame_equal(a.fills, b.fills)
    pd.testing.assert_frame_equal(a.equity, b.equity)


def test_tampered_log_refuses_to_start(tmp_path: Path) -> None:
    cfg = _paused(tmp_path)
    db = sqlite3.connect(tmp_path / "t" / "session.db")
    db.execute("DELETE FROM fills WHERE seq = (SELECT MIN(seq) FROM fills)")
    db.commit()
    db.close()
    with pytest.raises(ReconciliationError, match="fill log sums to"):
        PaperDaemon(cfg, home=tmp_path, handle_signals=False).run()


def test_changed_config_refuses_to_resume(tmp_path: Path) -> None:
    _paused(tmp_path)
    with pytest.raises(PaperSessionError, match="different config"):
        PaperDaemon(_config(initial_cash=5_000.0), home=tmp_path, handle_signals=False).run()


def test_lock_keeps_a_second_daemon_off(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    folder.mkdir()
    lock = _Lock(folder)
    try:
        with pytest.raises(SessionLockedError, match="already run by pid"):
            PaperDaemon(_config(), home=tmp_path, handle_signals=False).run()
    finally:
        lock.release()


class _Switcher(BaseAgent):
    """Buys more ALPHA every bar; flips the kill switch by file at set steps."""

    name = "switcher"
    folder: Path

    def decide(self, obs: Observation) -> Decision:
        if obs.step == 20:
            request_switch(self.folder, "reducing")
        if obs.step == 40:
            request_switch(self.folder, "halted")
        w = min(0.9, 0.02 * (obs.step + 1))
        return Decision(weights={"ALPHA": w})


def test_kill_switch_reducing_then_halted(tmp_path: Path) -> None:
    agent = _Switcher()
    agent.folder = tmp_path / "t"
    agent.folder.mkdir()
    PaperDaemon(_config(end="2018-04-30"), home=tmp_path, agent=agent,
                handle_signals=False).run()
    store = _store(tmp_path)
    orders = pd.DataFrame(store.table("orders"))
    log = store.table("switch_log")
    assert [(r["step"], r["state"]) for r in log] == [(21, "REDUCING"), (41, "HALTED")]
    assert (orders[orders.step <= 20].quantity > 0).all()
    assert not (orders[orders.step > 20].quantity > 0).any()  # exits only: no buy after
    assert orders.step.max() <= 40  # halted: no order at all
    ticks = pd.DataFrame(store.table("ticks"))
    assert set(ticks[ticks.step > 40].switch) == {"HALTED"}
    assert not (tmp_path / "t" / "switch").exists()  # consumed once committed


def test_drawdown_limit_trips_halted(tmp_path: Path) -> None:
    cfg = _config(risk={"max_drawdown": 0.01})
    PaperDaemon(cfg, home=tmp_path, handle_signals=False).run()
    store = _store(tmp_path)
    log = store.table("switch_log")
    assert log and log[0]["state"] == "HALTED" and log[0]["source"] == "risk"
    assert "drawdown" in log[0]["reason"]
    trip = log[0]["step"]
    assert all(r["step"] <= trip for r in store.table("orders"))


def test_an_outside_agent_runs_isolated_and_trades_as_in_process(tmp_path: Path) -> None:
    """A module:Class agent is isolated by default; the book is the same as in-process."""
    short = {"agent": "user_agents:MeanReversion", "end": "2018-04-30"}
    assert PaperDaemon(_config(**short), home=tmp_path / "a", handle_signals=False).run() \
        == "finished"
    PaperDaemon(_config(**short, isolate=False), home=tmp_path / "b", handle_signals=False).run()
    a, b = _store(tmp_path / "a"), _store(tmp_path / "b")
    assert a.meta()["isolation"] in ("bwrap", "process") and b.meta()["isolation"] == "in-process"
    ra, rb = rebuild_result(a), rebuild_result(b)
    assert len(ra.decisions) > 40
    pd.testing.assert_frame_equal(ra.decisions, rb.decisions)
    pd.testing.assert_frame_equal(ra.fills, rb.fills)


def test_a_session_resumes_isolated_with_the_agent_state_carried(tmp_path: Path) -> None:
    """Paused in-process, resumed with isolate = true: the agent's state crosses into its own
    process and the session ends as an uninterrupted one (switching isolation is allowed)."""
    _paused(tmp_path / "a", at=40)
    resumed = PaperDaemon(_config(isolate=True, sandbox="process"), home=tmp_path / "a",
                          handle_signals=False)
    assert resumed.run() == "finished" and resumed.isolation == "process"
    PaperDaemon(_config(), home=tmp_path / "b", handle_signals=False).run()
    a, b = rebuild_result(_store(tmp_path / "a")), rebuild_result(_store(tmp_path / "b"))
    pd.testing.assert_frame_equal(a.fills, b.fills)
    pd.testing.assert_frame_equal(a.equity, b.equity)
    assert _store(tmp_path / "b").meta()["isolation"] == "in-process"  # built-in: trusted
