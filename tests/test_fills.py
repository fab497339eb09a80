"""Fill rules of issue 11: cash and leverage held at the fill, lots under the cap, exits that
belong to a position, malformed decisions named and recorded."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import load_benchmark
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradesim.contracts import BaseAgent, Decision, Observation
from tradesim.data.bars import Bars
from tradesim.data.view import MarketData
from tradesim.engine.account import AccountConfig
from tradesim.engine.core import account_arrays, affordable, fill_charges
from tradesim.engine.costs import CostModel
from tradesim.engine.fastpath import run_fast
from tradesim.engine.record import RunResult
from tradesim.errors import AgentDecisionError
from tradesim.evaluate.backtest import BacktestConfig, run_backtest


def _bars(symbol: str, opens: list[float], closes: list[float], *,
          volume: float | list[float] = 1e6) -> Bars:
    o, c = np.asarray(opens, dtype=float), np.asarray(closes, dtype=float)
    return Bars.from_arrays(symbol=symbol, interval="1d", adjusted=True, source="test",
                            time=pd.date_range("2021-01-04", periods=len(c), freq="D", tz="UTC"),
                            open=o, high=np.maximum(o, c) * 1.01, low=np.minimum(o, c) * 0.99,
                            close=c, volume=np.broadcast_to(np.asarray(volume, float), c.shape))


class _Script(BaseAgent):
    """Scripted decisions by step (hold otherwise)."""

    name = "script"

    def __init__(self, script: dict[int, Decision]) -> None:
        self.script = script

    def decide(self, obs: Observation) -> Decision:
        return self.script.get(obs.step, Decision.hold())


def _events(result: RunResult, kind: str) -> list[dict]:
    ev = result.events
    return [json.loads(d) for d in ev.loc[ev["kind"] == kind, "detail"]] if len(ev) else []


# --- 1. cash and leverage at the fill -----------------------------------------------------------

def test_a_buy_gapping_up_at_the_open_is_shrunk_to_the_cash_there() -> None:
    # sized at close 100 (1000 shares of 100k), filled at an open 13.7% higher
    data = MarketData({"GAP": _bars("GAP", [100, 113.7, 115, 116], [100, 114, 115, 116])})
    config = BacktestConfig.build(symbols=["GAP"], costs={"commission_bps": 10})
    result = run_backtest(config=config, agent=_Script({0: Decision(weights={"GAP": 1.0})}),
                          data=data)
    fill = result.fills.iloc[0]
    expected = math.floor(100_000 / (113.7 * 1.001))
    assert fill["quantity"] == expected < 1000
    assert result.equity["cash"].min() >= 0
    assert result.orders.iloc[0]["status"] == "partial"
    (event,) = _events(result, "order_shrunk")
    assert event["requested"] == 1000 and event["filled"] == expected and event["symbol"] == "GAP"
    fast = run_fast(data=data, weights=np.array([[1.0], [np.nan], [np.nan], [np.nan]]),
                    config=config)
    assert fast.fills["quantity"].tolist() == result.fills["quantity"].tolist()
    assert _events(fast, "order_shrunk") == [event]


def test_leverage_cap_is_held_at_the_fill_with_shorts_and_leverage() -> None:
    # 2x gross sized at the close; both legs gap against the book at the open
    data = MarketData({"UP": _bars("UP", [100, 112, 112], [100, 112, 112]),
                       "DN": _bars("DN", [100, 91, 91], [100, 91, 91])})
    config = BacktestConfig.build(symbols=["UP", "DN"], allow_short=True, max_leverage=2.0,
                                  costs="zero")
    result = run_backtest(config=config, agent=_Script(
        {0: Decision(weights={"UP": 1.0, "DN": -1.0})}), data=data)
    f = result.fills
    gross = float((f["quantity"].abs() * f["price"]).sum())
    assert gross <= 2.0 * 100_000 + 1e-6  # flat book: equity at the fill is the cash
    assert len(_events(result, "order_shrunk")) >= 1


def test_a_rotation_sells_before_it_buys_so_it_is_not_shrunk() -> None:
    # BBB (column 0 after sorting) is bought with the cash that selling AAA frees
    data = MarketData({"AAA": _bars("AAA", [50, 50, 50, 50], [50, 50, 50, 50]),
                       "BBB": _bars("BBB", [20, 20, 20, 20], [20, 20, 20, 20.2])})
    config = BacktestConfig.build(symbols=["BBB", "AAA"], costs="zero")
    result = run_backtest(config=config, agent=_Script(
        {0: Decision(weights={"AAA": 1.0}), 1: Decision(weights={"AAA": 0.0, "BBB": 1.0})}),
        data=data)
    assert _events(result, "order_shrunk") == []
    sells = result.fills[result.fills["quantity"] < 0]
    buys = result.fills[(result.fills["symbol"] == "BBB")]
    assert sells.index[0] < buys.index[0]
    assert buys["quantity"].iloc[0] == 5000


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gaps=st.lists(st.floats(-0.15, 0.15), min_size=8, max_size=8),
       weights=st.lists(st.floats(0.0, 1.0), min_size=8, max_size=8),
       commission=st.sampled_from([0.0, 10.0]), impact=st.sampled_from([0.0, 1.0]))
def test_long_only_cash_never_goes_negative_and_loop_equals_fast_path(
        gaps, weights, commission, impact) -> None:
    closes = 100 * np.cumprod(1 + np.r_[0.0, np.asarray(gaps[1:]) / 3])
    opens = np.r_[closes[0], closes[:-1] * (1 + np.asarray(gaps[1:]))]
    data = MarketData({"A": _bars("A", list(opens), list(closes), volume=5e4),
                       "B": _bars("B", list(opens[::-1]), list(closes[::-1]), volume=5e4)})
    w = np.column_stack([weights, 1.0 - np.asarray(weights)])
    config = BacktestConfig.build(symbols=["A", "B"], costs={
        "commission_bps": commission, "impact_y": impact})
    loop = run_backtest(config=config, agent=_Script(
        {i: Decision(weights={"A": float(a), "B": float(b)}) for i, (a, b) in enumerate(w)}),
        data=data)
    assert loop.equity["cash"].min() >= -1e-6
    fast = run_fast(data=data, weights=w, config=config)
    pd.testing.assert_frame_equal(loop.fills[["step", "symbol", "quantity", "price"]],
                                  fast.fills[["step", "symbol", "quantity", "price"]])
    assert _events(loop, "order_shrunk") == _events(fast, "order_shrunk")


@given(qty=st.floats(-1e5, 1e5), held=st.floats(-1e4, 1e4), price=st.floats(1.0, 500.0),
       cash=st.floats(-5e4, 2e5), lev=st.sampled_from([1.0, 2.0]),
       fixed=st.sampled_from([0.0, 1.0]), bps=st.sampled_from([0.0, 5.0]))
def test_affordable_keeps_the_book_within_the_cap_and_reductions_whole(
        qty, held, price, cash, lev, fixed, bps) -> None:
    model = CostModel(commission_fixed=fixed, commission_bps=bps, impact_y=1.0)
    cp, acct = account_arrays(AccountConfig(costs=model, max_leverage=lev))
    held = float(round(held))
    qty = float(round(qty))
    equity = cash + held * price
    got = affordable(0, qty, price, 1e5, np.array([price]), np.array([held]), np.array([price]),
                     cash, 1.0, cp, acct)
    assert abs(got) <= abs(qty) and (got == 0 or math.copysign(1, got) == math.copysign(1, qty))
    assert got == round(got)
    if held and (held > 0) != (qty > 0):  # the reducing part always fills
        assert abs(got) >= min(abs(qty), abs(held))
    if got != qty and abs(got) > abs(held) * ((held > 0) != (qty > 0)):
        cost = sum(fill_charges(got, price, 1e5, 1.0, cp))
        assert abs(held + got) * price <= lev * (equity - cost) + 1e-6


def test_cash_at_fill_matches_backtesting_py_on_gapping_daily_series(shared_data: Path) -> None:
    pytest.importorskip("backtesting")
    bench = load_benchmark("fill_parity")
    rows = [bench.parity_row(shared_data / "daily", name) for name in bench.SERIES[:5]]
    print("\n" + bench.table(rows))
    for r in rows:
        assert r["gaps_2pct"] > 50 and r["shrunk"] > 0, r  # the rule is exercised
        assert r["same_trades"], r
        assert abs(r["rel_diff"]) < 1e-9, r
        assert r["min_cash"] >= 0, r


# --- 2. lots under the participation cap --------------------------------------------------------

@pytest.mark.parametrize("lot, fractional, expected", [(1.0, False, 659.0), (100.0, False, 600.0),
                                                       (1.0, True, 659.8)])
def test_capped_quantities_are_whole_lots(lot, fractional, expected) -> None:
    data = MarketData({"THIN": _bars("THIN", [10] * 4, [10] * 4, volume=6598)})
    config = BacktestConfig.build(symbols=["THIN"], lot_size=lot, fractional=fractional,
                                  costs={"participation_cap": 0.1})
    agent = _Script({0: Decision(weights={"THIN": 0.5})})
    loop = run_backtest(config=config, agent=agent, data=data)
    assert loop.fills["quantity"].iloc[0] == pytest.approx(expected, abs=1e-9)
    fast = run_fast(data=data, weights=np.array([[0.5], [np.nan], [np.nan], [np.nan]]),
                    config=config)
    assert fast.fills["quantity"].tolist() == loop.fills["quantity"].tolist()


def test_a_capped_stop_exit_sells_whole_shares() -> None:
    closes = [10, 10, 10, 8, 8]
    vol = [1e6, 1e6, 1e6, 4995, 1e6]
    data = MarketData({"S": _bars("S", closes, closes, volume=vol)})
    config = BacktestConfig.build(symbols=["S"], costs={"participation_cap": 0.1})
    result = run_backtest(config=config, agent=_Script(
        {0: Decision(weights={"S": 0.5}, stop_loss={"S": 9.0})}), data=data)
    stops = result.fills[result.fills["reason"] == "stop_loss"]
    assert stops["quantity"].iloc[0] == -499  # 0.1 x 4995 = 499.5 -> 499
    assert (result.fills["quantity"] % 1 == 0).all()


# --- 4. exits belong to a position ---------------------------------------------------------------

def test_a_stop_set_while_flat_is_ignored_and_never_fires_later() -> None:
    closes = [100.0] * 5 + [100.0, 100.0, 80.0, 80.0]
    data = MarketData({"X": _bars("X", closes, closes)})
    config = BacktestConfig.build(symbols=["X"], costs="zero")
    result = run_backtest(config=config, agent=_Script({
        0: Decision(stop_loss={"X": 90.0}),  # flat, no order: ignored
        5: Decision(weights={"X": 0.5}),  # a position much later, without a stop
    }), data=data)
    (ignored,) = _events(result, "exit_ignored")
    assert ignored["symbol"] == "X" and ignored["exit"] == "stop_loss"
    assert (result.fills["reason"] == "stop_loss").sum() == 0
    assert result.fills["quantity"].tolist() == [500.0]


def test_levels_clear_when_the_position_closes_or_its_order_dies() -> None:
    closes = [100.0] * 4 + [100.0, 100.0, 80.0, 80.0]
    vol = [1e6, 0.0, 1e6, 1e6, 1e6, 1e6, 1e6, 1e6]  # the first entry order finds no volume
    data = MarketData({"X": _bars("X", closes, closes, volume=vol)})
    config = BacktestConfig.build(symbols=["X"], costs={"participation_cap": 0.1})
    result = run_backtest(config=config, agent=_Script({
        0: Decision(weights={"X": 0.5}, stop_loss={"X": 90.0}),  # works: bar 1 has no volume
        1: Decision(weights={"X": 0.0}),  # replaced before it filled: its stop clears
        2: Decision(weights={"X": 0.2}, take_profit={"X": 150.0}),  # armed with this position
        3: Decision(weights={"X": 0.0}),  # closed: its levels clear
        4: Decision(weights={"X": 0.3}),  # reopened without exits
    }), data=data)
    assert result.orders["status"].iloc[0] == "replaced"
    assert set(result.fills["reason"]) == {"rebalance"}  # the 90 stop never fires at 80
    assert result.fills["quantity"].tolist() == [200.0, -200.0, 300.0]


# --- 5. malformed decisions ----------------------------------------------------------------------

@pytest.mark.parametrize("weights", [[0.5], "ALPHA", ("ALPHA", 0.5)])
def test_weights_not_a_mapping_name_the_error_and_save_the_partial_run(weights, tmp_path) -> None:
    closes = [10.0] * 6
    data = MarketData({"ALPHA": _bars("ALPHA", closes, closes)})
    config = BacktestConfig.build(symbols=["ALPHA"], costs="zero")
    agent = _Script({1: Decision(weights={"ALPHA": 0.5}), 3: Decision(weights=weights)})
    with pytest.raises(AgentDecisionError, match="Decision.weights is a .* must map symbol") as e:
        run_backtest(config=config, agent=agent, data=data)
    assert e.value.step == 3
    partial = e.value.partial_result
    assert partial.partial and len(partial.equity) == 4 and len(partial.fills) == 1
    loaded = RunResult.load(partial.save(tmp_path / "run"))
    row = loaded.decisions[loaded.decisions["step"] == 3].iloc[0]
    assert "Decision.weights is a" in row["error"]


# --- 3. working targets and the square-root impact ------------------------------------------------

def _nan_rows(script: dict[int, float], n: int) -> np.ndarray:
    w = np.full((n, 1), np.nan)
    for i, x in script.items():
        w[i, 0] = x
    return w


@pytest.mark.parametrize("fill", ["next_open", "close"])
def test_buy_and_hold_on_a_thin_series_ends_fully_invested_after_several_bars(fill) -> None:
    n = 12
    closes = [10.0] * n
    data = MarketData({"THIN": _bars("THIN", closes, closes, volume=20_000)})
    config = BacktestConfig.build(symbols=["THIN"], fill=fill, costs={"participation_cap": 0.1})
    loop = run_backtest(config=config, agent=_Script({0: Decision(weights={"THIN": 1.0})}),
                        data=data)
    # 10,000 shares wanted, 2,000 a bar: five bars of one order, then fully invested
    assert loop.fills["quantity"].tolist() == [2000.0] * 5
    assert loop.fills["order_id"].tolist() == [1] * 5
    assert loop.orders["status"].tolist() == ["filled"]
    assert loop.weights["THIN"].iloc[-1] == pytest.approx(1.0)
    assert _events(loop, "target_unreached") == [] and loop.meta["targets_unreached"] == 0
    fast = run_fast(data=data, weights=_nan_rows({0: 1.0}, n), config=config)
    pd.testing.assert_frame_equal(loop.fills, fast.fills)
    pd.testing.assert_frame_equal(loop.orders, fast.orders)


def test_a_new_weight_replaces_a_working_target_and_a_hold_keeps_it() -> None:
    n = 10
    closes = [10.0] * n
    data = MarketData({"THIN": _bars("THIN", closes, closes, volume=20_000)})
    config = BacktestConfig.build(symbols=["THIN"], costs={"participation_cap": 0.1})
    script = {0: 1.0, 3: 0.5}  # 10,000 shares wanted; at step 3 (6,000 held) only 5,000
    loop = run_backtest(config=config, agent=_Script(
        {i: Decision(weights={"THIN": w}) for i, w in script.items()}), data=data)
    assert loop.orders["status"].tolist() == ["replaced", "filled"]
    assert loop.orders["filled"].tolist() == [6000.0, -1000.0]
    assert loop.fills["order_id"].tolist() == [1, 1, 1, 2]  # the old one stops at step 3
    assert loop.weights["THIN"].iloc[-1] == pytest.approx(0.5)
    fast = run_fast(data=data, weights=_nan_rows(script, n), config=config)
    pd.testing.assert_frame_equal(loop.fills, fast.fills)
    pd.testing.assert_frame_equal(loop.orders, fast.orders)


def test_targets_left_unreached_are_reported_per_symbol() -> None:
    n = 4
    closes = [10.0] * n
    data = MarketData({"A": _bars("A", closes, closes, volume=10_000),
                       "B": _bars("B", closes, closes, volume=1e7)})
    config = BacktestConfig.build(symbols=["A", "B"], costs={"participation_cap": 0.1})
    loop = run_backtest(config=config, agent=_Script(
        {0: Decision(weights={"A": 0.5, "B": 0.5})}), data=data)
    (event,) = _events(loop, "target_unreached")
    assert event == {"symbol": "A", "target": 5000.0, "held": 3000.0, "remaining": 2000.0}
    assert loop.meta["targets_unreached"] == 1
    assert loop.orders["status"].tolist() == ["partial", "filled"]
    fast = run_fast(data=data, weights=np.array([[0.5, 0.5]] + [[np.nan] * 2] * (n - 1)),
                    config=config)
    assert _events(fast, "target_unreached") == [event] and fast.meta["targets_unreached"] == 1
    pd.testing.assert_frame_equal(loop.orders, fast.orders)


def test_an_order_shrunk_for_cash_ends_while_a_capped_one_keeps_working() -> None:
    # gap up at the first fill: the cash buys fewer shares; the rest is not worked later
    opens, closes = [100, 120, 100, 100, 100], [100, 100, 100, 100, 100]
    data = MarketData({"G": _bars("G", opens, closes)})
    config = BacktestConfig.build(symbols=["G"], costs={"participation_cap": 0.5})
    loop = run_backtest(config=config, agent=_Script({0: Decision(weights={"G": 1.0})}),
                        data=data)
    assert loop.fills["quantity"].tolist() == [833.0]  # 100k / 120, then nothing more
    assert loop.orders["status"].tolist() == ["partial"]
    assert len(_events(loop, "order_shrunk")) == 1 and loop.meta["targets_unreached"] == 0


def test_default_impact_follows_the_square_root_law_with_the_bar_interval() -> None:
    model = CostModel.preset("default")
    assert model.impact_y == 1.0 and model.impact_sigma == 0.02
    cp, _ = account_arrays(AccountConfig(costs=model))
    # 1% of a day's volume on daily bars: Y x sigma x sqrt(0.01) = 20 bps (+ 1 bp slippage)
    _, _, slip = fill_charges(1_000, 100.0, 100_000, 1.0, cp)
    assert slip / 100_000 == pytest.approx(0.0020 + 0.0001)
    # 10% of one minute bar: the day holds 390 such bars -> 3.2 bps, not 316
    _, _, slip = fill_charges(1_000, 100.0, 10_000, 390.0, cp)
    assert slip / 100_000 - 0.0001 == pytest.approx(0.02 * math.sqrt(0.1 / 390))
    assert "sqrt" in model.describe() and "participation cap 0.1" in model.describe()
    # an old record's impact_coef keeps its old cost: coef x sqrt(qty / bar volume)
    former = CostModel.model_validate({"impact_coef": 0.1})
    assert former.bars_per_day == 1.0 and former.impact_scale == pytest.approx(0.1)


def test_minute_bars_infer_bars_per_day_from_their_spacing() -> None:
    n = 30
    t = pd.date_range("2021-01-04 14:31", periods=n, freq="min", tz="UTC")
    close = np.full(n, 100.0)
    bars = Bars.from_arrays(symbol="M", interval="1m", adjusted=True, source="test", time=t,
                            open=close, high=close * 1.001, low=close * 0.999, close=close,
                            volume=np.full(n, 10_000.0))
    config = BacktestConfig.build(symbols=["M"], interval="1m", costs={
        "preset": "default", "participation_cap": None})
    agent = _Script({0: Decision(weights={"M": 0.01})})  # 10 shares of 10,000 a bar
    loop = run_backtest(config=config, agent=agent, data=MarketData({"M": bars}))
    fill = loop.fills.iloc[0]
    impact = fill["slippage_cost"] / (fill["quantity"] * fill["price"]) - 1e-4
    assert impact == pytest.approx(0.02 * math.sqrt(10 / (10_000 * 390)))
    fast = run_fast(data=MarketData({"M": bars}), weights=_nan_rows({0: 0.01}, n),
                    config=config)
    assert fast.fills["slippage_cost"].tolist() == loop.fills["slippage_cost"].tolist()
