"""Isolated agents decide exactly as in-process ones, and the look-ahead check finds them clean."""

from __future__ import annotations

import pandas as pd
import pytest

from tradesim.agents.isolation import IsolatedAgent, bwrap_status
from tradesim.agents.registry import load_agent
from tradesim.contracts import Observation, Portfolio
from tradesim.data.bars import Bars, News
from tradesim.data.load import load_market
from tradesim.data.view import MarketData, PointInTimeView
from tradesim.engine.backtest import BacktestConfig, simulate
from tradesim.evaluate.backtest import run_backtest
from tradesim.evaluate.lookahead import check_lookahead

BASELINES = ("buy_and_hold", "equal_weight", "sma_cross", "macd", "dual_thrust", "momentum")
CONFIG = BacktestConfig.build(symbols=("ALPHA", "BRAVO"), start="2018-03-01", end="2018-08-31",
                              allow_short=True, max_leverage=2.0)
SANDBOXES = ["process", pytest.param("bwrap", marks=pytest.mark.skipif(
    not bwrap_status()[0], reason=f"bubblewrap unavailable here: {bwrap_status()[1]}"))]


@pytest.fixture(scope="module")
def market() -> MarketData:
    return load_market(symbols=["ALPHA", "BRAVO"], source="sample", end="2018-08-31")


def _journal(result) -> pd.DataFrame:
    return result.decisions[["step", "weights", "stop_loss", "take_profit"]]


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_isolated_baselines_decide_as_in_process(sandbox: str, market) -> None:
    for name in BASELINES:
        plain = simulate(config=CONFIG, agent=load_agent(name), data=market)
        iso = simulate(config=CONFIG, agent=IsolatedAgent(load_agent(name), sandbox=sandbox),
                       data=market)
        pd.testing.assert_frame_equal(_journal(plain), _journal(iso))
        assert iso.meta["isolation"] == sandbox


@pytest.mark.parametrize("name", BASELINES)
def test_isolated_baselines_pass_the_look_ahead_check(name: str, market) -> None:
    assert check_lookahead(make_agent=lambda: load_agent(name), data=market, config=CONFIG,
                           twins=1, isolate=True, processes=False) == []


def _window(market: MarketData, first: int, last: int) -> Observation:
    """An Observation whose view holds rows first..last-1 only, as a live feed's polled window."""
    b = market.full("ALPHA")
    rows = Bars.from_arrays(symbol="ALPHA", interval=b.interval, adjusted=b.adjusted,
                            source=b.source, time=b.time[first:last], open=b.open[first:last],
                            high=b.high[first:last], low=b.low[first:last],
                            close=b.close[first:last], volume=b.volume[first:last])
    t = b.time[last - 1]
    view = PointInTimeView(t, {"ALPHA": rows}, {"ALPHA": last - first}, News.empty(), 0)
    return Observation(time=t, step=last, universe=("ALPHA",), market=view,
                       portfolio=Portfolio(cash=1.0, positions={}, prices={}, equity=1.0))


def test_a_sliding_window_view_sends_each_new_bar_once(market) -> None:
    """A live feed's view is the last N bars, not a growing prefix: each decision must still
    send exactly the rows after the last one sent (none twice, none missed)."""
    iso = IsolatedAgent(load_agent("sma_cross"), sandbox="process")
    first = iso._encode(_window(market, 0, 30))["bars"]["ALPHA"]
    assert len(first[4]) == 30
    times = market.full("ALPHA").time
    for k in range(31, 35):  # the window slides: its length stays 30
        sent = iso._encode(_window(market, k - 30, k))["bars"]["ALPHA"]
        assert list(sent[4]) == [times[k - 1]]
    assert "ALPHA" not in iso._encode(_window(market, 4, 34))["bars"]  # nothing new: nothing
    jump = iso._encode(_window(market, 10, 40))["bars"]["ALPHA"]  # six bars at once
    assert list(jump[4]) == list(times[34:40])


def test_backtest_isolate_records_the_mode_and_matches_in_process(market) -> None:
    cfg = CONFIG.model_copy(update={"agent": "macd"})
    plain = run_backtest(config=cfg, data=market)
    iso = run_backtest(config=cfg, data=market, isolate=True, sandbox="process")
    assert plain.meta["isolation"] == "in-process" and iso.meta["isolation"] == "process"
    pd.testing.assert_frame_equal(_journal(plain), _journal(iso))
