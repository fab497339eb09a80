"""The event loop's bookkeeping: journal JSON, recorder rows and chunks, ledger invariants, array
and list bar rows, and round trips against a FIFO lot-matching oracle."""

from __future__ import annotations

import json
import math
from collections import deque

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradesim.contracts import Decision, Fill
from tradesim.engine.account import Account, AccountConfig
from tradesim.engine.costs import load_costs
from tradesim.engine.ledger import Ledger
from tradesim.engine.record import Recorder, _frame, _json, json_rows
from tradesim.errors import LedgerInvariantError

_price = st.floats(0.01, 1e4, allow_nan=False)
_level = st.one_of(st.just(math.nan), _price)
_settings = settings(max_examples=150, deadline=None)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@given(mapping=st.dictionaries(st.text(max_size=4), st.one_of(
    st.floats(), st.integers(-10, 10), st.booleans(), st.text(max_size=3)), max_size=5))
def test_journal_json_equals_json_dumps(mapping) -> None:
    expected = "{}" if not mapping else json.dumps(
        {k: float(v) if isinstance(v, (int, float)) else str(v) for k, v in mapping.items()},
        sort_keys=True)
    assert _json(mapping) == expected


def test_recorder_rows_equal_per_step_arithmetic() -> None:
    clock = np.arange(4).astype("datetime64[ns]")
    rec = Recorder(clock=clock, symbols=("A", "B"))
    rows = [(100.0, 50.0, 60.0, 40.0, 1.0, [1.0, -2.0], [30.0, math.nan]),
            (-5.0, 10.0, 0.0, 0.0, 1.5, [0.0, 0.0], [31.0, 7.0]),
            (90.0, 90.0, 0.0, 0.0, 4.0, [0.0, 3.0], [32.0, 8.0])]
    for i, (eq, cash, gross, net, costs, pos, marks) in enumerate(rows):
        rec.row(step=i, time=clock[i], equity=eq, cash=cash, gross=gross, net=net,
                costs_total=costs, positions=pos, marks=marks)
    result = rec.build(config={}, fingerprints={}, fill_mode="next_open", benchmark=None,
                       initial_cash=100.0, meta={})
    assert result.equity["costs"].tolist() == [1.0, 0.5, 2.5]
    assert result.equity["gross_exposure"].tolist() == [0.6, 0.0, 0.0]
    # a NaN mark (no price yet) shows as weight 0; equity <= 0 scales everything to 0
    np.testing.assert_array_equal(result.weights.to_numpy(), [[0.3, 0.0], [0.0, 0.0],
                                                              [0.0, 24 / 90]])


@pytest.mark.parametrize("chunk", [1, 2, 1000])
def test_recorder_chunks_and_spool_build_the_same_result(chunk: int, tmp_path) -> None:
    """Packing every 1 or 2 steps (in memory or spooled to Parquet parts) equals one chunk."""
    clock = np.arange(5).astype("datetime64[ns]")

    def fill(rec: Recorder) -> pd.DataFrame:
        for i in range(5):
            rec.row(step=i, time=clock[i], equity=100.0 + i, cash=50.0, gross=10.0 * i,
                    net=5.0, costs_total=0.1 * i, positions=[1.0, 0.0], marks=[10.0 + i, 3.0],
                    reward=0.01 * i)
            rec.decision(step=i, time=clock[i], decision=Decision(weights={"A": 0.1 * i}))
        built = rec.build(config={}, fingerprints={}, fill_mode="next_open", benchmark=None,
                          initial_cash=100.0, meta={})
        return pd.concat([built.equity, built.weights, built.rewards], axis=1), built.decisions

    whole = fill(Recorder(clock=clock, symbols=("A", "B")))
    for rec in (Recorder(clock=clock, symbols=("A", "B"), chunk=chunk),
                Recorder(clock=clock, symbols=("A", "B"), chunk=chunk, spool=tmp_path / "s")):
        got = fill(rec)
        pd.testing.assert_frame_equal(got[0], whole[0])
        pd.testing.assert_frame_equal(got[1], whole[1])
    assert chunk > 5 or len(list((tmp_path / "s").glob("book-*.parquet"))) >= 5 // chunk


def test_ledger_check_still_raises_with_the_numbers() -> None:
    led = Ledger(symbols=("A",), initial_cash=1000.0)
    led.begin_step()
    fill = Fill(time=np.datetime64("2021-01-04", "ns"), symbol="A", quantity=2.0, price=10.0,
                commission=0.5, spread_cost=0.0, slippage_cost=0.0)
    led.apply(fill, 0)
    led.mark([10.0])
    assert led.check(step=0, time=None, fills=[(0, fill)], liquidated=False) == pytest.approx(999.5)
    led.begin_step()
    led.cash += 1.0  # money from nowhere
    with pytest.raises(LedgerInvariantError, match="cash conservation") as err:
        led.check(step=1, time=None, fills=[], liquidated=False)
    assert err.value.numbers["cash_after"] == pytest.approx(980.5)
    led.begin_step()
    led.shares[0] = 3.0  # shares from nowhere
    with pytest.raises(LedgerInvariantError, match="position conservation"):
        led.check(step=2, time=None, fills=[], liquidated=False)


def test_engine_accepts_array_rows_and_list_rows_alike() -> None:
    rows = pd.DataFrame({"o": [10.0, 11.0, 12.0], "h": [11.0, 12.0, 13.0],
                         "l": [9.0, 10.0, 11.0], "c": [10.5, 11.5, 12.5]})
    equities = []
    for as_array in (True, False):
        e = Account(symbols=("A",), config=AccountConfig(initial_cash=1000.0,
                                                          costs=load_costs("default")))
        for i, r in rows.iterrows():
            vals = [[r.o], [r.h], [r.l], [r.c], [1e4]]
            if as_array:
                vals = [np.array(v) for v in vals]
            e.open_step(step=int(i), time=np.datetime64("2021-01-04", "ns") + int(i),
                        open=vals[0], high=vals[1], low=vals[2], close=vals[3], volume=vals[4])
            if i == 0:
                e.rebalance(weights=np.array([0.5]) if as_array else [0.5])
            equities.append(e.close_step())
    assert equities[:3] == equities[3:] and len({*equities}) > 1


def _reference_round_trips(fills: list[tuple[int, int, Fill]]) -> list[dict]:
    """The per-fill FIFO lot matching the vectorised round trips replaced (kept as the oracle)."""
    lots: dict[str, deque] = {}
    out: list[dict] = []
    for step, _, f in fills:
        book = lots.setdefault(f.symbol, deque())
        qty = f.quantity
        cost_per_share = f.cost / abs(qty)
        while qty and book and (book[0][0] > 0) != (qty > 0):
            lot = book[0]
            closed = min(abs(qty), abs(lot[0]))
            signed = math.copysign(closed, lot[0])
            gross = signed * (f.price - lot[1])
            costs = closed * (lot[4] + cost_per_share)
            out.append({"symbol": f.symbol, "entry_time": lot[2], "exit_time": f.time,
                        "quantity": signed, "entry_price": lot[1], "exit_price": f.price,
                        "gross_pnl": gross, "costs": costs, "pnl": gross - costs,
                        "return": (gross - costs) / (closed * lot[1]), "bars_held": step - lot[3],
                        "exit_reason": f.reason})
            lot[0] -= signed
            qty += signed
            if abs(lot[0]) < 1e-12:
                book.popleft()
        if abs(qty) > 1e-12:
            book.append([qty, f.price, f.time, step, cost_per_share])
    return out


_fill_rows = st.lists(st.tuples(
    st.sampled_from("ABC"), st.integers(-40, 40).filter(bool), st.floats(1.0, 500.0),
    st.floats(0.0, 5.0), st.floats(0.0, 1.0), st.sampled_from(["rebalance", "liquidation"]),
    st.integers(0, 2)), max_size=60)


def _trades(rows: list[tuple], divisor: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(vectorised, reference) trades tables of fills built from ``rows`` (steps advance by the
    last field; quantities are the integers divided by ``divisor``)."""
    clock = np.datetime64("2021-01-04", "ns") + np.arange(200) * np.timedelta64(1, "h")
    fills, step = [], 0
    for k, (sym, q, price, comm, slip, reason, advance) in enumerate(rows):
        step += advance
        fills.append((step, k + 1, Fill(time=clock[step], symbol=sym, quantity=q / divisor,
                                        price=price, commission=comm, spread_cost=0.0,
                                        slippage_cost=slip, reason=reason)))
    rec = Recorder(clock=clock, symbols=("A", "B", "C"))
    rec.take(fills, [], [])
    built = rec.build(config={}, fingerprints={}, fill_mode="next_open", benchmark=None,
                      initial_cash=1e6, meta={})
    return built.trades, _frame("trades", _reference_round_trips(fills))


@settings(max_examples=120, deadline=None)
@given(rows=_fill_rows, divisor=st.sampled_from([1.0, 4.0]))
def test_vectorised_round_trips_equal_fifo_lot_matching(rows, divisor) -> None:
    trades, expected = _trades(rows, divisor)
    pd.testing.assert_frame_equal(trades, expected, check_exact=True)


@settings(max_examples=60, deadline=None)
@given(rows=_fill_rows)
def test_round_trips_of_fractional_shares_agree_up_to_rounding_remainders(rows) -> None:
    """Inexact share counts: the same trades to 1e-9, except that the per-fill matcher also
    closed rounding remainders (|quantity| ~ 1e-17) as trades of their own."""
    trades, expected = _trades(rows, 1000.0 / 7.0)
    expected = expected[expected["quantity"].abs() > 1e-9].reset_index(drop=True)
    pd.testing.assert_frame_equal(trades, expected, rtol=1e-9, atol=1e-12)


def test_round_trips_close_lots_first_in_first_out_across_a_flip() -> None:
    trades, _ = _trades([("A", 10, 100.0, 0.0, 0.0, "rebalance", 0),
                         ("A", 5, 110.0, 0.0, 0.0, "rebalance", 1),
                         ("A", -12, 120.0, 0.0, 0.0, "rebalance", 1),
                         ("A", -8, 90.0, 0.0, 0.0, "liquidation", 1),
                         ("A", 5, 80.0, 0.0, 0.0, "rebalance", 1)], 1.0)
    assert trades["quantity"].tolist() == [10.0, 2.0, 3.0, -5.0]
    assert trades["entry_price"].tolist() == [100.0, 110.0, 110.0, 90.0]
    assert trades["gross_pnl"].tolist() == [200.0, 20.0, -60.0, 50.0]
    assert trades["bars_held"].tolist() == [2, 1, 2, 1]
    assert trades["exit_reason"].tolist() == ["rebalance", "rebalance", "liquidation", "rebalance"]


@given(w=st.lists(st.lists(st.one_of(st.floats(width=64), st.just(math.nan)), min_size=3,
                           max_size=3), max_size=6))
def test_json_rows_equal_the_journal_json_of_each_row(w) -> None:
    symbols = ("b", "A", "a\"")
    weights = np.array(w, dtype=np.float64).reshape(len(w), 3)
    expected = [_json({s: v for s, v in zip(symbols, row) if not math.isnan(v)})
                for row in weights.tolist()]
    assert json_rows(weights=weights, symbols=symbols) == expected
