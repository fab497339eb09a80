"""The ledger: cash, positions, average cost, realised P&L and cost totals of one account.

It is the single source of truth the rewards and reports read. :meth:`Ledger.check` verifies the
invariants after every step from independent records (the step's fills and fees) rather than from
the ledger's own running sums, and raises :class:`LedgerInvariantError` — it never clamps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tradesim.contracts import Fill
from tradesim.errors import LedgerInvariantError

_REL_TOL = 1e-9


class Ledger:
    """Book of one account over a fixed universe (arrays indexed like ``symbols``)."""

    def __init__(self, *, symbols: tuple[str, ...], initial_cash: float) -> None:
        if not (initial_cash > 0 and math.isfinite(initial_cash)):
            raise ValueError(f"initial_cash must be a positive number, got {initial_cash!r}")
        n = len(symbols)
        self.symbols = symbols
        self.col = {s: j for j, s in enumerate(symbols)}
        self.initial_cash = float(initial_cash)
        self.cash = float(initial_cash)
        self.position = np.zeros(n)
        self.avg_cost = np.zeros(n)
        self.realised = np.zeros(n)
        self.marks = np.full(n, np.nan)
        self.commission = self.spread = self.slippage = self.borrow = 0.0
        self._start_cash = self.cash
        self._start_position = self.position.copy()
        self._step_borrow = 0.0

    # --- updates ---------------------------------------------------------------------------

    def begin_step(self) -> None:
        """Snapshot what the invariants compare against at the end of the step."""
        self._start_cash = self.cash
        self._start_position[:] = self.position
        self._step_borrow = 0.0

    def apply(self, fill: Fill, col: int) -> None:
        """Book one fill: cash, position, average cost, realised P&L, cost totals."""
        q, p = fill.quantity, fill.price
        pos = float(self.position[col])
        new = pos + q
        if pos == 0.0 or (pos > 0) == (q > 0):  # opening or adding: blend the average cost
            self.avg_cost[col] = (pos * self.avg_cost[col] + q * p) / new
        else:  # reducing, closing or reversing
            closed = min(abs(q), abs(pos))
            self.realised[col] += math.copysign(closed, pos) * (p - self.avg_cost[col])
            if abs(q) > abs(pos):
                self.avg_cost[col] = p
            elif new == 0.0:
                self.avg_cost[col] = 0.0
        self.position[col] = new
        self.cash -= q * p + fill.commission + fill.spread_cost + fill.slippage_cost
        self.commission += fill.commission
        self.spread += fill.spread_cost
        self.slippage += fill.slippage_cost

    def charge_borrow(self, fee: float) -> None:
        """Debit a short-borrow fee."""
        self.cash -= fee
        self.borrow += fee
        self._step_borrow += fee

    def mark(self, prices: np.ndarray) -> None:
        """Mark to ``prices``; NaN entries (no bar now) keep the previous mark."""
        np.copyto(self.marks, prices, where=~np.isnan(prices))

    # --- reads -----------------------------------------------------------------------------

    @property
    def costs(self) -> float:
        """All trading costs and fees paid so far."""
        return self.commission + self.spread + self.slippage + self.borrow

    def equity(self, marks: np.ndarray | None = None) -> float:
        """Cash plus positions at ``marks`` (default: the current marks)."""
        m = self.marks if marks is None else marks
        held = self.position != 0.0
        return self.cash + float(self.position[held] @ m[held]) if held.any() else self.cash

    def exposures(self) -> tuple[float, float]:
        """(gross, net) market value of the positions at the current marks."""
        held = self.position != 0.0
        if not held.any():
            return 0.0, 0.0
        value = self.position[held] * self.marks[held]
        return float(np.abs(value).sum()), float(value.sum())

    def unrealised(self) -> float:
        """Open P&L of the positions against their average cost."""
        held = self.position != 0.0
        return float(self.position[held] @ (self.marks[held] - self.avg_cost[held]))

    # --- invariants ------------------------------------------------------------------------

    def check(self, *, step: int, time: object, fills: Sequence[tuple[int, Fill]],
              liquidated: bool, orders: Sequence[object] = ()) -> float:
        """Verify the invariants after a step; returns equity. ``fills`` are (column, fill)."""
        if (not fills and not self._step_borrow and self.cash == self._start_cash
                and np.array_equal(self.position, self._start_position)):
            # nothing booked: cash and positions unchanged, and the identity below does not
            # depend on marks, so it holds as it did at the last full check
            equity = self.equity()
            if equity < 0 and not liquidated:
                raise LedgerInvariantError(
                    "equity is negative without a liquidation event (margin checks failed to act)",
                    step=step, time=time, orders=list(orders),
                    numbers={"equity": equity, "cash": self.cash})
            return equity
        traded = paid = 0.0
        moved = self._start_position.copy() if fills else self._start_position
        for col, f in fills:
            traded += f.quantity * f.price
            paid += f.cost
            moved[col] += f.quantity
        expected_cash = self._start_cash - traded - paid - self._step_borrow
        scale = 1.0 + abs(self._start_cash) + abs(traded)
        if abs(self.cash - expected_cash) > _REL_TOL * scale:
            raise LedgerInvariantError(
                "cash conservation broken: cash change != -sum(qty*price) - costs - borrow",
                step=step, time=time, orders=list(orders),
                numbers={"cash_before": self._start_cash, "cash_after": self.cash,
                         "sum_qty_price": traded, "costs": paid, "borrow": self._step_borrow})
        if (not np.array_equal(moved, self.position) if not fills else
                np.abs(moved - self.position).max() > 1e-9 * (1.0 + np.abs(self.position).max())):
            raise LedgerInvariantError(
                "position conservation broken: positions != previous + filled quantities",
                step=step, time=time, orders=list(orders),
                numbers={"expected": moved.tolist(), "positions": self.position.tolist()})
        held = self.position != 0.0
        pos, marks = self.position[held], self.marks[held]
        equity = self.cash + float(pos @ marks)
        unrealised = float(pos @ (marks - self.avg_cost[held]))
        accounted = self.initial_cash + float(self.realised.sum()) + unrealised - self.costs
        gross = float(np.abs(pos * marks).sum())
        if abs(equity - accounted) > _REL_TOL * (1.0 + abs(equity) + gross + self.initial_cash):
            raise LedgerInvariantError(
                "equity identity broken: cash + sum(qty*mark) != initial cash + realised + "
                "unrealised - costs", step=step, time=time, orders=list(orders),
                numbers={"equity": equity, "accounted": accounted, "cash": self.cash,
                         "realised": float(self.realised.sum()), "unrealised": unrealised,
                         "costs": self.costs})
        if equity < 0 and not liquidated:
            raise LedgerInvariantError(
                "equity is negative without a liquidation event (margin checks failed to act)",
                step=step, time=time, orders=list(orders),
                numbers={"equity": equity, "cash": self.cash, "gross_exposure": gross})
        return equity

    def check_leverage(self, *, step: int, time: object, target: np.ndarray, prices: np.ndarray,
                       equity: float, max_leverage: float, orders: Sequence[object] = ()) -> None:
        """The book after these orders (at decision prices) stays within ``max_leverage``."""
        held = target != 0.0
        gross = float(np.abs(target[held] * prices[held]).sum()) if held.any() else 0.0
        if gross > 0 and (equity <= 0 or gross > max_leverage * equity * (1 + _REL_TOL) + 1e-9):
            raise LedgerInvariantError(
                "leverage cap broken by the orders the broker sized", step=step, time=time,
                orders=list(orders), numbers={"gross_after_orders": gross, "equity": equity,
                                              "max_leverage": max_leverage})
