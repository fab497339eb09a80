"""The ledger: cash, positions, average cost, realised P&L and cost totals of one account.

It is the single source of truth the rewards and reports read. :meth:`Ledger.check` verifies the
invariants after every step from independent records (the step's fills and fees) rather than from
the ledger's own running sums, and raises :class:`LedgerInvariantError` — it never clamps.

The book is kept in plain Python lists of floats (``shares``, ``prices``): the engine touches a
handful of symbols per step, where scalar arithmetic beats NumPy's per-call overhead many times
over. ``position``, ``avg_cost``, ``realised`` and ``marks`` give NumPy snapshots for readers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tradesim.contracts import Fill
from tradesim.errors import LedgerInvariantError

_REL_TOL = 1e-9


class Ledger:
    """Book of one account over a fixed universe (lists indexed like ``symbols``)."""

    # class-level defaults read by paper checkpoints pickled before these fields existed
    expense: float = 0.0
    _step_fees: float = 0.0

    def __init__(self, *, symbols: tuple[str, ...], initial_cash: float) -> None:
        if not (initial_cash > 0 and math.isfinite(initial_cash)):
            raise ValueError(f"initial_cash must be a positive number, got {initial_cash!r}")
        n = len(symbols)
        self.symbols = symbols
        self.col = {s: j for j, s in enumerate(symbols)}
        self.initial_cash = float(initial_cash)
        self.cash = float(initial_cash)
        self.shares: list[float] = [0.0] * n  # signed position per symbol
        self.prices: list[float] = [math.nan] * n  # mark per symbol (NaN before its first bar)
        self._avg = [0.0] * n
        self._real = [0.0] * n
        self.commission = self.spread = self.slippage = self.borrow = self.expense = 0.0
        self._start_cash = self.cash
        self._start_shares = list(self.shares)
        self._step_fees = 0.0

    # --- updates ---------------------------------------------------------------------------

    def begin_step(self) -> None:
        """Snapshot what the invariants compare against at the end of the step."""
        self._start_cash = self.cash
        self._start_shares = self.shares.copy()
        self._step_fees = 0.0

    def apply(self, fill: Fill, col: int) -> None:
        """Book one fill: cash, position, average cost, realised P&L, cost totals."""
        q, p = fill.quantity, fill.price
        pos = self.shares[col]
        new = pos + q
        if pos == 0.0 or (pos > 0) == (q > 0):  # opening or adding: blend the average cost
            self._avg[col] = (pos * self._avg[col] + q * p) / new
        else:  # reducing, closing or reversing
            closed = min(abs(q), abs(pos))
            self._real[col] += math.copysign(closed, pos) * (p - self._avg[col])
            if abs(q) > abs(pos):
                self._avg[col] = p
            elif new == 0.0:
                self._avg[col] = 0.0
        self.shares[col] = new
        self.cash -= q * p + fill.commission + fill.spread_cost + fill.slippage_cost
        self.commission += fill.commission
        self.spread += fill.spread_cost
        self.slippage += fill.slippage_cost

    def charge_borrow(self, fee: float) -> None:
        """Debit a short-borrow fee."""
        self.cash -= fee
        self.borrow += fee
        self._step_fees += fee

    def charge_expense(self, amount: float) -> None:
        """Debit money a decision cost outside the market (LLM dollars, data fees)."""
        self.cash -= amount
        self.expense += amount
        self._step_fees += amount

    def mark(self, prices: Sequence[float]) -> None:
        """Mark to ``prices``; NaN entries (no bar now) keep the previous mark."""
        marks = self.prices
        for j, p in enumerate(prices):
            if not math.isnan(p):
                marks[j] = float(p)

    # --- reads -----------------------------------------------------------------------------

    @property
    def position(self) -> np.ndarray:
        """Snapshot of the positions (shares, negative = short) as an array."""
        return np.array(self.shares)

    @property
    def marks(self) -> np.ndarray:
        """Snapshot of the marks as an array (NaN before a symbol's first bar)."""
        return np.array(self.prices)

    @property
    def avg_cost(self) -> np.ndarray:
        """Snapshot of the average entry price per symbol (0 when flat)."""
        return np.array(self._avg)

    @property
    def realised(self) -> np.ndarray:
        """Snapshot of the realised P&L per symbol."""
        return np.array(self._real)

    @property
    def costs(self) -> float:
        """All trading costs, fees and decision expenses paid so far."""
        return self.commission + self.spread + self.slippage + self.borrow + self.expense

    def cost_totals(self) -> dict[str, float]:
        """What :attr:`costs` is made of, by kind."""
        return {"commission": self.commission, "spread": self.spread, "slippage": self.slippage,
                "borrow": self.borrow, "expense": self.expense}

    def equity(self, marks: Sequence[float] | None = None) -> float:
        """Cash plus positions at ``marks`` (default: the current marks)."""
        value = 0.0
        for q, m in zip(self.shares, self.prices if marks is None else marks):
            if q:
                value += q * m
        return self.cash + value

    def exposures(self) -> tuple[float, float]:
        """(gross, net) market value of the positions at the current marks."""
        gross = net = 0.0
        for q, m in zip(self.shares, self.prices):
            if q:
                v = q * m
                gross += abs(v)
                net += v
        return gross, net

    def unrealised(self) -> float:
        """Open P&L of the positions against their average cost."""
        out = 0.0
        for q, m, a in zip(self.shares, self.prices, self._avg):
            if q:
                out += q * (m - a)
        return out

    # --- invariants ------------------------------------------------------------------------

    def check(self, *, step: int, time: object, fills: Sequence[tuple[int, Fill]],
              liquidated: bool, orders: Sequence[object] = ()) -> float:
        """Verify the invariants after a step; returns equity. ``fills`` are (column, fill)."""
        shares = self.shares
        if (not fills and not self._step_fees and self.cash == self._start_cash
                and shares == self._start_shares):
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
        moved = self._start_shares.copy()
        for col, f in fills:
            traded += f.quantity * f.price
            paid += f.cost
            moved[col] += f.quantity
        expected_cash = self._start_cash - traded - paid - self._step_fees
        scale = 1.0 + abs(self._start_cash) + abs(traded)
        if abs(self.cash - expected_cash) > _REL_TOL * scale:
            raise LedgerInvariantError(
                "cash conservation broken: cash change != -sum(qty*price) - costs - fees",
                step=step, time=time, orders=list(orders),
                numbers={"cash_before": self._start_cash, "cash_after": self.cash,
                         "sum_qty_price": traded, "costs": paid, "fees": self._step_fees})
        if fills:
            tol = 1e-9 * (1.0 + max(abs(q) for q in shares))
            moved_wrong = any(abs(m - q) > tol for m, q in zip(moved, shares))
        else:
            moved_wrong = moved != shares
        if moved_wrong:
            raise LedgerInvariantError(
                "position conservation broken: positions != previous + filled quantities",
                step=step, time=time, orders=list(orders),
                numbers={"expected": moved, "positions": list(shares)})
        value = unrealised = gross = 0.0
        for q, m, a in zip(shares, self.prices, self._avg):
            if q:
                v = q * m
                value += v
                unrealised += q * (m - a)
                gross += abs(v)
        equity = self.cash + value
        realised = sum(self._real)
        accounted = self.initial_cash + realised + unrealised - self.costs
        if abs(equity - accounted) > _REL_TOL * (1.0 + abs(equity) + gross + self.initial_cash):
            raise LedgerInvariantError(
                "equity identity broken: cash + sum(qty*mark) != initial cash + realised + "
                "unrealised - costs", step=step, time=time, orders=list(orders),
                numbers={"equity": equity, "accounted": accounted, "cash": self.cash,
                         "realised": realised, "unrealised": unrealised, "costs": self.costs})
        if equity < 0 and not liquidated:
            raise LedgerInvariantError(
                "equity is negative without a liquidation event (margin checks failed to act)",
                step=step, time=time, orders=list(orders),
                numbers={"equity": equity, "cash": self.cash, "gross_exposure": gross})
        return equity
