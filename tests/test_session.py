"""The session loop and contract v2: lifecycle on failure, fatal agent errors, exact reruns of a
run folder after its spec changed, and the look-ahead check catching a real peek."""

from __future__ import annotations

import json
from pathlib import Path


import numpy as np
import pytest

from tradesim import BacktestConfig, run_backtest
from tradesim.contracts import BaseAgent, Decision, Observation, RunContext
from tradesim.data.load import load_market
from tradesim.data.view import MarketData
from tradesim.engine.backtest import simulate
from tradesim.engine.record import RunResult
from tradesim.errors import AgentDecisionError, BudgetExceededError
from tradesim.evaluate.lookahead import check_lookahead

CONFIG = BacktestConfig.build(symbols=("ALPHA",), start="2018-01-01", end="2018-06-30")


@pytest.fixture(scope="module")
def market() -> MarketData:
    return load_market(symbols=["ALPHA"], source="sample", end="2018-06-30")


class _Recorded(BaseAgent):
    """Counts its lifecycle calls and fails on demand."""

    name = "recorded"

    def __init__(self, *, fail_at: int = -1, error: type[Exception] = RuntimeError) -> None:
        self.fail_at, self.error = fail_at, error
        self.calls: list[str] = []
        self.stop_error: BaseException | None = None

    def start(self, context: RunContext) -> None:
        self.calls.append("start")
        self.context = context

    def decide(self, obs: Observation) -> Decision:
        if obs.step == self.fail_at:
            raise self.error("boom")
        return Decision(weights={"ALPHA": 0.5}) if obs.step == 0 else Decision.hold()

    def stop(self, *, error: BaseException | None = None) -> None:
        self.calls.append("stop")
        self.stop_error = error


def test_stop_is_called_once_when_the_agent_fails(market) -> None:
    agent = _Recorded(fail_at=10)
    with pytest.raises(AgentDecisionError, match="boom") as err:
        simulate(config=CONFIG, agent=agent, data=market)
    assert agent.calls == ["start", "stop"]
    assert isinstance(agent.stop_error, AgentDecisionError)
    assert len(err.value.partial_result.equity) == 11  # the failing step is recorded


def test_the_run_context_names_the_run(market, tmp_path: Path) -> None:
    agent = _Recorded()
    simulate(config=CONFIG.model_copy(update={"seed": 3}), agent=agent, data=market,
             save_to=tmp_path / "run")
    ctx = agent.context
    assert (ctx.universe, ctx.seed, ctx.clock, ctx.run_folder) == (("ALPHA",), 3, "historical",
                                                                   tmp_path / "run")
    assert ctx.start == np.datetime64("2018-01-02T21:00", "ns")


def test_a_fatal_agent_error_stops_the_run_even_when_holding_through_errors(market) -> None:
    config = CONFIG.model_copy(update={"on_agent_error": "hold"})
    held = simulate(config=config, agent=_Recorded(fail_at=5), data=market)
    assert held.decisions["fallback"].eq("hold").sum() == 1
    with pytest.raises(AgentDecisionError, match="BudgetExceededError"):
        simulate(config=config, agent=_Recorded(fail_at=5, error=BudgetExceededError),
                 data=market)


def test_a_run_folder_reruns_exactly_after_its_spec_changed(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    spec = specs / "my_cross.toml"
    spec.write_text('[agent]\nclass = "sma_cross"\n[agent.params]\nfast = 5\nslow = 20\n')
    monkeypatch.setenv("TRADESIM_SPEC_PATH", str(specs))
    config = BacktestConfig.build(agent="my_cross", symbols=("ALPHA", "BRAVO"),
                                  start="2018-01-01", end="2019-06-30")
    first = run_backtest(config=config, save_to=tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["agent_params"] == {"fast": 5, "slow": 20, "allow_short": False}
    assert RunResult.load(tmp_path / "run").meta["agent_class"].endswith("baselines:SmaCross")
    spec.write_text('[agent]\nclass = "sma_cross"\n[agent.params]\nfast = 8\nslow = 40\n')
    rerun = run_backtest(config=BacktestConfig.build(**saved))
    fresh = run_backtest(config=config)
    np.testing.assert_array_equal(rerun.equity["equity"], first.equity["equity"])
    assert fresh.final_equity != first.final_equity  # the edited spec does change a new run


class _Peeker(BaseAgent):
    """Cheats: reads tomorrow's close through the view's private bars."""

    name = "peeker"

    def decide(self, obs: Observation) -> Decision:
        full = obs.market._bars["ALPHA"]  # noqa: SLF001 - the cheat under test
        n = obs.market.count("ALPHA")
        if n >= len(full):
            return Decision.hold()
        up = full.close[n] > full.close[n - 1]
        return Decision(weights={"ALPHA": 1.0 if up else 0.0})


def test_the_look_ahead_check_flags_a_peek_and_clears_an_honest_agent(market) -> None:
    leaks = check_lookahead(make_agent=_Peeker, data=market, config=CONFIG, twins=1)
    assert leaks and all(np.datetime64(f.time) <= np.datetime64(f.cut) for f in leaks)
    assert check_lookahead(make_agent=_Recorded, data=market, config=CONFIG, twins=1) == []


def test_params_are_typed_and_errors_name_the_key() -> None:
    from tradesim.agents.registry import load_agent, resolve_agent
    from tradesim.errors import ConfigError

    with pytest.raises(ConfigError, match="fast"):
        load_agent("sma_cross", fast="fast please")
    with pytest.raises(ConfigError, match="unknown parameter"):
        load_agent("sma_cross", speed=3)
    merged = resolve_agent("llm_analyst", {"gateway": {"temperature": 0.3}}).params["gateway"]
    assert merged["temperature"] == 0.3 and merged["cache_path"].endswith("llm_cache.sqlite")




def test_a_save_killed_midway_leaves_a_folder_load_refuses_by_name(market, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tradesim.errors import ConfigError

    script = f"""
import os, signal
import tradesim.engine.record as record
from tradesim.data.load import load_market
from tradesim.engine.backtest import BacktestConfig, simulate
from tradesim.agents.baselines import BuyAndHold
result = simulate(config=BacktestConfig.build(symbols=("ALPHA",), start="2018-01-01",
                  end="2018-03-01"), agent=BuyAndHold(),
                  data=load_market(symbols=["ALPHA"], source="sample", end="2018-03-01"))
real = record._atomic
def dying(path, write):
    if path.name == "trades.parquet":
        os.kill(os.getpid(), signal.SIGKILL)
    real(path, write)
record._atomic = dying
result.save({str(tmp_path / "run")!r})
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert done.returncode == -9
    assert (tmp_path / "run" / "equity.parquet").is_file()
    assert not (tmp_path / "run" / "meta.json").exists()
    with pytest.raises(ConfigError, match="not a run folder"):
        RunResult.load(tmp_path / "run")
