"""TradingGroup team: quantitative roles, lag-safe reflection memory, risk manager stops."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradesim.agents.group import CarriedMemoryError, ReflectionMemory, TradingGroup, roles
from tradesim.agents.group.indicators import features, rsi
from tradesim.agents.group.reports import ReportSource, report_score
from tradesim.agents.group.risk import exit_levels
from tradesim.agents.registry import load_agent
from tradesim.contracts import Observation, Portfolio, RunContext
from tradesim.data.bars import Bars
from tradesim.data.load import load_market
from tradesim.data.view import MarketData
from tradesim.engine.backtest import BacktestConfig, simulate

T0 = np.datetime64("2021-01-04T21:00", "ns")
DAY = np.timedelta64(1, "D")


def _bars(opens: list[float], highs: list[float], lows: list[float], closes: list[float],
          symbol: str = "X") -> Bars:
    return Bars.from_arrays(symbol=symbol, interval="1d", adjusted=True, source="test",
                            time=pd.date_range("2021-01-04 21:00", periods=len(closes), freq="D",
                                               tz="UTC"),
                            open=opens, high=highs, low=lows, close=closes,
                            volume=np.full(len(closes), 1e6))


def _uptrend(n: int = 40) -> list[float]:
    """Closes that rise 1.5 % then fall 0.5 %, alternately (an uptrend, RSI below 100)."""
    steps = np.where(np.arange(n) % 2 == 0, 1.015, 0.995)
    return list(100.0 * np.cumprod(steps))


@pytest.fixture(scope="module")
def sample() -> MarketData:
    return load_market(symbols=["ALPHA", "BRAVO"], source="sample", end="2018-12-31")


# --- roles --------------------------------------------------------------------------------------

def test_indicators_match_their_definitions() -> None:
    close = np.array(_uptrend(40))
    f = features(close)
    assert f["dev_sma20"] == pytest.approx(close[-1] / close[-20:].mean() - 1)
    assert f["dist_high20"] == pytest.approx(close[-1] / close[-20:].max() - 1)
    assert 50 < f["rsi14"] < 100 and rsi(np.full(30, 5.0)) == 50.0
    assert math.isnan(features(close[:10])["rsi14"])


def test_news_influence_score_weights_base_prob_and_recency() -> None:
    assert roles.influence_score(1.0, 1.0, 0.0) == pytest.approx(1.0)
    assert roles.influence_score(0.5, 0.2, 0.0) == pytest.approx(0.55 * 0.5 + 0.25 * 0.2 + 0.20)
    score, n, _ = roles.news_quant(["Alcoa beats estimates, shares surge"], [0.0])
    neg, _, _ = roles.news_quant(["Alcoa misses estimates and cuts guidance"], [0.0])
    none, n0, summary = roles.news_quant([], [])
    assert score > 0.5 and 0 < n <= 1 and neg < 0 and (none, n0) == (0.0, 0.0)
    assert "no news" in summary


def test_conservative_buys_at_half_the_balanced_size() -> None:
    action_b, size_b, _ = roles.decision_quant(0.6, "balanced")
    action_c, size_c, _ = roles.decision_quant(0.6, "conservative")
    assert action_b == action_c == "buy" and size_c == pytest.approx(size_b / 2)
    assert roles.decision_quant(0.12, "aggressive")[0] == "buy"
    assert roles.decision_quant(0.12, "conservative")[0] == "hold"


def test_reports_wait_for_their_publication_lag(tmp_path: Path) -> None:
    path = tmp_path / "fundamentals.csv"
    path.write_text("symbol,period_end,filed_at,revenue,eps\n"
                    "X,2020-09-30,2020-10-28,100,1.0\n"
                    "X,2020-12-31,2021-02-03,120,1.3\n"
                    "X,2021-03-31,,130,1.4\n")
    src = ReportSource(path, lag_days=1, fallback_days=45)
    assert src.visible("X", np.datetime64("2021-02-03T12:00", "ns"))[-1].metrics["revenue"] == 100
    seen = src.visible("X", np.datetime64("2021-02-04T00:00", "ns"))
    assert seen[-1].metrics["revenue"] == 120
    score, summary = report_score(seen)
    assert score > 0 and "revenue +20.0%" in summary
    assert len(src.visible("X", np.datetime64("2021-05-14", "ns"))) == 2  # 45 days: 2021-05-15
    assert len(src.visible("X", np.datetime64("2021-05-15", "ns"))) == 3
    assert report_score([]) == (0.0, "no fundamentals visible at decision time")


# --- memory: lag safety ---------------------------------------------------------------------------

def test_an_entry_is_retrievable_only_once_its_outcome_is_realised(tmp_path: Path) -> None:
    mem = ReflectionMemory(tmp_path / "m.sqlite")
    vec = np.ones(8)
    mem.add(role="trend", symbol="X", time=T0, step=10, horizon=5, situation=vec,
            inputs_digest="d", output={"direction": "up"}, direction=1.0, price=100.0)
    assert mem.realise(step=14, now=T0 + 4 * DAY, prices={"X": 110.0}, flat_band=0.005) == 0
    assert mem.retrieve(role="trend", as_of=T0 + 4 * DAY, situation=vec).n == 0
    assert mem.realise(step=15, now=T0 + 5 * DAY, prices={"X": 110.0}, flat_band=0.005) == 1
    assert mem.retrieve(role="trend", as_of=T0 + 5 * DAY - np.timedelta64(1, "ns"),
                        situation=vec).n == 0
    (recall,) = mem.retrieve(role="trend", as_of=T0 + 5 * DAY, situation=vec).similar
    assert (recall.outcome, recall.pnl) == ("win", pytest.approx(0.10))
    row = mem.rows()[0]
    assert row["realised_at"] == int((T0 + 5 * DAY).astype(np.int64)) and row["horizon"] == 5


def _one_decision(agent: TradingGroup, data: MarketData, t: np.datetime64) -> dict[str, float]:
    view = data.as_of(t)
    obs = Observation(time=t, step=30, universe=("X",), market=view,
                      portfolio=Portfolio(cash=1e5, positions={}, prices={"X": 1.0}, equity=1e5))
    return dict(agent.decide(obs).weights)


def test_lag_safety_an_unrealised_outcome_would_change_the_decision(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """Losing buys in this exact situation are known only after t: they must not halve the buy."""
    closes = _uptrend(40)
    data = MarketData({"X": _bars(closes, [c * 1.01 for c in closes],
                                  [c * 0.99 for c in closes], closes)})
    t = data.full("X").time[30]
    agent = TradingGroup(min_similar=3)
    agent.start(RunContext(universe=("X",), start=t))
    honest = _one_decision(agent, data, t)
    assert honest["X"] > 0  # the team buys the uptrend
    # the same situation, losing buys, realised one bar AFTER t (e.g. from a later run's memory)
    vec = [r for r in agent.memory.rows() if r["role"] == "decision"][-1]["situation"]
    situation = np.array([float(x) for x in vec.strip("[]").split(",")])
    for i in range(4):
        agent.memory.add(role="decision", symbol="X", time=t - (10 - i) * DAY, step=900 + i,
                         horizon=1, situation=situation, inputs_digest="future",
                         output={"action": "buy", "size": 1.0}, direction=1.0, price=100.0)
    agent.memory.run = "later"
    agent.memory._db.execute("UPDATE entries SET run = 'later' WHERE inputs_digest = 'future'")
    agent.memory.realise(step=10_000, now=t + DAY, prices={"X": 80.0}, flat_band=0.005)
    agent.memory.run = str(t)
    assert honest == _one_decision(agent, data, t)  # realised after t: invisible
    original = ReflectionMemory.retrieve

    def peeking(self: ReflectionMemory, **kw: object) -> object:
        return original(self, **{**kw, "as_of": None})
    monkeypatch.setattr(ReflectionMemory, "retrieve", peeking)
    leaked = _one_decision(agent, data, t)
    assert leaked["X"] == pytest.approx(honest["X"] / 2)  # the leak would have halved the buy


def test_a_carried_memory_from_a_later_period_is_refused(sample: MarketData,
                                                         tmp_path: Path) -> None:
    later = BacktestConfig.build(symbols=("ALPHA", "BRAVO"), start="2018-06-01",
                                 end="2018-12-31")
    simulate(config=later, agent=load_agent("tradinggroup"), data=sample,
             save_to=tmp_path / "later")
    memory = tmp_path / "later" / "tradinggroup_memory.sqlite"
    assert ReflectionMemory(memory).count(realised=True) > 100
    earlier = BacktestConfig.build(symbols=("ALPHA", "BRAVO"), start="2018-01-02",
                                   end="2018-05-31")
    with pytest.raises(CarriedMemoryError, match="train/test boundary"):
        simulate(config=earlier, agent=load_agent("tradinggroup", carry_memory=str(memory)),
                 data=sample)
    after = BacktestConfig.build(symbols=("ALPHA", "BRAVO"), start="2019-01-01")
    sample_2019 = load_market(symbols=["ALPHA", "BRAVO"], source="sample", end="2019-03-31")
    carried = simulate(config=after, agent=load_agent("tradinggroup",
                                                      carry_memory=str(memory)),
                       data=sample_2019)
    fresh = simulate(config=after, agent=load_agent("tradinggroup"), data=sample_2019)
    assert len(carried.equity) == len(fresh.equity) > 20


# --- risk manager ---------------------------------------------------------------------------------

def test_exit_levels_scale_with_volatility_and_style() -> None:
    calm = exit_levels(close=100, sigma=0.01, style="balanced", horizon=4, side=1)
    wild = exit_levels(close=100, sigma=0.03, style="balanced", horizon=4, side=1)
    tight = exit_levels(close=100, sigma=0.01, style="conservative", horizon=4, side=1)
    short = exit_levels(close=100, sigma=0.01, style="balanced", horizon=4, side=-1)
    assert calm is not None and wild is not None and tight is not None and short is not None
    assert calm.stop_loss == pytest.approx(97.0) and calm.take_profit == pytest.approx(105.0)
    assert wild.stop_loss < calm.stop_loss < tight.stop_loss < 100 < tight.take_profit
    assert short.stop_loss == pytest.approx(103.0) and short.take_profit == pytest.approx(95.0)
    assert exit_levels(close=100, sigma=0.01, style="balanced", horizon=4, side=0) is None


def _scenario(bar: tuple[float, float, float, float]) -> tuple[pd.DataFrame, float, float]:
    """The team buys the uptrend at its only decision; the bar after the entry fill is ``bar``
    (open, high, low, close as multiples of the decision close). Returns (fills, stop, target)."""
    closes = _uptrend(40)[:31]
    c = closes[-1]
    highs, lows = [x * 1.004 for x in closes], [x * 0.996 for x in closes]
    prefix = MarketData({"X": _bars(closes, highs, lows, closes)})
    config = BacktestConfig.build(symbols=["X"], start=str(prefix.full("X").time[30])[:19],
                                  costs="zero")
    first = simulate(config=config, agent=TradingGroup(every=100), data=prefix)
    levels = first.decisions.iloc[0]
    stop = json.loads(levels.stop_loss)["X"]
    target = json.loads(levels.take_profit)["X"]
    o, h, lo, cl = (c * x for x in bar)
    data = MarketData({"X": _bars(closes + [c, o], highs + [c, h], lows + [c, lo],
                                  closes + [c, cl])})
    result = simulate(config=config, agent=TradingGroup(every=100), data=data)
    assert result.fills["reason"].iloc[0] == "rebalance" and result.fills["price"].iloc[0] == c
    return result.fills, stop, target


def test_a_stop_gapped_through_fills_at_the_open_with_the_real_engine() -> None:
    closes = _uptrend(40)
    c = closes[30]
    fills, stop, target = _scenario((0.9, 0.91, 0.85, 0.88))  # opens 10 % down, below the stop
    exits = fills[fills["reason"] != "rebalance"]
    assert stop < c and target > c
    assert exits["reason"].tolist() == ["stop_loss"]
    assert exits["price"].iloc[0] == pytest.approx(c * 0.9) and exits["price"].iloc[0] < stop


def test_a_target_gapped_through_fills_at_the_open() -> None:
    c = _uptrend(40)[30]
    fills, _, target = _scenario((1.2, 1.25, 1.19, 1.2))
    exits = fills[fills["reason"] != "rebalance"]
    assert exits["reason"].tolist() == ["take_profit"]
    assert exits["price"].iloc[0] == pytest.approx(c * 1.2) and exits["price"].iloc[0] > target


def test_stop_and_target_in_one_bar_take_the_stop_first() -> None:
    fills, stop, _ = _scenario((1.0, 1.3, 0.7, 1.0))  # the bar spans both levels
    exits = fills[fills["reason"] != "rebalance"]
    assert exits["reason"].tolist() == ["stop_loss"]
    assert exits["price"].iloc[0] == pytest.approx(stop)


# --- the team through the engine ------------------------------------------------------------------

def test_the_team_trades_with_stops_and_reflects_on_the_sample(sample: MarketData,
                                                               tmp_path: Path) -> None:
    config = BacktestConfig.build(symbols=("ALPHA", "BRAVO"), start="2017-06-01",
                                  end="2018-12-31")
    agent = load_agent("tradinggroup")
    result = simulate(config=config, agent=agent, data=sample, save_to=tmp_path / "run")
    assert {"rebalance", "stop_loss"} <= set(result.fills["reason"])
    rows = ReflectionMemory(tmp_path / "run" / "tradinggroup_memory.sqlite").rows()
    realised = [r for r in rows if r["realised_at"] is not None]
    assert {r["role"] for r in realised} == {"trend", "decision", "style"}
    # every realisation happened exactly horizon bars after its decision, never earlier
    clock = result.equity.index.tz_localize(None).to_numpy(dtype="datetime64[ns]").astype(np.int64)
    pos = {int(t): i for i, t in enumerate(clock)}
    assert all(pos[r["realised_at"]] - pos[r["time"]] == r["horizon"] for r in realised)
    steps = (tmp_path / "run" / "tradinggroup_steps.jsonl").read_text().splitlines()
    assert len(steps) == len(result.equity)
    assert "experience" in steps[-1] and "roles" in steps[-1]
