"""TradingGroup in the paper daemon: memory in the session folder, a restart resumes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from tradesim.agents.group import ReflectionMemory, TradingGroup
from tradesim.agents.group.memory import MEMORY_FILE
from tradesim.contracts import Decision, Observation
from tradesim.live.config import PaperConfig
from tradesim.live.daemon import PaperDaemon
from tradesim.live.result import rebuild_result
from tradesim.live.store import SessionStore

SESSION = {"name": "tg", "agent": "tradinggroup", "symbols": ["ALPHA", "BRAVO"],
           "start": "2018-01-01", "end": "2018-05-31"}
PAUSE_AT = 60


class _PausingTeam(TradingGroup):
    """The team, asking the daemon to stop after deciding at ``PAUSE_AT`` (a clean pause)."""

    daemon: PaperDaemon | None = None

    def decide(self, obs: Observation) -> Decision:
        if obs.step == PAUSE_AT and self.daemon is not None:
            self.daemon.stop()
        return super().decide(obs)


def _memory(home: Path) -> list[dict[str, Any]]:
    path = home / "tg" / MEMORY_FILE
    assert path.is_file()  # the memory lives in the session's folder
    return ReflectionMemory(path).rows()


def _result(home: Path) -> Any:
    return rebuild_result(SessionStore(home / "tg" / "session.db", readonly=True))


def test_the_team_pauses_and_resumes_in_the_paper_daemon_like_one_run(tmp_path: Path) -> None:
    cfg = PaperConfig.build(SESSION)
    whole = tmp_path / "whole"
    assert PaperDaemon(cfg, home=whole, handle_signals=False).run() == "finished"

    split = tmp_path / "split"
    team = _PausingTeam()
    daemon = PaperDaemon(cfg, home=split, agent=team, handle_signals=False)
    team.daemon = daemon
    assert daemon.run() == "stopped"
    paused = _memory(split)
    assert SessionStore(split / "tg" / "session.db", readonly=True).last_step() == PAUSE_AT
    assert any(r["realised_at"] is not None for r in paused)
    # a fresh process: the agent comes from the session file, its memory from the checkpoint
    assert PaperDaemon(cfg, home=split, handle_signals=False).run() == "finished"

    a, b = _result(whole), _result(split)
    assert len(a.fills) > 10 and {"rebalance"} <= set(a.fills["reason"])
    pd.testing.assert_frame_equal(a.decisions, b.decisions)
    pd.testing.assert_frame_equal(a.fills, b.fills)
    pd.testing.assert_frame_equal(a.equity, b.equity)
    resumed, straight = _memory(split), _memory(whole)
    assert resumed == straight and len(straight) > len(paused)
    # every call made before the pause is kept; those open then were realised after it
    by_id = {r["id"]: r for r in straight}
    outcome = ("outcome", "pnl", "realised_at")
    for r in paused:
        if r["realised_at"] is not None:
            assert by_id[r["id"]] == r
        else:
            assert {k: v for k, v in by_id[r["id"]].items() if k not in outcome} == \
                {k: v for k, v in r.items() if k not in outcome}
            assert by_id[r["id"]]["realised_at"] is not None
