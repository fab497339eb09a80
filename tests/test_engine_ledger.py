"""Property tests of broker + ledger driven through the engine's step function with explicit orders."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradesim.engine.costs import CostModel, load_costs
from tradesim.engine.account import Account, AccountConfig

SYMS = ("AAA", "BBB")


@st.composite
def market(draw, n_min: int = 3, n_max: int = 25):
    """Valid OHLCV bars for two symbols (some bars missing) and random orders per step."""
    n = draw(st.integers(n_min, n_max))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.03, (n, 2)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.02, (n, 2)))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.03, (n, 2)))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.03, (n, 2)))
    volume = rng.uniform(1e3, 1e5, (n, 2))
    missing = rng.uniform(size=(n, 2)) < 0.1
    for a in (open_, high, low, close, volume):
        a[missing] = np.nan
    orders = []
    for _ in range(n):
        k = int(rng.integers(0, 3))
        orders.append([(SYMS[int(rng.integers(0, 2))], float(rng.integers(-80, 81)),
                        str(rng.choice(["market", "limit", "stop"])),
                        float(50 * np.exp(rng.normal(0, 0.1)))) for _ in range(k)])
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume,
            "orders": orders}


def _drive(m: dict, *, costs: CostModel, sign: float = 1.0, mirror: float | None = None,
           maintenance_margin: float = 0.0) -> tuple[Account, list[float], list[tuple]]:
    """Run the engine step by step, submitting the drawn orders (negated and on mirrored prices
    around ``mirror`` when given); returns the engine, equity per step and (fill, bar) pairs."""
    o, h, lo, c, v = m["open"], m["high"], m["low"], m["close"], m["volume"]
    if mirror is not None:
        o, h, lo, c = 2 * mirror - o, 2 * mirror - lo, 2 * mirror - h, 2 * mirror - c
    engine = Account(symbols=SYMS, config=AccountConfig(
        initial_cash=100_000.0, costs=costs, allow_short=True, max_leverage=10.0,
        maintenance_margin=maintenance_margin))
    equity, checked = [], []
    for i in range(len(c)):
        t = np.datetime64("2020-01-01", "ns") + np.timedelta64(i, "D")
        before = len(engine.fills)
        engine.open_step(step=i, time=t, open=o[i], high=h[i], low=lo[i], close=c[i], volume=v[i])
        for _, _, f in engine.fills[before:]:
            j = SYMS.index(f.symbol)
            checked.append((f, lo[i, j], h[i, j]))
        for sym, qty, kind, level in m["orders"][i]:
            lvl = level if mirror is None else 2 * mirror - level
            engine.submit(symbol=sym, quantity=sign * qty, kind=kind,
                          level=lvl if kind != "market" else float("nan"))
        equity.append(engine.close_step())
    return engine, equity, checked


_SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(m=market())
def test_invariants_hold_and_fills_stay_in_bar(m) -> None:
    # close_step raises LedgerInvariantError on any broken invariant; margin calls are on
    engine, equity, checked = _drive(m, costs=load_costs("default"), maintenance_margin=0.25)
    for fill, low, high in checked:
        assert low - 1e-9 <= fill.price <= high + 1e-9
    led = engine.ledger
    assert np.isclose(equity[-1], led.cash + np.nansum(led.position * led.marks))


@_SETTINGS
@given(m=market())
def test_costs_never_increase_equity(m) -> None:
    costly = CostModel(commission_fixed=1.0, commission_bps=5, half_spread_bps=3, slippage_bps=2,
                       impact_y=2.0, borrow_bps_annual=200)
    _, free, _ = _drive(m, costs=CostModel())
    _, paid, _ = _drive(m, costs=costly)
    assert all(p <= f + 1e-9 for p, f in zip(paid, free))


@_SETTINGS
@given(m=market())
def test_mirrored_prices_and_flipped_orders_give_the_same_pnl(m) -> None:
    level = 2 * float(np.nanmax(m["high"]))  # keeps mirrored prices positive
    _, up, _ = _drive(m, costs=CostModel())
    _, down, _ = _drive(m, costs=CostModel(), sign=-1.0, mirror=level)
    np.testing.assert_allclose(down, up, rtol=1e-9, atol=1e-6)
