"""kill -9 at random points (inside ticks and inside SQLite writes), restart, finish: no order
lost or duplicated, the same final ledger as an uninterrupted session; SIGTERM exits cleanly."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from tradesim.engine.backtest import simulate
from tradesim.evaluate.backtest import prepare_backtest
from tradesim.live.config import PaperConfig
from tradesim.live.daemon import CRASH_ENV
from tradesim.live.result import rebuild_result
from tradesim.live.store import SessionStore

TOML = """name = "k9"
agent = "sma_cross"
symbols = ["ALPHA", "BRAVO"]
start = "2018-01-01"
end = "2018-12-31"
[feed]
kind = "replay"
pace_s = {pace}
"""
PHASES = ("after_step", "tx_begin", "tx_body", "tx_commit", "committed")


def _launch(toml: Path, home: Path, env_extra: dict[str, str] | None = None
            ) -> subprocess.Popen:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "tradesim.cli", "paper", "start", str(toml),
                             "--home", str(home)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _committed(db: Path) -> int:
    if not db.exists():
        return -1
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute("SELECT MAX(step) FROM ticks").fetchone()
        finally:
            con.close()
    except sqlite3.OperationalError:
        return -1
    return -1 if row[0] is None else int(row[0])


def test_kill_9_at_random_points_then_same_ledger(tmp_path: Path) -> None:
    rng = random.Random(20240613)
    toml = tmp_path / "k9.toml"
    toml.write_text(TOML.format(pace="0.01"))
    home, db = tmp_path / "home", tmp_path / "home" / "k9" / "session.db"
    kills = injected = 0
    for _ in range(80):
        before = _committed(db)
        if kills < 24 and kills % 2 == 0:  # a crash point inside the tick or its transaction
            phase = PHASES[(kills // 2) % len(PHASES)]
            step = before + 1 + rng.randrange(0, 15)
            proc = _launch(toml, home, {CRASH_ENV: f"{phase}@{step}"})
            rc = proc.wait(timeout=60)
            if rc == -signal.SIGKILL:
                kills += 1
                injected += 1
                continue
        elif kills < 24:  # SIGKILL at a random moment once it is ticking
            proc = _launch(toml, home)
            deadline = time.time() + 30
            while _committed(db) <= before and proc.poll() is None and time.time() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.05))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                kills += 1
                continue
            rc = proc.returncode
        else:
            proc = _launch(toml, home)
            rc = proc.wait(timeout=120)
        assert rc == 0, proc.stderr.read().decode()[-3000:] if proc.stderr else rc
        store = SessionStore(db, readonly=True)
        done = store.meta().get("finished")
        store.close()
        if done:
            break
    assert kills >= 20 and injected >= 10
    store = SessionStore(db, readonly=True)
    assert store.meta()["finished"] == "end"
    paper = rebuild_result(store)
    orders = pd.DataFrame(store.table("orders"))
    cfg = PaperConfig.from_toml(toml)
    engine, agent, data, _ = prepare_backtest(config=cfg.engine)
    back = simulate(config=engine, agent=agent, data=data)
    # no lost or duplicated order: one intent per engine order, ids as the uninterrupted run
    assert orders.client_order_id.is_unique
    assert sorted(orders.order_id) == sorted(back.orders["id"])
    assert len(store.table("ticks")) == len(back.equity)
    pd.testing.assert_frame_equal(paper.orders, back.orders)
    pd.testing.assert_frame_equal(paper.fills, back.fills)
    pd.testing.assert_frame_equal(paper.equity, back.equity)
    assert paper.final_equity == back.final_equity


def test_sigterm_finishes_the_tick_and_exits_cleanly(tmp_path: Path) -> None:
    toml = tmp_path / "k9.toml"
    toml.write_text(TOML.format(pace="0.05"))
    home, db = tmp_path / "home", tmp_path / "home" / "k9" / "session.db"
    proc = _launch(toml, home)
    deadline = time.time() + 30
    while _committed(db) < 3 and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    store = SessionStore(db, readonly=True)
    stopped_at = store.last_step()
    assert 3 <= stopped_at < 250 and store.meta().get("finished") is None
    store.close()
    assert _launch(toml, home).wait(timeout=120) == 0  # the lock was released: it resumes
    assert SessionStore(db, readonly=True).meta()["finished"] == "end"
