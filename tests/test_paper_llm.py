"""An LLM agent (llm_analyst against FakeOpenAIServer on 127.0.0.1) in paper mode: every call
journaled in the session log, the daily LLM budget enforced by the kill switch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tradesim.agents.registry import load_agent
from tradesim.live.config import PaperConfig
from tradesim.live.daemon import PaperDaemon
from tradesim.live.store import SessionStore
from tradesim.llm.testing import FakeOpenAIServer, Reply


def _reply(body: dict[str, Any]) -> Reply:
    answer = {"action": "buy", "weight": 0.4, "confidence": 0.6, "rationale": "test"}
    return Reply(content=json.dumps(answer), prompt_tokens=2000, completion_tokens=50)


def test_llm_agent_calls_journaled_and_daily_budget_halts(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_BASE_URL", "TRADESIM_LLM"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-PAPER0123456789abcdef")
    with FakeOpenAIServer(default=_reply) as server:
        agent = load_agent("llm_analyst", every=1, gateway={
            "provider": "openai", "base_url": server.base_url, "mode": "cached",
            "model": "gpt-4o-mini", "cache_path": str(tmp_path / "cache.sqlite"),
            "timeout_s": 5.0, "backoff_s": 0.01})
        cfg = PaperConfig.build({"name": "llm", "agent": "llm_analyst",
                                 "symbols": ["ALPHA", "BRAVO"], "start": "2019-01-02",
                                 "end": "2019-01-31", "risk": {"llm_usd_per_day": 0.0005}})
        try:
            PaperDaemon(cfg, home=tmp_path, agent=agent, handle_signals=False).run()
        finally:
            agent.close()  # type: ignore[attr-defined]
        n_requests = len(server.requests)
    store = SessionStore(tmp_path / "llm" / "session.db", readonly=True)
    calls = store.table("llm_calls")
    assert n_requests > 0 and len(calls) == n_requests  # every model call is in the log
    decided = {c for r in store.table("decisions") if r["decision"]
               for c in json.loads(r["decision"])["llm_calls"]}
    assert decided and decided <= {r["call_id"] for r in calls}
    log = store.table("switch_log")
    assert log and log[0]["source"] == "risk" and "LLM spend" in log[0]["reason"]
    tripped = log[0]["step"]
    assert max(r["step"] for r in calls) == tripped  # no call after the budget tripped
    assert sum(r["usd"] for r in calls) >= 0.0005  # one daily bar: 2 calls
