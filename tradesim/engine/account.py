"""One account: broker + ledger stepping through bars, whatever drives the clock.

:class:`Account` is fed one bar row at a time (``open_step``), takes target weights
(``rebalance``) and closes the step (``close_step``, which checks the ledger invariants). The
session (:mod:`tradesim.engine.session`) drives it from a historical or a live clock. What an
account produced in a step (fills, closed orders, events) is taken by the session with
:meth:`Account.take_records`, so a long run holds no history here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tradesim.contracts import Fill
from tradesim.engine.broker import LIMIT, MARKET, STOP, Broker, Order, check_in_bar
from tradesim.engine.core import (
    EXIT_STOP,
    account_arrays,
    affordable,
    bars_per_day,
    borrow_fee,
    capped_qty,
    exit_fill,
    margin_breached,
    margin_state,
    size_targets,
)
from tradesim.engine.costs import CostModel, load_costs
from tradesim.engine.ledger import Ledger
from tradesim.errors import LedgerInvariantError


class AccountConfig(BaseModel):
    """The account's rules (cash, costs, fills, lots, shorting, leverage, margin), declared once:
    backtests, the fast path and paper sessions read them from here."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    costs: CostModel = Field(default_factory=lambda: load_costs("default"))
    initial_cash: float = Field(100_000.0, gt=0)
    fill: Literal["next_open", "close"] = "next_open"
    lot_size: float = Field(1.0, gt=0)
    fractional: bool = False
    allow_short: bool = False
    max_leverage: float = Field(1.0, gt=0)
    maintenance_margin: float = Field(0.25, ge=0, lt=1)

    @field_validator("costs", mode="before")
    @classmethod
    def _costs(cls, value: Any) -> CostModel:
        return load_costs(value)


class Account:
    """Broker + ledger of one account; processes one bar per step, whatever drives the clock.

    Bar rows (one value per symbol, NaN = no bar) may be lists or arrays; the book is kept in
    plain Python floats (a bar of a flat or long-only book needs no arithmetic beyond marks), and
    every rule (sizing, costs, the participation cap, what the account can afford, borrow fee,
    margin, exits) is a call into the compiled account core (:mod:`tradesim.engine.core`), the
    one the fast path and the RL env run. ``stop_loss`` / ``take_profit`` hold one level per
    symbol (NaN = none).
    """

    def __init__(self, *, symbols: tuple[str, ...], config: AccountConfig) -> None:
        self.symbols = tuple(symbols)
        self.costs, self.fill = config.costs, config.fill
        self.lot_size, self.fractional = config.lot_size, config.fractional
        self.allow_short, self.max_leverage = config.allow_short, config.max_leverage
        self.maintenance_margin = config.maintenance_margin
        self._cp, self._acct = account_arrays(config)
        self.ledger = Ledger(symbols=self.symbols, initial_cash=config.initial_cash)
        self.broker = Broker(symbols=self.symbols, cp=self._cp, acct=self._acct,
                             bars_per_day=config.costs.bars_per_day or 1.0)
        n = len(self.symbols)
        self.stop_loss: list[float] = [math.nan] * n
        self.take_profit: list[float] = [math.nan] * n
        self.fills: list[tuple[int, int, Fill]] = []  # (step, order id or 0, fill), not yet taken
        self.events: list[dict] = []  # liquidations, ruin: not yet taken
        self._used: dict[int, float] = {}  # shares traded per column in the current bar
        self.ruined = False
        self._open_kinds = (MARKET, LIMIT, STOP) if self.fill == "next_open" else (LIMIT, STOP)
        self._armed = 0  # symbols with a stop-loss or take-profit level set
        self._step_fills: list[tuple[int, Fill]] = []
        self._step_orders: list[Order] = []
        self._liquidated = False
        self._bar: tuple[Any, ...] = ()  # (step, time, open, high, low, close, volume) of this bar
        self._last_ns: int | None = None  # the previous bar's time (integer ns)
        self._gap = math.inf  # smallest spacing between bars seen (ns): bars per day for impact
        self._close_done = False  # market orders were worked at this bar's close (fill="close")
        # this fill phase's prices (open or close) and marks, as the core's arrays: fixed while
        # the phase's orders fill, so built once per phase rather than per fill
        self._ref = self._ref_marks = np.zeros(0)

    # --- one step ---------------------------------------------------------------------------

    def open_step(self, *, step: int, time: np.datetime64, open: Sequence[float],
                  high: Sequence[float], low: Sequence[float], close: Sequence[float],
                  volume: Sequence[float]) -> None:
        """Bar ``step`` happened: borrow fee, margin at the open, pending orders, stops, close mark.

        NaN entries mean the symbol has no bar at this time (its orders wait, its mark stays).
        """
        if isinstance(open, np.ndarray):
            open, high, low, close, volume = (np.asarray(a, dtype=np.float64).tolist()
                                              for a in (open, high, low, close, volume))
        self._open(step, time, open, high, low, close, volume,
                   int(time.astype("datetime64[ns]").astype(np.int64)))

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle a paper checkpoint; ones written before bar times were integers convert."""
        if "_last_time" in state:
            last = state.pop("_last_time")
            state["_last_ns"] = None if last is None else int(last.astype("int64"))
        self.__dict__.update(state)
        if "_cp" not in state:  # written before the rules were the compiled core's
            self._cp, self._acct = account_arrays(AccountConfig(
                costs=self.costs, initial_cash=self.ledger.initial_cash, fill=self.fill,
                lot_size=self.lot_size, fractional=self.fractional, allow_short=self.allow_short,
                max_leverage=self.max_leverage, maintenance_margin=self.maintenance_margin))
            broker = self.broker
            broker._cp, broker._acct = self._cp, self._acct
            broker.bars_per_day = self.costs.bars_per_day or broker.bars_per_day
            for old in ("costs", "lot_size", "fractional"):
                broker.__dict__.pop(old, None)

    def _open(self, step: int, time: np.datetime64, open: Sequence[float],
              high: Sequence[float], low: Sequence[float], close: Sequence[float],
              volume: Sequence[float], ns: int) -> None:
        """:meth:`open_step` on rows of Python floats, positionally, with the bar time as
        integer ``ns`` (the loop's hot path)."""
        L = self.ledger
        L.begin_step()
        self._step_fills, self._step_orders, self._liquidated = [], [], False
        self._bar = (step, time, open, high, low, close, volume)
        shares = L.shares
        has_pos = any(shares)
        last = self._last_ns
        if has_pos and last is not None and self.costs.borrow_bps_annual and min(shares) < 0:
            fee = borrow_fee(np.array(shares), np.array(L.prices), self.costs.borrow_bps_annual,
                             float(ns - last))
            if fee:
                L.charge_borrow(fee)
        if last is not None:
            gap = float(ns - last)
            if 0.0 < gap < self._gap:
                self._gap = gap
                if self.costs.bars_per_day is None:  # the cost model's own value wins
                    self.broker.bars_per_day = bars_per_day(gap)
        self._last_ns = ns
        self._close_done = False
        # no margin call can trigger with cash >= 0 and only long positions (at positive
        # prices): then equity >= gross exposure >= maintenance_margin x gross
        cushioned = self.maintenance_margin <= 1.0
        if has_pos and not (cushioned and L.cash >= 0 and min(shares) >= 0):
            self._margin_call(phase="open", prices=open)
        self._used = {}  # shares traded per column in this bar (for the cap)
        if self.broker.open_orders:
            self._fill_phase(open)
            for order, fill in self.broker.execute(step=step, time=time, ref=open, high=high,
                                                   low=low, volume=volume,
                                                   kinds=self._open_kinds, used=self._used,
                                                   held=shares, afford=self._afford):
                self._book(step, fill, order)
        if self._armed:
            self._disarm_flat()
        if self._armed and any(shares):
            self._exits(step, time, open, high, low, volume)
        L.mark(close)
        if any(shares) and not (cushioned and L.cash >= 0 and min(shares) >= 0):
            self._margin_call(phase="close", prices=close)

    def rebalance(self, *, weights: Sequence[float], stop_loss: Sequence[float] | None = None,
                  take_profit: Sequence[float] | None = None) -> list[Order]:
        """Orders toward target ``weights`` (NaN: keep that position) sized at the last closes.

        In ``fill="close"`` mode they execute at this bar's close right away.
        """
        step, time = self._bar[0], self._bar[1]
        L = self.ledger
        equity = L.equity()
        current = L.shares
        sized = np.empty(len(current))
        gross = size_targets(np.array(weights, dtype=np.float64), equity, np.array(current),
                             np.array(L.prices), self._acct, sized)
        if gross >= 0:
            gross_now, _ = L.exposures()
            raise LedgerInvariantError(
                "leverage cap broken by the orders the broker sized", step=step, time=time,
                orders=list(self.broker.open_orders),
                numbers={"gross_after_orders": gross, "equity": equity, "max_leverage": max(
                    self.max_leverage, gross_now / equity if equity > 0 else 0.0)})
        target = sized.tolist()
        orders = []
        broker = self.broker
        if broker.open_orders:  # a new weight replaces a symbol's working market order
            for order in [o for o in broker.open_orders
                          if o.kind == MARKET and not math.isnan(weights[o.col])]:
                broker.cancel(order, replaced=True)
        for j, w in enumerate(weights):
            if math.isnan(w):
                continue
            delta = target[j] - current[j]
            if abs(delta) > 1e-12:
                orders.append(broker.create(time=time, col=j, quantity=delta, target=target[j]))
        if stop_loss is not None or take_profit is not None:
            self._set_exits(step, time, stop_loss, take_profit)
        self._step_orders.extend(orders)
        if self.fill == "close" and orders:
            self._work_at_close()
        return orders

    def _work_at_close(self) -> None:
        """``fill="close"``: market orders (new and working ones) execute at this bar's close."""
        step, time, _, high, low, close, volume = self._bar
        self._close_done = True
        self._fill_phase(close)
        for order, fill in self.broker.execute(step=step, time=time, ref=close, high=high,
                                               low=low, volume=volume, kinds=(MARKET,),
                                               used=self._used, held=self.ledger.shares,
                                               afford=self._afford):
            self._book(step, fill, order)
        if self._armed:
            self._disarm_flat()

    def submit(self, *, symbol: str, quantity: float, kind: str = MARKET,
               level: float = math.nan) -> Order:
        """Queue an explicit order (market, limit or stop) for the next bar processed."""
        order = self.broker.create(time=self._bar[1] if self._bar else np.datetime64("NaT", "ns"),
                                   col=self.ledger.col[symbol], quantity=quantity, kind=kind,
                                   level=level, reason="order")
        self._step_orders.append(order)
        return order

    def charge_expense(self, amount: float) -> None:
        """Debit money spent outside the market (a decision's LLM dollars) from cash, up to the
        equity: what exceeds it is recorded as an ``expense_unpaid`` event and ruins the account."""
        L = self.ledger
        equity = L.equity()
        paid = min(amount, max(equity, 0.0))
        if paid:
            L.charge_expense(paid)
        if paid < amount:
            self._event(self._bar[0], self._bar[1], "expense_unpaid", expense=amount, paid=paid,
                        equity=equity)

    def close_step(self) -> float:
        """Check the ledger invariants for this step; returns equity. Ruin stops the account."""
        step, time = self._bar[0], self._bar[1]
        if self.fill == "close" and not self._close_done and any(
                o.kind == MARKET for o in self.broker.open_orders):
            self._work_at_close()  # a hold: working targets still trade at this close
        equity = self.ledger.check(step=step, time=time, fills=self._step_fills,
                                   liquidated=self._liquidated,
                                   orders=self._step_orders + self.broker.open_orders)
        if equity <= 0 and not self.ruined:
            self.ruined = True
            self._event(step, time, "ruin", equity=equity)
        return equity

    # --- internals -------------------------------------------------------------------------

    def _book(self, step: int, fill: Fill, order: Order | None) -> None:
        L = self.ledger
        col = L.col[fill.symbol]
        L.apply(fill, col)
        self._step_fills.append((col, fill))
        self.fills.append((step, order.id if order is not None else 0, fill))
        if L.shares[col] == 0.0 and not (math.isnan(self.stop_loss[col])
                                         and math.isnan(self.take_profit[col])):
            self.stop_loss[col] = self.take_profit[col] = math.nan
            self._count_armed()

    def _set_exits(self, step: int, time: np.datetime64, stop_loss: Sequence[float] | None,
                   take_profit: Sequence[float] | None) -> None:
        """Arm exit levels; a symbol with no position and no order toward one gets none.

        Exits belong to a position: a level set while flat would fire on a position opened
        much later, so it is ignored and an ``exit_ignored`` event says so.
        """
        shares = self.ledger.shares
        pending = {o.col for o in self.broker.open_orders}
        for what, levels, new in (("stop_loss", self.stop_loss, stop_loss),
                                  ("take_profit", self.take_profit, take_profit)):
            if new is None:
                continue
            for j, x in enumerate(new):
                if math.isnan(x):
                    continue
                if shares[j] == 0.0 and j not in pending:
                    self._event(step, time, "exit_ignored", symbol=self.symbols[j], level=x,
                                exit=what, why="no position and no order toward one")
                    continue
                levels[j] = float(x)
        self._count_armed()

    def _disarm_flat(self) -> None:
        """Clear exit levels of flat symbols whose order toward a position is gone."""
        shares = self.ledger.shares
        pending = {o.col for o in self.broker.open_orders}
        for j in range(len(shares)):
            if shares[j] == 0.0 and j not in pending and not (
                    math.isnan(self.stop_loss[j]) and math.isnan(self.take_profit[j])):
                self.stop_loss[j] = self.take_profit[j] = math.nan
        self._count_armed()

    def _afford(self, col: int, qty: float, price: float, volume: float) -> float:
        """What of a fill of ``qty`` at ``price`` the account can pay for (core.affordable).

        The book is valued at this phase's fill prices (the last mark where a symbol has no
        bar); a shrunk fill is recorded as an ``order_shrunk`` event.
        """
        L = self.ledger
        allowed = affordable(col, qty, price, volume, self._ref, np.array(L.shares),
                             self._ref_marks, L.cash, self.broker.bars_per_day, self._cp,
                             self._acct)
        if allowed != qty:
            step, time = self._bar[0], self._bar[1]
            self._event(step, time, "order_shrunk", symbol=self.symbols[col], requested=qty,
                        filled=allowed, price=price, max_leverage=self.max_leverage)
        return allowed

    def _fill_phase(self, prices: Sequence[float]) -> None:
        """Orders fill at ``prices`` now (the open, or the close in close-fill mode)."""
        self._ref = np.array(prices, dtype=np.float64)
        self._ref_marks = np.array(self.ledger.prices)

    def _count_armed(self) -> None:
        self._armed = sum(1 for a, b in zip(self.stop_loss, self.take_profit)
                          if not (math.isnan(a) and math.isnan(b)))

    def _exits(self, step: int, time: np.datetime64, open_: Sequence[float],
               high: Sequence[float], low: Sequence[float], volume: Sequence[float]) -> None:
        shares = self.ledger.shares
        for j, (stop, target) in enumerate(zip(self.stop_loss, self.take_profit)):
            q = shares[j]
            if not q or (math.isnan(stop) and math.isnan(target)):
                continue
            price, reason = exit_fill(q, stop, target, open_[j], high[j], low[j])
            if reason:
                # exits share the bar's participation cap: a locked bar does not fill
                used = self._used.get(j, 0.0)
                qty = capped_qty(-q, volume[j], used, self._cp, self._acct)
                self._used[j] = used + abs(qty)
                if qty == 0.0:
                    continue  # still armed: it triggers again on the next bar with volume
                fill = self.broker.make_fill(time=time, col=j, quantity=qty, price=price,
                                             volume=volume[j], reason="stop_loss"
                                             if reason == EXIT_STOP else "take_profit")
                check_in_bar(fill.price, high[j], low[j], symbol=fill.symbol, time=time, step=step)
                self._book(step, fill, None)
                # the exit ends the position's target: a working order must not re-open it
                self.broker.cancel_all(col=j, kind=MARKET, report=False)

    def _margin_call(self, *, phase: str, prices: Sequence[float]) -> None:
        """Liquidate everything tradable now when equity falls below the maintenance margin."""
        L = self.ledger
        equity, gross = margin_state(np.array(prices, dtype=np.float64), np.array(L.shares),
                                     np.array(L.prices), L.cash)
        if not margin_breached(equity, gross, self.maintenance_margin):
            return
        step, time, _, high, low, _, volume = self._bar
        self._liquidated = True
        self._event(step, time, "liquidation", phase=phase, equity=equity, gross_exposure=gross,
                    maintenance_margin=self.maintenance_margin)
        self.broker.cancel_all(report=False)
        for j, p in enumerate(prices):
            q = L.shares[j]
            if q and not math.isnan(p):
                fill = self.broker.make_fill(time=time, col=j, quantity=-q, price=p,
                                             volume=volume[j], reason="liquidation")
                check_in_bar(fill.price, high[j], low[j], symbol=fill.symbol, time=time, step=step)
                self._book(step, fill, None)

    def _event(self, step: int, time: np.datetime64, kind: str, **detail: float | str) -> None:
        self.events.append({"step": step, "time": time, "kind": kind, **detail})

    def take_records(self) -> tuple[list[tuple[int, int, Fill]], list[Order], list[dict]]:
        """Fills, closed orders and events since the last call (the session records them).

        A target the participation cap held back that was cancelled before it was reached (the
        session cancels what is open when the run ends) becomes a ``target_unreached`` event.
        """
        if self.broker.unreached:
            step, time = (self._bar[0], self._bar[1]) if self._bar else (0, np.datetime64("NaT"))
            for order in self.broker.unreached:
                self._event(step, time, "target_unreached", symbol=order.symbol,
                            target=order.target, held=self.ledger.shares[order.col],
                            remaining=order.quantity - order.filled)
            self.broker.unreached = []
        fills, self.fills = self.fills, []
        orders, self.broker.closed = self.broker.closed, []
        events, self.events = self.events, []
        return fills, orders, events
