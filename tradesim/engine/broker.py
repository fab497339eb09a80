"""Broker: target weights -> orders, and orders -> fills against one bar (prices, caps, costs).

Quantities are decided at decision time from the last visible close (the next open is not yet
knowable). Market orders fill at the next bar's open (or the same bar's close when the run says
``fill="close"``); limit and stop orders and per-position stop-loss / take-profit trigger against
the bar's high/low with gap-through (a level gapped through fills at the open), and when a
stop-loss and a take-profit both sit inside one bar the adverse one (the stop) is assumed first.
The rules themselves (fill prices, the participation cap, costs) are the compiled account core's
(:mod:`tradesim.engine.core`), the same functions the fast path's kernel calls; this module keeps
the order book: order objects, their states and the order in which they fill.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from tradesim.contracts import Fill
from tradesim.engine.core import (
    KIND_LIMIT,
    KIND_MARKET,
    KIND_STOP,
    capped_qty,
    fill_charges,
    order_price,
    reduces,
)
from tradesim.errors import ConfigError, LedgerInvariantError

MARKET, LIMIT, STOP = "market", "limit", "stop"
_KIND_CODE = {MARKET: KIND_MARKET, LIMIT: KIND_LIMIT, STOP: KIND_STOP}
_PRICE_TOL = 1e-9


@dataclass(slots=True, eq=False)
class Order:
    """One order: signed quantity (+ buy, - sell), kind, trigger level, and what became of it.

    Orders compare by identity: two orders with equal fields are still two orders.
    """

    id: int
    time: np.datetime64  # when it was created (decision time)
    symbol: str
    col: int  # column of ``symbol`` in the engine's universe
    quantity: float
    kind: str = MARKET
    level: float = math.nan  # limit or stop price
    reason: str = "rebalance"
    status: str = "open"  # open | partial (filled in part: working or ended) | filled |
    # cancelled | replaced (a new weight for its symbol took its place)
    filled: float = 0.0
    fill_time: np.datetime64 | None = None
    target: float = math.nan  # shares the position is to hold when a target order is filled
    capped: bool = False  # the participation cap held it back in some bar (it kept working)

    @property
    def remaining(self) -> float:
        """Shares still to trade (the order works on until this is filled)."""
        return self.quantity - self.filled

    def __str__(self) -> str:
        lvl = "" if math.isnan(self.level) else f" @{self.level:g}"
        return (f"#{self.id} {self.kind} {self.symbol} {self.quantity:+g}{lvl} "
                f"({self.reason}, {self.status}, filled {self.filled:+g})")


def check_in_bar(price: float, high: float, low: float, *, symbol: str, time: object,
                 step: int, order: Order | None = None) -> None:
    """Raise unless ``price`` lies within the bar's low..high (the engine's fill guarantee)."""
    tol = _PRICE_TOL * max(abs(high), abs(low), 1.0)
    if not (low - tol <= price <= high + tol):
        raise LedgerInvariantError(
            f"fill for {symbol} at {price!r} lies outside the bar's low..high; if the bar itself "
            "is inconsistent (open/close outside low..high) repair the data (quality='repair')",
            step=step, time=time, numbers={"price": price, "low": low, "high": high},
            orders=[order] if order is not None else None)


class Broker:
    """Holds open orders of one account and turns them into fills bar by bar."""

    def __init__(self, *, symbols: tuple[str, ...], cp: np.ndarray, acct: np.ndarray,
                 bars_per_day: float = 1.0) -> None:
        self.symbols = symbols
        self._cp, self._acct = cp, acct  # the account core's cost and account rules
        self.open_orders: list[Order] = []
        self.closed: list[Order] = []  # filled, partial or cancelled, not yet taken by the session
        self.unreached: list[Order] = []  # capped targets cancelled before filled, not yet taken
        self.bars_per_day = bars_per_day  # for the impact: the cost model's, or the account
        # infers it from the bar spacing
        self._next_id = 1

    def create(self, *, time: np.datetime64, col: int, quantity: float, kind: str = MARKET,
               level: float = math.nan, reason: str = "rebalance",
               target: float = math.nan) -> Order:
        """Create and queue an order (it executes from the next bar processed)."""
        if kind not in (MARKET, LIMIT, STOP):
            raise ConfigError(f"unknown order kind {kind!r}; use market, limit or stop")
        if kind != MARKET and not (math.isfinite(level) and level > 0):
            raise ConfigError(f"{kind} order for {self.symbols[col]} needs a positive level, got {level!r}")
        order = Order(self._next_id, time, self.symbols[col], col, float(quantity), kind,
                      float(level), reason, target=float(target))
        self._next_id += 1
        self.open_orders.append(order)
        return order

    def cancel(self, order: Order, *, replaced: bool = False, report: bool = True) -> None:
        """Cancel an open order (a partially filled one keeps status ``partial``).

        ``replaced``: a new target for its symbol took its place (status ``replaced``). A target
        the participation cap held back that ends unreplaced (end of run, a halt) is kept in
        ``unreached`` for the account to report, unless ``report`` is off (a liquidation).
        """
        if order in self.open_orders:
            self.open_orders.remove(order)
            self.closed.append(order)
            if replaced:
                order.status = "replaced"
            elif order.status == "open":
                order.status = "cancelled"
            if report and not replaced and order.capped and not math.isnan(order.target):
                self.unreached.append(order)

    def cancel_all(self, *, col: int | None = None, kind: str | None = None,
                   report: bool = True) -> None:
        """Cancel open orders, optionally only one symbol's or one kind's."""
        for order in list(self.open_orders):
            if (col is None or order.col == col) and (kind is None or order.kind == kind):
                self.cancel(order, report=report)

    def execute(self, *, step: int, time: np.datetime64, ref: Sequence[float],
                high: Sequence[float], low: Sequence[float], volume: Sequence[float],
                kinds: tuple[str, ...] = (MARKET, LIMIT, STOP),
                used: dict[int, float] | None = None, held: Sequence[float] | None = None,
                afford: Callable[[int, float, float, float], float] | None = None
                ) -> Iterator[tuple[Order, Fill]]:
        """Fill open orders in this bar: market orders at ``ref`` (the open, or the close in
        close-fill mode), limit/stop orders by their trigger rules; yields (order, fill) pairs.

        The participation cap shrinks a fill to whole lots and the rest of the order **keeps
        working** (it stays open, status ``partial`` once something filled, and tries again on
        the next bar); ``used`` (shares traded per column in this bar so far) lets every fill of
        one bar share one cap. With ``held`` (positions) orders that only reduce a position go
        first, so a rotation frees cash before it spends it, then by symbol column (the fast
        path's order); ``afford(col, qty, price, volume)`` then shrinks what the account cannot
        pay for at the fill price and that order's rest is cancelled (the caller books each fill
        before the next is sized, so consume the pairs one by one).
        """
        cp, acct = self._cp, self._acct
        used = {} if used is None else used
        orders = list(self.open_orders)
        if held is not None:
            orders.sort(key=lambda o: (not reduces(o.quantity - o.filled, held[o.col]), o.col))
        for order in orders:
            j = order.col
            px_ref = ref[j]
            if math.isnan(px_ref) or order.kind not in kinds:
                continue  # no bar for this symbol now (NaN), or not this phase's business
            hi, lo = float(high[j]), float(low[j])
            price = order_price(_KIND_CODE[order.kind], order.quantity, order.level,
                                float(px_ref), hi, lo)
            if math.isnan(price):
                continue
            remaining = order.quantity - order.filled
            vol = float(volume[j])
            qty = capped_qty(remaining, vol, used.get(j, 0.0), cp, acct)
            working = qty != remaining  # the cap held part back: the rest stays open for later
            if working:
                order.capped = True
            if afford is not None and qty != 0.0:
                allowed = afford(j, qty, price, vol)
                if allowed != qty:  # not affordable at the fill price: the rest is cancelled
                    qty, working = allowed, False
            used[j] = used.get(j, 0.0) + abs(qty)
            if not working:
                self.open_orders.remove(order)
                self.closed.append(order)
            if qty == 0.0:
                if not working and order.status == "open":
                    order.status = "cancelled"
                continue
            check_in_bar(price, hi, lo, symbol=order.symbol, time=time, step=step, order=order)
            order.filled += qty
            order.fill_time = time
            order.status = "filled" if qty == remaining else "partial"
            yield order, self.make_fill(time=time, col=j, quantity=qty, price=price, volume=vol,
                                        reason=order.kind
                                        if order.reason == "rebalance" and order.kind != MARKET
                                        else order.reason)

    def make_fill(self, *, time: np.datetime64, col: int, quantity: float, price: float,
                  volume: float, reason: str) -> Fill:
        """A fill with its costs from the cost model."""
        c, s, sl = fill_charges(quantity, price, volume, self.bars_per_day, self._cp)
        return Fill(time=time, symbol=self.symbols[col], quantity=float(quantity), price=float(price),
                    commission=c, spread_cost=s, slippage_cost=sl, reason=reason)
