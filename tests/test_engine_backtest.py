"""Backtest runner: fills, stops, caps, margin, bad agent input, and the run record round trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from tradesim.contracts import BaseAgent, Decision, Feedback, Observation
from tradesim.data.bars import Bars
from tradesim.data.view import MarketData
from tradesim.engine.core import KIND_LIMIT, KIND_STOP, exit_fill, order_price
from tradesim.engine.costs import CostModel, load_costs
from tradesim.engine.record import RunResult
from tradesim.errors import AgentDecisionError, ConfigError
from tradesim.evaluate.backtest import BacktestConfig, run_backtest


def _bars(symbol: str, closes: list[float], *, gap: float = 0.0, volume: float = 1e6) -> Bars:
    c = np.asarray(closes, dtype=float)
    o = np.r_[c[0], c[:-1]] * (1 + gap)
    return Bars.from_arrays(symbol=symbol, interval="1d", adjusted=True, source="test",
                            time=pd.date_range("2021-01-04", periods=len(c), freq="D", tz="UTC"),
                            open=o, high=np.maximum(o, c) * 1.01, low=np.minimum(o, c) * 0.99,
                            close=c, volume=np.full(len(c), volume))


@pytest.fixture
def data() -> MarketData:
    rng = np.random.default_rng(7)
    a = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 60)))
    b = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, 60)))
    return MarketData({"AAA": _bars("AAA", list(a)), "BBB": _bars("BBB", list(b))})


class _Script(BaseAgent):
    """Returns scripted decisions by step (hold otherwise); records feedback."""

    name = "script"

    def __init__(self, script: dict[int, object]) -> None:
        self.script, self.feedback = script, []

    def decide(self, obs: Observation) -> Decision:
        out = self.script.get(obs.step, Decision.hold())
        if isinstance(out, Exception):
            raise out
        return out

    def update(self, feedback: Feedback) -> None:
        self.feedback.append(feedback)


def _config(**kw) -> BacktestConfig:
    return BacktestConfig.build(**{"symbols": ["AAA", "BBB"], "costs": "zero", **kw})


def test_market_order_fills_at_next_open_and_feedback_comes_after(data) -> None:
    agent = _Script({5: Decision(weights={"AAA": 0.5})})
    r = run_backtest(config=_config(), agent=agent, data=data)
    f = r.fills.iloc[0]
    bars = data.full("AAA")
    assert f["time"] == pd.Timestamp(bars.time[6], tz="UTC")
    assert f["price"] == bars.open[6]
    assert f["quantity"] == math.trunc(0.5 * 100_000 / bars.close[5])
    fb = agent.feedback[5]  # feedback for the step-5 decision arrives at step 6
    assert fb.decision_time == bars.time[5] and fb.time == bars.time[6]
    assert fb.reward == pytest.approx(math.log(r.equity["equity"].iloc[6] / 100_000))
    assert r.fill_mode == "next_open"


def test_close_fill_mode_is_explicit_and_stamped(data) -> None:
    r = run_backtest(config=_config(fill="close"), agent=_Script({5: Decision(weights={"AAA": 0.5})}),
                     data=data)
    assert r.fills["price"].iloc[0] == data.full("AAA").close[5]
    assert r.fill_mode == "close" and r.config["fill"] == "close"


def test_fill_prices_and_exit_rules() -> None:
    assert order_price(KIND_LIMIT, 10, 95.0, 100.0, 101.0, 94.0) == 95.0
    assert order_price(KIND_LIMIT, 10, 95.0, 93.0, 96.0, 92.0) == 93.0  # gapped below the limit
    assert math.isnan(order_price(KIND_LIMIT, 10, 90.0, 100.0, 101.0, 94.0))
    assert order_price(KIND_STOP, -10, 95.0, 93.0, 96.0, 92.0) == 93.0  # stop gapped through
    assert order_price(KIND_STOP, 10, 105.0, 100.0, 106.0, 99.0) == 105.0
    # long: stop 95 and target 105 both inside the bar -> adverse (stop) first
    assert exit_fill(10, 95.0, 105.0, 100.0, 106.0, 94.0) == (95.0, 1)
    # long: open gapped below the stop -> fill at the open
    assert exit_fill(10, 95.0, 105.0, 90.0, 92.0, 89.0) == (90.0, 1)
    # short: target below hit, stop above not -> target
    assert exit_fill(-10, 105.0, 95.0, 100.0, 101.0, 94.0) == (95.0, 2)
    # nothing inside the bar -> no exit
    assert math.isnan(exit_fill(10, 95.0, 105.0, 100.0, 101.0, 99.0)[0])


def test_stop_loss_from_decision_exits_within_the_bar() -> None:
    closes = [100, 100, 100, 100, 90, 90]
    data = MarketData({"AAA": _bars("AAA", closes)})
    agent = _Script({1: Decision(weights={"AAA": 0.5}, stop_loss={"AAA": 95.0})})
    r = run_backtest(config=_config(symbols=["AAA"]), agent=agent, data=data)
    exit_fill = r.fills[r.fills["reason"] == "stop_loss"].iloc[0]
    assert exit_fill["price"] == 95.0 and exit_fill["step"] == 4
    assert r.trades["exit_reason"].tolist() == ["stop_loss"]


def test_participation_cap_fills_in_part_and_the_rest_keeps_working() -> None:
    data = MarketData({"AAA": _bars("AAA", [10.0] * 5, volume=1000)})
    cfg = _config(symbols=["AAA"], costs={"participation_cap": 0.1})
    r = run_backtest(config=cfg, agent=_Script({0: Decision(weights={"AAA": 1.0})}), data=data)
    assert r.fills["quantity"].tolist() == [100.0] * 4  # 10% of each later bar, one order
    assert r.fills["order_id"].tolist() == [1] * 4
    assert r.orders["status"].tolist() == ["partial"]
    assert r.orders["filled"].tolist() == [400.0]
    (event,) = r.events[r.events["kind"] == "target_unreached"]["detail"].map(json.loads)
    assert event["symbol"] == "AAA" and event["held"] == 400.0 and event["remaining"] > 0
    assert event["target"] == pytest.approx(400.0 + event["remaining"])
    assert r.meta["targets_unreached"] == 1


def test_short_squeeze_triggers_recorded_liquidation() -> None:
    data = MarketData({"AAA": _bars("AAA", [100, 100, 100, 130, 160, 200])})
    cfg = _config(symbols=["AAA"], allow_short=True, max_leverage=2.0, maintenance_margin=0.3)
    r = run_backtest(config=cfg, agent=_Script({1: Decision(weights={"AAA": -2.0})}), data=data)
    assert "liquidation" in r.events["kind"].tolist()
    assert (r.fills["reason"] == "liquidation").sum() == 1
    assert r.equity["equity"].iloc[-1] == pytest.approx(100_000 - 2000 * 30)  # flat after step 3


def test_borrow_fee_accrues_on_shorts_only() -> None:
    data = MarketData({"AAA": _bars("AAA", [100.0] * 10)})
    cfg = _config(symbols=["AAA"], allow_short=True, costs={"borrow_bps_annual": 365.25 * 100})
    r = run_backtest(config=cfg, agent=_Script({0: Decision(weights={"AAA": -0.5})}), data=data)
    short_value = 500 * 100.0
    # held from the open of bar 1; fee per elapsed calendar day = 1% of short value
    assert r.equity["costs"].iloc[2:].to_numpy() == pytest.approx([0.01 * short_value] * 8)


@pytest.mark.parametrize("bad, match", [
    (Decision(weights={"AAA": float("nan")}), "finite"),
    (Decision(weights={"AAA": 0.8, "BBB": 0.7}), "max_leverage"),
    (Decision(weights={"ZZZ": 0.1}), "unknown symbol"),
    (Decision(weights={"AAA": 0.5}, stop_loss={"ZZZ": 1.0}), "unknown symbol"),
    (RuntimeError("model crashed"), "RuntimeError"),
    ("not a decision", "expected a Decision"),
])
def test_bad_decision_raises_named_error_and_keeps_partial_record(data, tmp_path, bad, match) -> None:
    agent = _Script({3: Decision(weights={"AAA": 0.4}), 7: bad})
    with pytest.raises(AgentDecisionError, match=match) as info:
        run_backtest(config=_config(), agent=agent, data=data, save_to=tmp_path / "run")
    err = info.value
    assert err.step == 7
    partial = err.partial_result
    assert partial.partial and len(partial.equity) == 8 and len(partial.decisions) == 8
    assert partial.decisions["error"].iloc[-1] != ""
    assert len(partial.fills) == 1  # the step-3 order filled at step 4
    assert RunResult.load(tmp_path / "run").partial


def test_hold_fallback_is_journalled_and_the_run_completes(data) -> None:
    agent = _Script({3: Decision(weights={"AAA": 0.4}), 7: Decision(weights={"AAA": math.inf}),
                     9: ValueError("bad json")})
    r = run_backtest(config=_config(on_agent_error="hold"), agent=agent, data=data)
    assert len(r.equity) == 60 and not r.partial
    fallbacks = r.decisions[r.decisions["fallback"] == "hold"]
    assert fallbacks["step"].tolist() == [7, 9]
    assert all(fallbacks["error"].str.len() > 0)


def test_run_result_round_trips_exactly(data, tmp_path) -> None:
    agent = _Script({2: Decision(weights={"AAA": 0.5, "BBB": 0.3}, confidence=0.7, rationale="go"),
                     30: Decision(weights={"AAA": 0.0})})
    r = run_backtest(config=_config(costs="default", benchmark="BBB"), agent=agent, data=data)
    back = RunResult.load(r.save(tmp_path / "run"))
    for name in ("equity", "weights", "orders", "fills", "trades", "decisions", "events"):
        pd.testing.assert_frame_equal(getattr(back, name), getattr(r, name), check_exact=True)
    pd.testing.assert_series_equal(back.rewards, r.rewards, check_exact=True)
    assert back.config == r.config and back.fingerprints == data.fingerprints()
    assert back.metrics.keys() == r.metrics.keys()
    assert all(back.metrics[k] == r.metrics[k] or (math.isnan(back.metrics[k])
                                                   and math.isnan(r.metrics[k])) for k in r.metrics)
    assert BacktestConfig.model_validate(back.config).model_dump(mode="json") == r.config


def test_cost_presets_and_toml(tmp_path) -> None:
    assert load_costs("zero").is_zero
    path = tmp_path / "costs.toml"
    path.write_text('preset = "retail"\ncommission_bps = 3.0\n')
    model = load_costs(str(path))
    assert model.commission_bps == 3.0 and model.commission_fixed == 1.0
    with pytest.raises(ConfigError, match="unknown cost preset"):
        CostModel.preset("cheap")


def test_config_from_toml(tmp_path) -> None:
    path = tmp_path / "bt.toml"
    path.write_text('[backtest]\nagent = "sma_cross"\nsymbols = ["SPY"]\nstart = "2010-01-01"\n'
                    'costs = "retail"\nfill = "close"\n')
    cfg = BacktestConfig.from_toml(path)
    assert cfg.costs == load_costs("retail") and cfg.fill == "close"
    with pytest.raises(ConfigError, match="fill"):
        BacktestConfig.build(fill="sometime")


class _AlwaysLeveraged(BaseAgent):
    """Keeps asking for 3x the book in AAA, even after the account is gone."""

    name = "always_leveraged"

    def decide(self, obs: Observation) -> Decision:
        return Decision(weights={"AAA": 3.0})


def test_gap_through_liquidation_ends_in_a_clean_ruin_not_an_invariant_error() -> None:
    closes = [100.0, 100.0, 100.0, 100.0, 100.0, 100.0]
    bars = _bars("AAA", closes)
    crash = bars.open.copy()
    crash[3] = 30.0  # the open of bar 3 gaps 70% down: 3x long equity is wiped out at the open
    lows = np.minimum(bars.low, crash * 0.99)
    bars = Bars.from_arrays(symbol="AAA", interval="1d", adjusted=True, source="test",
                            time=bars.time, open=crash, high=bars.high, low=lows,
                            close=np.where(np.arange(6) == 3, 30.0, bars.close),
                            volume=bars.volume)
    result = run_backtest(config=BacktestConfig.build(symbols=["AAA"], costs="zero",
                                                      max_leverage=3.0),
                          agent=_AlwaysLeveraged(), data=MarketData({"AAA": bars}))
    kinds = set(result.events["kind"])
    assert {"liquidation", "ruin"} <= kinds
    assert "ruin" in result.meta["stopped"]
    assert len(result.equity) == 4  # stopped at the ruinous bar, nothing decided after it
    assert result.decisions["fallback"].iloc[-1] == "ruin"


class _WithArtifacts(BaseAgent):
    """Buys AAA once and keeps its own record, as an LLM agent keeps its journal."""

    name = "with_artifacts"

    def decide(self, obs: Observation) -> Decision:
        return Decision(weights={"AAA": 0.5}) if obs.step == 0 else Decision.hold()

    def run_meta(self, *, start: np.datetime64, end: np.datetime64) -> dict:
        return {"warnings": [f"window {start} .. {end} precedes the model's cutoff"],
                "llm": {"calls": 3}}

    def save_artifacts(self, folder) -> list:
        path = folder / "agent_journal.jsonl"
        path.write_text('{"call": 1}\n')
        return [path]


def test_every_run_records_hack_monitors_and_agent_artifacts(data, tmp_path) -> None:
    result = run_backtest(config=_config(), agent=_WithArtifacts(), data=data,
                          save_to=tmp_path / "run")
    monitors = result.meta["monitors"]
    assert monitors["peak_leverage"] == pytest.approx(0.5, abs=0.05)
    assert monitors["turnover"] > 0
    assert result.meta["llm"] == {"calls": 3}
    assert any("cutoff" in w for w in result.meta["warnings"])
    assert (tmp_path / "run" / "agent_journal.jsonl").is_file()
    assert RunResult.load(tmp_path / "run").meta["monitors"] == pytest.approx(monitors, nan_ok=True)


def test_a_stop_cannot_exit_through_a_locked_zero_volume_bar() -> None:
    bars = _bars("AAA", [100, 100, 100, 90, 88, 88])
    volume = bars.volume.copy()
    volume[3] = 0.0  # limit-locked: the stop level is crossed but nothing trades
    bars = bars.with_arrays(volume=volume)
    script = _Script({0: Decision(weights={"AAA": 0.5}, stop_loss={"AAA": 95.0})})
    r = run_backtest(config=_config(symbols=["AAA"], costs={"preset": "zero",
                                                           "participation_cap": 0.1}),
                     agent=script, data=MarketData({"AAA": bars}))
    exits = r.fills[r.fills["reason"] == "stop_loss"]
    assert len(exits) >= 1
    assert (exits["step"] > 3).all()  # nothing filled in the locked bar
    assert r.weights["AAA"].iloc[-1] == 0.0  # it exited on the next bars with volume
