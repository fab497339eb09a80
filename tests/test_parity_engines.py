"""Parity of the event loop with backtesting.py and backtrader on real SPY daily bars.

All three engines are configured alike:
- signals: one SMA 10/30 crossover array computed once from the closes (so indicator code cannot
  differ); enter long on a cross up when flat, exit fully on a cross down when long;
- sizing: whole shares = int(0.9 * equity / last close), decided at the signal bar's close (the
  0.9 keeps cash for gaps up to the next open, so no engine rejects an order for margin);
- fills: market orders at the next bar's open (backtesting.py trade_on_close=False, backtrader
  without cheat-on-open or cheat-on-close, ours fill="next_open");
- costs: 0.1% commission of traded notional, charged on entry and on exit, nothing else
  (backtesting.py commission=0.001, backtrader COMM_PERC percabs=True, ours commission_bps=10).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import load_benchmark

from tradesim.contracts import BaseAgent, Decision, Observation
from tradesim.data.bars import Bars
from tradesim.data.view import MarketData
from tradesim.evaluate.backtest import BacktestConfig, run_backtest

CASH, COMMISSION, WEIGHT = 100_000.0, 0.001, 0.9


@pytest.fixture(scope="module")
def spy(shared_data: Path) -> pd.DataFrame:
    df = pd.read_csv(shared_data / "daily" / "spy.us.txt", parse_dates=["Date"], index_col="Date")
    return df[["Open", "High", "Low", "Close", "Volume"]].astype(float)


@pytest.fixture(scope="module")
def signal(spy: pd.DataFrame) -> np.ndarray:
    return load_benchmark("fill_parity").sma_signal(spy)  # the cross signal the benchmark uses


class _SignalAgent(BaseAgent):
    name = "sma_signal"

    def __init__(self, signal: np.ndarray) -> None:
        self.signal = signal

    def decide(self, obs: Observation) -> Decision:
        s = self.signal[obs.market.count("SPY") - 1]
        held = obs.portfolio.positions.get("SPY", 0.0)
        if s == 1 and held == 0:
            return Decision(weights={"SPY": WEIGHT})
        if s == -1 and held > 0:
            return Decision(weights={"SPY": 0.0})
        return Decision.hold()


@pytest.fixture(scope="module")
def ours(spy: pd.DataFrame, signal: np.ndarray):
    frame = spy.rename(columns=str.lower)
    bars = Bars.from_frame(frame, symbol="SPY", interval="1d", adjusted=True, source="file")
    config = BacktestConfig.build(symbols=["SPY"], initial_cash=CASH, fill="next_open",
                                  costs={"commission_bps": COMMISSION * 1e4})
    return run_backtest(config=config, agent=_SignalAgent(signal), data=MarketData({"SPY": bars}))


def _backtesting_py(spy: pd.DataFrame, signal: np.ndarray):
    from backtesting import Backtest, Strategy

    class SignalStrategy(Strategy):
        def init(self) -> None:
            pass

        def next(self) -> None:
            s = signal[len(self.data) - 1]
            if s == 1 and not self.position:
                self.buy(size=int(WEIGHT * self.equity / self.data.Close[-1]))
            elif s == -1 and self.position.is_long:
                self.position.close()

    bt = Backtest(spy, SignalStrategy, cash=CASH, commission=COMMISSION, trade_on_close=False,
                  exclusive_orders=False, hedging=False, margin=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bt.run()


def _backtrader(spy: pd.DataFrame, signal: np.ndarray):
    import backtrader as bt

    fills: list[tuple] = []

    class SignalStrategy(bt.Strategy):
        def next(self) -> None:
            s = signal[len(self) - 1]
            if s == 1 and not self.position:
                self.buy(size=int(WEIGHT * self.broker.getvalue() / self.data.close[0]))
            elif s == -1 and self.position.size > 0:
                self.close()

        def notify_order(self, order) -> None:
            if order.status == order.Completed:
                fills.append((bt.num2date(order.executed.dt), order.executed.size,
                              order.executed.price, order.executed.comm))

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=spy, openinterest=None))
    cerebro.addstrategy(SignalStrategy)
    cerebro.broker.setcash(CASH)
    cerebro.broker.setcommission(commission=COMMISSION, commtype=bt.CommInfoBase.COMM_PERC,
                                 percabs=True, stocklike=True)
    cerebro.run()
    return cerebro.broker.getvalue(), fills


def test_sma_cross_matches_backtesting_py_trades_and_equity(spy, signal, ours) -> None:
    stats = _backtesting_py(spy, signal)
    theirs = stats["_trades"]
    closed = ours.trades
    assert len(closed) > 20
    n = len(theirs)
    # backtesting.py lists a still-open final trade too; we list closed round trips only
    if n == len(closed) + 1:
        assert pd.isna(theirs["ExitTime"].iloc[-1]) or theirs["ExitBar"].iloc[-1] == len(spy) - 1
        theirs = theirs.iloc[:-1]
    assert len(theirs) == len(closed)
    entry = pd.DatetimeIndex(theirs["EntryTime"]).tz_localize("UTC")
    exit_ = pd.DatetimeIndex(theirs["ExitTime"]).tz_localize("UTC")
    assert (pd.DatetimeIndex(closed["entry_time"]) == entry).all()
    assert (pd.DatetimeIndex(closed["exit_time"]) == exit_).all()
    np.testing.assert_array_equal(closed["quantity"].to_numpy(), theirs["Size"].to_numpy())
    np.testing.assert_allclose(closed["entry_price"], theirs["EntryPrice"], rtol=1e-12)
    np.testing.assert_allclose(closed["exit_price"], theirs["ExitPrice"], rtol=1e-12)
    np.testing.assert_allclose(closed["pnl"], theirs["PnL"], rtol=1e-6)
    np.testing.assert_allclose(ours.final_equity, stats["Equity Final [$]"], rtol=1e-6)


def test_sma_cross_matches_backtrader_fills_and_equity(spy, signal, ours) -> None:
    value, fills = _backtrader(spy, signal)
    mine = ours.fills
    assert len(fills) == len(mine) > 40
    np.testing.assert_array_equal(mine["quantity"].to_numpy(), [f[1] for f in fills])
    np.testing.assert_allclose(mine["price"], [f[2] for f in fills], rtol=1e-12)
    np.testing.assert_allclose(mine["commission"], [f[3] for f in fills], rtol=1e-9)
    days = pd.DatetimeIndex([f[0] for f in fills]).normalize().tz_localize("UTC")
    assert (pd.DatetimeIndex(mine["time"]).normalize() == days).all()
    np.testing.assert_allclose(ours.final_equity, value, rtol=1e-6)
