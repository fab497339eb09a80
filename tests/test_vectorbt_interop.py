"""vectorbt interop: a run converted to a vectorbt Portfolio from our own fills keeps its value,
and a vectorbt indicator inside an agent sees only the point-in-time history.

Runs use the embedded sample (offline). Equality is checked at every bar, not only the last.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradesim.contracts import BaseAgent, Decision, Observation, Portfolio
from tradesim.data.load import load_market
from tradesim.data.view import MarketData
from tradesim.engine.backtest import BacktestConfig
from tradesim.engine.record import RunResult
from tradesim.evaluate.backtest import run_backtest
from tradesim.evaluate.lookahead import check_lookahead

vbt = pytest.importorskip("vectorbt")

from tradesim.interop import vectorbt as iv  # noqa: E402  (after the skip: needs vectorbt)

RTOL = 1e-9  # measured gaps are ~1e-15; the converter's own default check is 1e-6
WINDOW = dict(start="2015-01-01", end="2016-06-30")


def _run(**fields: object) -> RunResult:
    return run_backtest(config=BacktestConfig.build(**{**WINDOW, **fields}))


RUNS = {
    "sma_cross-one": dict(agent="sma_cross", symbols=("ALPHA",)),
    "equal_weight-three": dict(agent="equal_weight", symbols=("ALPHA", "BRAVO", "CHARLIE")),
    "macd-two-zero-costs": dict(agent="macd", symbols=("ALPHA", "BRAVO"), costs="zero"),
    "sma_cross-short-borrow": dict(agent="sma_cross", symbols=("ALPHA", "BRAVO", "CHARLIE"),
                                   agent_params={"allow_short": True}, allow_short=True),
}


@pytest.fixture(scope="module")
def runs() -> dict[str, RunResult]:
    return {name: _run(**fields) for name, fields in RUNS.items()}


def _exit_bars(run: RunResult) -> int:
    """Our closed trades counted by (symbol, exit bar): one vectorbt exit trade each."""
    return run.trades.groupby(["symbol", "exit_time"]).ngroups


def _exits_close_whole_positions(run: RunResult) -> bool:
    """Every fill that reduces a position closes it (or reverses it): then our FIFO lots and
    vectorbt's average-price exit trades realise the same P&L."""
    for _, f in run.fills.groupby("symbol"):
        q = f["quantity"].to_numpy()
        before = np.r_[0.0, np.cumsum(q)[:-1]]
        reduces = (before != 0) & (np.sign(q) != np.sign(before))
        if (reduces & (np.abs(q) < np.abs(before) - 1e-9)).any():
            return False
    return True


@pytest.mark.parametrize("name", list(RUNS))
@pytest.mark.parametrize("method", ["orders", "records"])
def test_value_equals_our_equity_at_every_bar(runs: dict[str, RunResult], name: str,
                                              method: str) -> None:
    run = runs[name]
    pf = iv.to_vectorbt(run, method=method)
    assert len(run.fills) > 0
    assert iv.value_gap(run, pf) <= RTOL
    assert float(pf.final_value()) == pytest.approx(run.final_equity, rel=RTOL)
    assert float(pf.init_cash) == run.config["initial_cash"]
    assert iv.symbols_of(pf) == list(run.weights.columns)


@pytest.mark.parametrize("name", list(RUNS))
def test_every_fill_becomes_one_vectorbt_order_at_our_price(runs: dict[str, RunResult],
                                                            name: str) -> None:
    run = runs[name]
    pf = iv.to_vectorbt(run, method="orders")
    orders = pf.orders.records_readable
    orders = orders[orders["Column"] != iv.CHARGES]
    assert run.fills.groupby(["step", "symbol"]).ngroups == len(run.fills)  # no netting here
    assert len(orders) == len(run.fills)
    ours = run.fills.sort_values(["time", "symbol"])
    theirs = orders.sort_values(["Timestamp", "Column"])
    np.testing.assert_allclose(theirs["Price"].to_numpy(), ours["price"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(theirs["Size"].to_numpy(), ours["quantity"].abs().to_numpy(),
                               rtol=1e-12)
    costs = ours["commission"] + ours["spread_cost"] + ours["slippage_cost"]
    np.testing.assert_allclose(theirs["Fees"].to_numpy(), costs.to_numpy(), rtol=1e-9,
                               atol=1e-9)


@pytest.mark.parametrize("name", list(RUNS))
def test_trade_count_and_closed_pnl_match(runs: dict[str, RunResult], name: str) -> None:
    run = runs[name]
    pf = iv.to_vectorbt(run)
    closed = pf.trades.closed
    assert int(closed.count()) == _exit_bars(run)
    if not _exits_close_whole_positions(run):  # partial exits: FIFO and average cost differ
        assert name != "sma_cross-one"
        return
    assert float(closed.pnl.sum()) == pytest.approx(float(run.trades["pnl"].sum()), rel=1e-9,
                                                    abs=1e-6)


def test_single_symbol_all_in_all_out_has_the_same_trades(runs: dict[str, RunResult]) -> None:
    run = runs["sma_cross-one"]
    trades = iv.to_vectorbt(run).trades.closed.records_readable
    assert len(trades) == len(run.trades) > 0
    np.testing.assert_allclose(trades["PnL"].to_numpy(), run.trades["pnl"].to_numpy(), rtol=1e-9)


def test_borrow_fees_ride_in_the_charges_column(runs: dict[str, RunResult]) -> None:
    run = runs["sma_cross-short-borrow"]
    assert (run.fills["quantity"] < 0).any()
    fill_costs = float((run.fills["commission"] + run.fills["spread_cost"]
                        + run.fills["slippage_cost"]).sum())
    borrow = float(run.equity["costs"].sum()) - fill_costs
    assert borrow > 1.0  # the default cost model charges 50 bps a year on short value
    pf = iv.to_vectorbt(run)
    assert list(pf.wrapper.columns)[-1] == iv.CHARGES
    charges_pnl = float(pf.total_profit(group_by=False)[iv.CHARGES])
    assert charges_pnl == pytest.approx(-borrow, rel=1e-9)
    # vectorbt's analytics stay about the symbols: fees are our fill costs, and the benchmark
    # is buy-and-hold of the symbols alone (the charges column is no asset)
    assert float(pf.orders.fees.sum()) == pytest.approx(fill_costs, rel=1e-9)
    close = iv.run_closes(run)
    hold = float((close.iloc[-1] / close.iloc[0]).mean() - 1.0)
    assert float(pf.total_benchmark_return()) == pytest.approx(hold, rel=1e-9)


def test_a_run_without_borrow_has_no_charges_column(runs: dict[str, RunResult]) -> None:
    assert iv.CHARGES not in iv.to_vectorbt(runs["macd-two-zero-costs"]).wrapper.columns


def test_no_fills_keeps_the_initial_cash() -> None:
    run = _run(agent="buy_and_hold", symbols=("ALPHA",), start="2019-12-31", end="2019-12-31")
    assert len(run.fills) == 0
    pf = iv.to_vectorbt(run)
    assert int(pf.orders.count()) == 0
    assert float(pf.final_value()) == run.final_equity == run.config["initial_cash"]


def test_converts_a_saved_run_folder(runs: dict[str, RunResult], tmp_path: Path) -> None:
    run = runs["equal_weight-three"]
    folder = run.save(tmp_path / "run")
    pf = iv.to_vectorbt(folder)
    assert float(pf.final_value()) == pytest.approx(run.final_equity, rel=RTOL)


def test_wrong_closes_are_caught_by_the_value_check(runs: dict[str, RunResult]) -> None:
    run = runs["sma_cross-one"]
    close = iv.run_closes(run) * 1.05
    with pytest.raises(iv.VectorbtInteropError, match="differs from the run's equity"):
        iv.to_vectorbt(run, close=close)


class _Levered(BaseAgent):
    """Holds 150% of equity in ALPHA (cash goes negative) and pays a fee per decision."""

    name = "levered"

    def decide(self, obs: Observation) -> Decision:
        return Decision(weights={"ALPHA": 1.5}, expense=2.5, rationale="lever")


def test_leverage_and_expenses_convert_as_records() -> None:
    """Cash below zero: vectorbt's simulator refuses it, so ``auto`` writes order records; the
    ``Decision.expense`` charges ride in the charges column and the value still matches."""
    config = BacktestConfig.build(symbols=("ALPHA",), max_leverage=2.0, costs="zero",
                                  start="2016-01-01", end="2016-03-31")
    run = run_backtest(config=config, agent=_Levered())
    assert float(run.equity["cash"].min()) < 0
    pf = iv.to_vectorbt(run)
    assert iv.value_gap(run, pf) <= RTOL
    assert float(pf.total_profit(group_by=False)[iv.CHARGES]) == pytest.approx(
        -2.5 * len(run.decisions), rel=1e-9)
    with pytest.raises(iv.VectorbtInteropError, match="method='records'"):
        iv.to_vectorbt(run, method="orders")


def test_missing_vectorbt_raises_naming_pip_install_monkeypatched_import(
        runs: dict[str, RunResult], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vectorbt", None)  # `import vectorbt` now raises ImportError
    with pytest.raises(iv.VectorbtInteropError, match="pip install vectorbt"):
        iv.to_vectorbt(runs["sma_cross-one"])
    with pytest.raises(iv.VectorbtInteropError, match="pip install vectorbt"):
        iv.VbtRsiAgent()


def test_engine_registry_and_cli_do_not_import_vectorbt() -> None:
    code = ("import sys, tradesim, tradesim.engine.backtest, tradesim.evaluate.backtest, "
            "tradesim.agents.registry as r, tradesim.cli\n"
            "assert 'vectorbt' not in sys.modules, 'vectorbt imported'\n"
            "assert not any('interop' in str(v) for v in r.BUILTINS.values())\n"
            "assert 'vectorbt' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- indicators inside agents ------------------------------------------------------------------


@pytest.fixture(scope="module")
def market() -> MarketData:
    return load_market(symbols=["ALPHA", "BRAVO"], source="sample", end="2018-08-31")


def test_indicator_sees_only_bars_up_to_decision_time(market: MarketData) -> None:
    full = market.full("ALPHA")
    t = full.time[400]
    obs = Observation(time=t, step=0, universe=("ALPHA",), market=market.as_of(t),
                      portfolio=Portfolio(cash=1.0, positions={}, prices={}, equity=1.0))
    rsi = iv.vbt_indicator(obs, "ALPHA", "RSI", window=14).rsi
    assert rsi.index[-1] == pd.Timestamp(t, tz="UTC") and len(rsi) == 401
    whole = vbt.RSI.run(pd.Series(np.array(full.close)), window=14).rsi.to_numpy()
    np.testing.assert_allclose(rsi.to_numpy()[14:], whole[14:401], rtol=1e-12)
    bands = iv.vbt_indicator(obs, "ALPHA", "BBANDS", lookback=30, window=20)
    assert iv.last_value(bands.lower) < iv.last_value(bands.middle) < iv.last_value(bands.upper)
    atr = iv.vbt_indicator(obs, "ALPHA", "ATR", lookback=30, window=14)  # high, low, close
    assert iv.last_value(atr.atr) > 0


RSI_CONFIG = dict(agent="tradesim.interop.vectorbt:VbtRsiAgent", symbols=("ALPHA", "BRAVO"),
                  start="2018-03-01", end="2018-08-31", agent_params={"window": 10})


def test_rsi_agent_runs_by_module_class_and_converts(market: MarketData) -> None:
    run = run_backtest(config=BacktestConfig.build(**RSI_CONFIG), data=market)
    assert run.meta["agent_class"] == "tradesim.interop.vectorbt:VbtRsiAgent"
    assert run.config["agent_params"] == {"window": 10, "lower": 30.0, "upper": 70.0,
                                          "allow_short": False}
    assert len(run.fills) > 0
    assert iv.value_gap(run, iv.to_vectorbt(run)) <= RTOL


def test_rsi_agent_passes_the_lookahead_check(market: MarketData) -> None:
    config = BacktestConfig.build(**RSI_CONFIG)
    assert check_lookahead(make_agent=lambda: iv.VbtRsiAgent(window=10), data=market,
                           config=config, twins=1) == []
