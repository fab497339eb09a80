"""Vectorised fast path: a weights matrix decided up front, run through one compiled array kernel.

For agents whose decisions do not depend on their own fills (baselines, parameter sweeps) the
weights at every bar end can be computed at once (``agent.target_weights(data)``). The kernel
then replays exactly what the event loop (:mod:`tradesim.engine.session`) does with market orders:
shares sized at decision time from the last close and truncated to whole lots (or fractional),
fills at the next bar's open (or this bar's close with ``fill="close"``), the same commission,
half-spread, slippage and square-root impact, participation cap (whole lots; the rest keeps
working on later bars until filled or replaced, ``target_unreached`` at the end), reductions
filled first and the rest shrunk to the cash and leverage available at the fill price
(``order_shrunk`` events), short borrow fee, decision
checks (shorting, leverage, no price yet), margin liquidation and ruin. NaN weights hold.

One bar is a few compiled functions (``_bar_open``: spacing, borrow fee, margin and fills at
the open; ``_bar_close``: marks and margin at the close; ``_size_targets``/``_place_orders``: a
decision's orders); the kernel loops over them, and :func:`step_book` runs them one bar at a time
on a :class:`OneBook` (the single gymnasium env's book), so there is one implementation.

The kernel is compiled with numba when it is installed (cached on disk, so a fresh process pays
no compile), and runs as plain Python otherwise. Stops, take-profits and limit/stop orders need
the event loop: this module has no input for them, so it cannot approximate them.
"""

from __future__ import annotations

import math
import time as _time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tradesim.engine.account import AccountConfig
from tradesim.errors import AgentDecisionError, ConfigError, EngineError, LedgerInvariantError
from tradesim.rewards.step import log_growth

try:
    from numba import njit as _njit
except ImportError:  # numba is optional: the same kernel runs interpreted
    def _njit(**_: Any) -> Any:  # type: ignore[no-redef]
        return lambda fn: fn
_YEAR_NS = 365.25 * 86_400 * 1e9  # the same year as tradesim.engine.costs.borrow_fee
_SESSION_NS = 23_400 * 1e9  # tradesim.engine.costs.SESSION_NS: bars per day for the impact
_TOL = 1e-9  # the ledger's relative tolerance for leverage checks

# decision error codes (per step) shared by the kernel and the messages below; _NEG_EQUITY:
# equity fell below zero without a liquidation event (the ledger raises)
_OK, _NEG, _NO_PRICE, _NONFINITE, _GROSS, _LEVERAGE, _NEG_EQUITY = 0, 1, 2, 3, 4, 5, 6
# order status codes
_OPEN, _FILLED, _PARTIAL, _CANCELLED, _REPLACED = 0, 1, 2, 3, 4
_STATUS = ("open", "filled", "partial", "cancelled", "replaced")
# event kinds, fill reasons, margin-check phases
_LIQUIDATION, _RUIN, _SHRUNK = 1, 2, 3
_REBALANCE, _LIQUIDATED = 0, 1
_AT_OPEN, _AT_CLOSE = 0, 1
# cp, the cost parameters (_account_arrays); NaN cap: none, NaN bars per day: inferred
_CP_COMMISSION_FIXED, _CP_COMMISSION_BPS, _CP_HALF_SPREAD_BPS, _CP_SLIPPAGE_BPS = 0, 1, 2, 3
_CP_IMPACT, _CP_PARTICIPATION_CAP, _CP_BORROW_BPS, _CP_BARS_PER_DAY = 4, 5, 6, 7
_CP_SIZE = 8
# acct, the account rules (_account_arrays)
_ACCT_INITIAL_CASH, _ACCT_LOT, _ACCT_FRACTIONAL, _ACCT_MAX_LEVERAGE = 0, 1, 2, 3
_ACCT_MAINTENANCE, _ACCT_CLOSE_FILL = 4, 5
_ACCT_SIZE = 6
# a book's state: cash, costs paid by kind, the impact's bars per day, smallest bar spacing (ns)
_ST_CASH, _ST_COMMISSION, _ST_SPREAD, _ST_SLIPPAGE, _ST_BORROW = 0, 1, 2, 3, 4
_ST_BARS_PER_DAY, _ST_GAP = 5, 6
_ST_SIZE = 7
# order records: o_i and o_f columns
_O_STEP, _O_COL, _O_STATUS, _O_FILL_STEP, _O_CAPPED = 0, 1, 2, 3, 4
_O_QTY, _O_FILLED, _O_TARGET = 0, 1, 2
# fill records: f_i and f_f columns
_F_STEP, _F_ORDER, _F_COL, _F_REASON = 0, 1, 2, 3
_F_QTY, _F_PRICE, _F_COMMISSION, _F_SPREAD, _F_SLIPPAGE = 0, 1, 2, 3, 4
# event records: e_i and e_f columns (order_shrunk: quantity asked, filled, price)
_E_STEP, _E_KIND, _E_PHASE, _E_COL = 0, 1, 2, 3
_E_EQUITY, _E_GROSS, _E_PRICE = 0, 1, 2
# a single book's configuration (OneBook.config): cp, acct, then the action map of step_book
_CFG_ACTION_FLOOR = _CP_SIZE + _ACCT_SIZE
_CFG_ACTION_SCALE = _CFG_ACTION_FLOOR + 1
_CFG_SIZE = _CFG_ACTION_SCALE + 1


def _account_arrays(account: AccountConfig) -> tuple[np.ndarray, np.ndarray]:
    """The compiled functions' ``cp`` and ``acct`` arrays (slots ``_CP_*``, ``_ACCT_*``) from the
    account's rules: NaN cap = none, NaN bars per day = inferred from the bar spacing."""
    c = account.costs
    cp = np.empty(_CP_SIZE)
    cp[_CP_COMMISSION_FIXED], cp[_CP_COMMISSION_BPS] = c.commission_fixed, c.commission_bps
    cp[_CP_HALF_SPREAD_BPS], cp[_CP_SLIPPAGE_BPS] = c.half_spread_bps, c.slippage_bps
    cp[_CP_IMPACT] = c.impact_y * c.impact_sigma
    cp[_CP_PARTICIPATION_CAP] = math.nan if c.participation_cap is None else c.participation_cap
    cp[_CP_BORROW_BPS] = c.borrow_bps_annual
    cp[_CP_BARS_PER_DAY] = math.nan if c.bars_per_day is None else c.bars_per_day
    acct = np.empty(_ACCT_SIZE)
    acct[_ACCT_INITIAL_CASH], acct[_ACCT_LOT] = account.initial_cash, account.lot_size
    acct[_ACCT_FRACTIONAL] = float(account.fractional)
    acct[_ACCT_MAX_LEVERAGE] = account.max_leverage
    acct[_ACCT_MAINTENANCE] = account.maintenance_margin
    acct[_ACCT_CLOSE_FILL] = float(account.fill == "close")
    return cp, acct


@dataclass(frozen=True)
class SimResult:
    """Raw kernel output of one run: per-step book and the fill/order/event records.

    Per step (``steps`` rows): ``equity``/``cash`` at the step's end, ``gross``/``net`` exposure in
    currency, ``costs`` paid in the step, ``equity_pre`` (after the close mark, before the
    decision), ``position`` and ``marks`` (T, N). ``status`` is 0, or a decision/leverage error
    code at step ``fail_step``; ``errors`` holds per-step codes of decisions held by fallback.
    """

    steps: int
    status: int
    fail_step: int
    equity: np.ndarray
    cash: np.ndarray
    gross: np.ndarray
    net: np.ndarray
    costs: np.ndarray
    equity_pre: np.ndarray
    position: np.ndarray
    marks: np.ndarray
    errors: np.ndarray
    fills: dict[str, np.ndarray]  # step, order (index, -1 = liquidation), col, qty, price, costs
    orders: dict[str, np.ndarray]  # step, col, qty, filled, status, fill_step, capped, target,
    # working (still open when the run ended)
    events: dict[str, np.ndarray]  # step, kind, phase (0 open, 1 close), col, equity, gross
    # (an order_shrunk event keeps the quantity asked for in equity, the filled one in gross)

    @property
    def final_equity(self) -> float:
        return float(self.equity[self.steps - 1]) if self.steps else math.nan


@_njit(cache=True)
def _charges(q: float, px: float, vol: float, bpd: float, cp: np.ndarray
             ) -> tuple[float, float, float]:
    """Commission, half-spread and slippage (with square-root impact) of a fill of ``q`` at ``px``.

    ``bpd`` (bars per day) scales the bar's volume to the day's for the impact's participation.
    """
    notional = abs(q) * px
    comm = cp[_CP_COMMISSION_FIXED] + notional * (cp[_CP_COMMISSION_BPS] * 1e-4)
    spread = notional * (cp[_CP_HALF_SPREAD_BPS] * 1e-4)
    slip = notional * (cp[_CP_SLIPPAGE_BPS] * 1e-4)
    if cp[_CP_IMPACT] != 0.0:
        day = vol * bpd
        part = abs(q) / day if day > 0 else 1.0
        slip = slip + notional * cp[_CP_IMPACT] * math.sqrt(min(part, 1.0))
    return comm, spread, slip


@_njit(cache=True)
def _book(k, i, j, q, px, vol, oid, reason, pos, state, cp, f_i, f_f):
    """Book one fill of ``q`` shares of column ``j`` at ``px`` (the ledger's arithmetic)."""
    comm, spread, slip = _charges(q, px, vol, state[_ST_BARS_PER_DAY], cp)
    pos[j] += q
    state[_ST_CASH] -= q * px + comm + spread + slip
    state[_ST_COMMISSION] += comm
    state[_ST_SPREAD] += spread
    state[_ST_SLIPPAGE] += slip
    f_i[k, _F_STEP], f_i[k, _F_ORDER], f_i[k, _F_COL], f_i[k, _F_REASON] = i, oid, j, reason
    f_f[k, _F_QTY], f_f[k, _F_PRICE] = q, px
    f_f[k, _F_COMMISSION], f_f[k, _F_SPREAD], f_f[k, _F_SLIPPAGE] = comm, spread, slip


@_njit(cache=True)
def _lots_down(q, lot, fractional):
    """``q`` toward zero to whole lots (costs.lots_down)."""
    if fractional or q == 0.0:
        return q
    return math.copysign(math.floor(abs(q) / lot) * lot, q)


@_njit(cache=True)
def _afford(j, q, px, vol, ref, pos, marks, state, cp, acct):
    """costs.affordable_qty for column ``j`` with the book valued at ``ref`` (marks where NaN)."""
    equity = state[_ST_CASH]
    gross_rest = 0.0
    for m in range(pos.shape[0]):
        if pos[m] != 0.0:
            x = px if m == j else (marks[m] if ref[m] != ref[m] else ref[m])
            equity += pos[m] * x
            if m != j:
                gross_rest += abs(pos[m] * x)
    size = abs(q)
    held = pos[j]
    if held != 0.0 and (held > 0) != (q > 0):
        reduce = min(size, abs(held))
        base = 0.0
    else:
        reduce = 0.0
        base = abs(held)
    opening = size - reduce
    if opening <= 0.0:
        return q
    rate = (cp[_CP_COMMISSION_BPS] + cp[_CP_HALF_SPREAD_BPS] + cp[_CP_SLIPPAGE_BPS]) * 1e-4
    if cp[_CP_IMPACT] != 0.0:
        day = vol * state[_ST_BARS_PER_DAY]
        part = size / day if day > 0 else 1.0
        rate += cp[_CP_IMPACT] * math.sqrt(min(part, 1.0))
    lev = acct[_ACCT_MAX_LEVERAGE]
    room = lev * (equity - cp[_CP_COMMISSION_FIXED] - reduce * px * rate) - gross_rest - base * px
    most = room / (px * (1.0 + lev * rate))
    if most >= opening:
        return q
    return math.copysign(reduce + _lots_down(max(most, 0.0), acct[_ACCT_LOT],
                                             acct[_ACCT_FRACTIONAL] != 0.0), q)


@_njit(cache=True)
def _execute(i, ref, vol, pos, marks, pending, state, cp, acct, o_i, o_f, f_i, f_f, nf,
             e_i, e_f, ne):
    """Fill every pending market order at ``ref`` (NaN: it waits), capped by volume and cash.

    Orders that only reduce a position go first (they free cash); then the rest, each sized
    down to what the account can pay for at the fill price (an ``order_shrunk`` event, the rest
    cancelled). An order the participation cap holds back stays pending (it keeps working).
    """
    cap = cp[_CP_PARTICIPATION_CAP]
    for phase in range(2):
        for j in range(pos.shape[0]):
            k = pending[j]
            if k < 0 or ref[j] != ref[j]:
                continue
            remaining = o_f[k, _O_QTY] - o_f[k, _O_FILLED]
            reduces = pos[j] != 0.0 and (pos[j] > 0) != (remaining > 0) and (
                abs(remaining) <= abs(pos[j]))
            if reduces != (phase == 0):
                continue
            qty = remaining
            working = False
            if cap == cap:
                v = vol[j] if vol[j] == vol[j] else 0.0
                room = max(cap * v, 0.0)
                if abs(remaining) > room:
                    qty = _lots_down(math.copysign(room, remaining), acct[_ACCT_LOT],
                                     acct[_ACCT_FRACTIONAL] != 0.0)
                    working = True
                    o_i[k, _O_CAPPED] = 1
            if qty != 0.0:
                asked = qty
                qty = _afford(j, qty, ref[j], vol[j], ref, pos, marks, state, cp, acct)
                if qty != asked:
                    working = False
                    e_i[ne, _E_STEP], e_i[ne, _E_KIND], e_i[ne, _E_PHASE] = i, _SHRUNK, _AT_OPEN
                    e_i[ne, _E_COL] = j
                    e_f[ne, _E_EQUITY], e_f[ne, _E_GROSS], e_f[ne, _E_PRICE] = asked, qty, ref[j]
                    ne += 1
            if not working:
                pending[j] = -1
            if qty == 0.0:
                if not working and o_i[k, _O_STATUS] == _OPEN:
                    o_i[k, _O_STATUS] = _CANCELLED
                continue
            o_f[k, _O_FILLED] += qty
            o_i[k, _O_STATUS] = _FILLED if qty == remaining else _PARTIAL
            o_i[k, _O_FILL_STEP] = i
            _book(nf, i, j, qty, ref[j], vol[j], k, _REBALANCE, pos, state, cp, f_i, f_f)
            nf += 1
    return nf, ne


@_njit(cache=True, inline="always")
def _margin_call(prices, pos, marks, state, mm):
    """Whether :func:`_margin` would liquidate at ``prices`` (the same arithmetic).

    Checked inline first: a call passing the book's arrays costs more than the check itself.
    """
    gross = 0.0
    eq = state[_ST_CASH]
    for j in range(pos.shape[0]):
        if pos[j] != 0.0:
            m = marks[j] if prices[j] != prices[j] else prices[j]
            gross += abs(pos[j] * m)
            eq += pos[j] * m
    return not (gross == 0.0 or eq >= mm * gross)


@_njit(cache=True)
def _margin(i, phase, prices, vol, pos, marks, pending, state, cp, mm, o_i, f_i, f_f, nf,
            e_i, e_f, ne):
    """Liquidate everything tradable when equity < maintenance margin x gross (as the loop)."""
    gross = 0.0
    eq = state[_ST_CASH]
    for j in range(pos.shape[0]):
        if pos[j] != 0.0:
            m = marks[j] if prices[j] != prices[j] else prices[j]
            gross += abs(pos[j] * m)
            eq += pos[j] * m
    if gross == 0.0 or eq >= mm * gross:
        return nf, ne, False
    e_i[ne, _E_STEP], e_i[ne, _E_KIND], e_i[ne, _E_PHASE] = i, _LIQUIDATION, phase
    e_f[ne, _E_EQUITY], e_f[ne, _E_GROSS] = eq, gross
    ne += 1
    for j in range(pos.shape[0]):
        k = pending[j]
        if k >= 0:
            if o_i[k, _O_STATUS] == _OPEN:
                o_i[k, _O_STATUS] = _CANCELLED  # a partly filled one stays partial
            pending[j] = -1
    for j in range(pos.shape[0]):
        if pos[j] != 0.0 and prices[j] == prices[j]:
            _book(nf, i, j, -pos[j], prices[j], vol[j], -1, _LIQUIDATED, pos, state, cp, f_i,
                  f_f)
            nf += 1
    return nf, ne, True


@_njit(cache=True)
def _new_state(cp: np.ndarray, acct: np.ndarray) -> np.ndarray:
    """A fresh book's state: the starting cash, no costs yet, no bar spacing seen."""
    state = np.zeros(_ST_SIZE)
    state[_ST_CASH] = acct[_ACCT_INITIAL_CASH]
    bpd = cp[_CP_BARS_PER_DAY]
    state[_ST_BARS_PER_DAY] = bpd if bpd == bpd else 1.0
    state[_ST_GAP] = np.inf
    return state


@_njit(cache=True, inline="always")
def _value(state: np.ndarray, pos: np.ndarray, marks: np.ndarray) -> tuple[float, float, float]:
    """Equity, gross and net exposure of the book at ``marks``."""
    equity = state[_ST_CASH]
    gross = 0.0
    net = 0.0
    for j in range(pos.shape[0]):
        if pos[j] != 0.0:
            value = pos[j] * marks[j]
            equity += value
            gross += abs(value)
            net += value
    return equity, gross, net


@_njit(cache=True, inline="always")
def _bar_open(i, elapsed, o, v, pos, marks, pending, state, cp, acct, o_i, o_f, f_i, f_f, nf,
              e_i, e_f, ne):
    """Bar ``i`` up to its open: bar spacing, short borrow fee over ``elapsed`` ns, margin check
    at the open ``o``, then pending market orders filled there (unless fills are at the close).

    Returns (fills, events, liquidated); one implementation for the kernel and per-step callers.
    """
    n = pos.shape[0]
    if i > 0 and 0.0 < elapsed < state[_ST_GAP]:
        state[_ST_GAP] = elapsed
        if cp[_CP_BARS_PER_DAY] != cp[_CP_BARS_PER_DAY]:
            state[_ST_BARS_PER_DAY] = max(1.0, _SESSION_NS / elapsed)
    has_pos = False
    for j in range(n):
        if pos[j] != 0.0:
            has_pos = True
    if has_pos and i > 0 and cp[_CP_BORROW_BPS] != 0.0 and elapsed > 0:
        short = 0.0
        for j in range(n):
            if pos[j] < 0:
                short += -pos[j] * marks[j]
        fee = short * cp[_CP_BORROW_BPS] * 1e-4 * elapsed / _YEAR_NS
        if fee != 0.0:
            state[_ST_CASH] -= fee
            state[_ST_BORROW] += fee
    liquidated = False
    mm = acct[_ACCT_MAINTENANCE]
    if has_pos and _margin_call(o, pos, marks, state, mm):
        nf, ne, liquidated = _margin(i, _AT_OPEN, o, v, pos, marks, pending, state, cp, mm, o_i,
                                     f_i, f_f, nf, e_i, e_f, ne)
    if acct[_ACCT_CLOSE_FILL] == 0.0:
        waiting = False
        for j in range(n):
            if pending[j] >= 0:
                waiting = True
        if waiting:
            nf, ne = _execute(i, o, v, pos, marks, pending, state, cp, acct, o_i, o_f, f_i, f_f,
                              nf, e_i, e_f, ne)
    return nf, ne, liquidated


@_njit(cache=True, inline="always")
def _bar_close(i, c, v, pos, marks, pending, state, cp, acct, o_i, f_i, f_f, nf, e_i, e_f, ne):
    """Bar ``i`` at its close ``c``: the new marks, then the margin check at the close.

    Returns (fills, events, liquidated).
    """
    has_pos = False
    for j in range(pos.shape[0]):
        if c[j] == c[j]:
            marks[j] = c[j]
        if pos[j] != 0.0:
            has_pos = True
    mm = acct[_ACCT_MAINTENANCE]
    if has_pos and _margin_call(c, pos, marks, state, mm):
        return _margin(i, _AT_CLOSE, c, v, pos, marks, pending, state, cp, mm, o_i, f_i, f_f, nf,
                       e_i, e_f, ne)
    return nf, ne, False


@_njit(cache=True, inline="always")
def _gross_breach(w: np.ndarray, equity: float, pos: np.ndarray, marks: np.ndarray,
                  max_lev: float) -> bool:
    """The event loop's decision check: weights (kept positions where NaN) beyond the cap."""
    gross_now = 0.0
    gross = 0.0
    for j in range(pos.shape[0]):
        hw = pos[j] * marks[j] / equity if (pos[j] != 0.0 and equity > 0) else 0.0
        gross_now += abs(hw)
        gross += abs(w[j]) if w[j] == w[j] else abs(hw)
    return gross > max_lev * (1 + _TOL) and gross > gross_now * (1 + _TOL)


@_njit(cache=True, inline="always")
def _size_targets(w: np.ndarray, equity: float, pos: np.ndarray, marks: np.ndarray,
                  acct: np.ndarray, target: np.ndarray) -> bool:
    """Target shares for weights ``w`` of ``equity`` at ``marks`` (whole lots unless fractional;
    NaN keeps the position); whether the sized book breaks the leverage cap (the ledger raises).
    """
    lot, fractional = acct[_ACCT_LOT], acct[_ACCT_FRACTIONAL] != 0.0
    held_gross = 0.0
    for j in range(pos.shape[0]):
        if pos[j] != 0.0:
            held_gross += abs(pos[j] * marks[j])
        if w[j] != w[j]:
            target[j] = pos[j]
            continue
        raw = w[j] * equity / marks[j]
        s = raw if fractional else np.trunc(raw / lot) * lot
        target[j] = s if s == s else 0.0
    gross_t = 0.0
    for j in range(pos.shape[0]):
        if target[j] != 0.0:
            gross_t += abs(target[j] * marks[j])
    cap_lev = max(acct[_ACCT_MAX_LEVERAGE], held_gross / equity if equity > 0 else 0.0)
    return gross_t > 0 and (equity <= 0 or gross_t > cap_lev * equity * (1 + _TOL) + 1e-9)


@_njit(cache=True, inline="always")
def _place_orders(i: int, w: np.ndarray, target: np.ndarray, pos: np.ndarray,
                  pending: np.ndarray, o_i: np.ndarray, o_f: np.ndarray, no: int,
                  per_column: bool) -> int:
    """Market orders toward ``target`` where ``w`` is given (replacing working ones); returns
    the next order index. ``per_column`` keeps each column's order in row ``j`` (a book that
    keeps no order history); otherwise orders append at row ``no``.
    """
    for j in range(pos.shape[0]):
        if w[j] != w[j]:
            continue
        if pending[j] >= 0:
            o_i[pending[j], _O_STATUS] = _REPLACED
            pending[j] = -1
        delta = target[j] - pos[j]
        if abs(delta) > 1e-12:
            k = j if per_column else no
            o_i[k, _O_STEP], o_i[k, _O_COL], o_i[k, _O_STATUS] = i, j, _OPEN
            o_i[k, _O_FILL_STEP], o_i[k, _O_CAPPED] = -1, 0
            o_f[k, _O_QTY], o_f[k, _O_FILLED], o_f[k, _O_TARGET] = delta, 0.0, target[j]
            pending[j] = k
            if not per_column:
                no += 1
    return no


@_njit(cache=True)
def _kernel(o, c, v, w, elapsed, err_in, cp, acct, hold_on_error,  # noqa: C901 - one numba loop
            eq_out, cash_out, gross_out, net_out, costs_out, pre_out, pos_out, marks_out,
            err_out, o_i, o_f, f_i, f_f, e_i, e_f, pending):
    """One run over T bars; returns (status, fail step, steps, fills, orders, events).

    ``pending`` (N, -1 = none) holds each symbol's working order; it is left as the run ended.
    """
    t_len, n = c.shape
    pos = np.zeros(n)
    marks = np.full(n, np.nan)
    target = np.zeros(n)
    state = _new_state(cp, acct)
    nf = 0
    no = 0
    ne = 0
    last_costs = 0.0
    for i in range(t_len):
        nf, ne, liq_open = _bar_open(i, elapsed[i], o[i], v[i], pos, marks, pending, state, cp,
                                     acct, o_i, o_f, f_i, f_f, nf, e_i, e_f, ne)
        nf, ne, liq_close = _bar_close(i, c[i], v[i], pos, marks, pending, state, cp, acct, o_i,
                                       f_i, f_f, nf, e_i, e_f, ne)
        liquidated = liq_open or liq_close
        equity = _value(state, pos, marks)[0]
        pre_out[i] = equity
        code = err_in[i]
        active = False
        for j in range(n):
            if w[i, j] == w[i, j]:
                active = True
        if equity <= 0:  # ruined before the decision: the event loop asks the agent nothing
            active = False
            code = _OK
        if active and code == _OK and _gross_breach(w[i], equity, pos, marks,
                                                    acct[_ACCT_MAX_LEVERAGE]):
            code = _GROSS
        status = _OK
        if code != _OK:
            active = False
            if hold_on_error:
                err_out[i] = code
            else:
                status = code
        if active:
            if _size_targets(w[i], equity, pos, marks, acct, target):
                return _LEVERAGE, i, i, nf, no, ne
            no = _place_orders(i, w[i], target, pos, pending, o_i, o_f, no, False)
        if acct[_ACCT_CLOSE_FILL] != 0.0:  # new and working market orders execute at this close
            waiting = False
            for j in range(n):
                if pending[j] >= 0:
                    waiting = True
            if waiting:
                nf, ne = _execute(i, c[i], v[i], pos, marks, pending, state, cp, acct, o_i,
                                  o_f, f_i, f_f, nf, e_i, e_f, ne)
        equity, gross, net = _value(state, pos, marks)
        costs = (state[_ST_COMMISSION] + state[_ST_SPREAD] + state[_ST_SLIPPAGE]
                 + state[_ST_BORROW])
        eq_out[i], cash_out[i], gross_out[i], net_out[i] = equity, state[_ST_CASH], gross, net
        costs_out[i] = costs - last_costs
        last_costs = costs
        pos_out[i] = pos
        marks_out[i] = marks
        if status != _OK:
            return status, i, i + 1, nf, no, ne
        if equity < 0 and not liquidated:
            return _NEG_EQUITY, i, i, nf, no, ne  # the ledger raises
        if equity <= 0:
            e_i[ne, _E_STEP], e_i[ne, _E_KIND], e_i[ne, _E_PHASE] = i, _RUIN, _AT_OPEN
            e_f[ne, _E_EQUITY], e_f[ne, _E_GROSS] = equity, gross
            ne += 1
            return _OK, -1, i + 1, nf, no, ne
    return _OK, -1, t_len, nf, no, ne


# --- one book, one bar at a time (the single gymnasium env) --------------------------------


@_njit(cache=True, inline="always")
def _book_views(fb: np.ndarray, ib: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """Views of a single book packed in ``fb``/``ib`` (the layout :class:`OneBook` allocates)."""
    a = _ST_SIZE
    state, pos, marks = fb[:a], fb[a:a + n], fb[a + n:a + 2 * n]
    target, wanted, held = fb[a + 2 * n:a + 3 * n], fb[a + 3 * n:a + 4 * n], fb[a + 4 * n:a + 5 * n]
    b = a + 5 * n
    o_f = fb[b:b + 3 * n].reshape((n, 3))
    f_f = fb[b + 3 * n:b + 18 * n].reshape((3 * n, 5))
    e_f = fb[b + 18 * n:b + 18 * n + 3 * (n + 2)].reshape((n + 2, 3))
    pending = ib[:n]
    o_i = ib[n:6 * n].reshape((n, 5))
    f_i = ib[6 * n:18 * n].reshape((3 * n, 4))
    e_i = ib[18 * n:18 * n + 4 * (n + 2)].reshape((n + 2, 4))
    return state, pos, marks, target, wanted, held, o_f, f_f, e_f, pending, o_i, f_i, e_i


@_njit(cache=True)
def step_book(action: np.ndarray, row: int, bars: np.ndarray, fb: np.ndarray, ib: np.ndarray,
              cfg: np.ndarray, flatten: bool) -> tuple[float, float, float, bool]:
    """Decide ``action`` at the last close, then step bar ``row`` of ``bars`` (OneBook.bars).

    Actions are clipped to [floor, 1] and scaled into target weights (NaN holds: a working order
    keeps working); sizing, orders, borrow fee, margin checks and next-open fills are the
    kernel's own functions. Returns (equity at the close, costs charged in the bar, cost of
    flattening the book at the close when ``flatten`` else 0, whether it was liquidated).
    """
    n = action.shape[0]
    (state, pos, marks, target, wanted, held, o_f, f_f, e_f, pending, o_i, f_i,
     e_i) = _book_views(fb, ib, n)
    cp, acct = cfg[:_CP_SIZE], cfg[_CP_SIZE:_CP_SIZE + _ACCT_SIZE]
    floor, scale = cfg[_CFG_ACTION_FLOOR], cfg[_CFG_ACTION_SCALE]
    for j in range(n):
        a = action[j]
        wanted[j] = a if a != a else min(max(a, floor), 1.0) * scale
    equity = _value(state, pos, marks)[0]
    if equity > 0:
        _size_targets(wanted, equity, pos, marks, acct, target)
        _place_orders(row - 1, wanted, target, pos, pending, o_i, o_f, 0, True)
    for k in range(_ST_COMMISSION, _ST_BORROW + 1):  # costs of this bar only
        state[k] = 0.0
    o, c, v = bars[row, :n], bars[row, n:2 * n], bars[row, 2 * n:3 * n]
    nf, ne, liq_open = _bar_open(row, bars[row, 3 * n], o, v, pos, marks, pending, state, cp,
                                 acct, o_i, o_f, f_i, f_f, 0, e_i, e_f, 0)
    _, _, liq_close = _bar_close(row, c, v, pos, marks, pending, state, cp, acct, o_i, f_i, f_f,
                                 nf, e_i, e_f, ne)
    equity = _value(state, pos, marks)[0]
    flat = 0.0
    for j in range(n):
        held[j] = pos[j] * marks[j] / equity if equity > 0 else 0.0
        if flatten and pos[j] != 0.0:
            comm, spread, slip = _charges(-pos[j], marks[j], v[j], state[_ST_BARS_PER_DAY], cp)
            flat += comm + spread + slip
    costs = state[_ST_COMMISSION] + state[_ST_SPREAD] + state[_ST_SLIPPAGE] + state[_ST_BORROW]
    return equity, costs, flat, liq_open or liq_close


class OneBook:
    """A single book of ``n`` columns in small packed arrays, stepped by :func:`step_book`.

    ``floats``/``ints`` hold the state, working orders and one bar's fill and event records;
    ``config`` the cost and account rules and the action map. The attributes ``position``,
    ``marks``, ``weights`` (held at the last close) and ``pending`` (working order per column, -1
    none) are views into them.
    """

    def __init__(self, *, n: int, account: AccountConfig, action_floor: float = -1.0,
                 action_scale: float = 1.0) -> None:
        if account.fill != "next_open":
            raise ConfigError(f"a stepped book fills at the next open, got fill={account.fill!r}")
        cp, acct = _account_arrays(account)
        self.n = n
        self.config = np.r_[cp, acct, action_floor, action_scale]
        self.floats = np.zeros(_ST_SIZE + 23 * n + 3 * (n + 2))
        self.ints = np.zeros(18 * n + 4 * (n + 2), dtype=np.int64)
        views = _book_views(self.floats, self.ints, n)
        self._state, self.position, self.marks = views[0], views[1], views[2]
        self.weights, self.pending = views[5], views[9]

    def reset(self, marks: np.ndarray) -> None:
        """Flat book at the starting cash, valued at ``marks`` (the close it starts from)."""
        self.floats[:] = 0.0
        self.ints[:] = 0
        self._state[:] = _new_state(self.config[:_CP_SIZE],
                                    self.config[_CP_SIZE:_CP_SIZE + _ACCT_SIZE])
        self.marks[:] = marks
        self.pending[:] = -1

    @staticmethod
    def bars(open: np.ndarray, close: np.ndarray, volume: np.ndarray,
             elapsed_ns: np.ndarray) -> np.ndarray:
        """Rows ``[R, 3N + 1]`` for :func:`step_book`: open, close, volume, then the ns since
        the previous bar (from ``[R, N]`` arrays and ``[R]`` spacing)."""
        return np.ascontiguousarray(np.concatenate(
            [open, close, volume, np.asarray(elapsed_ns, dtype=np.float64)[:, None]], axis=1),
            dtype=np.float64)


def _static_errors(w: np.ndarray, close: np.ndarray, allow_short: bool) -> np.ndarray:
    """Per-step decision error codes knowable without the book: inf, shorts, no price yet."""
    codes = np.zeros(w.shape[0], dtype=np.int64)
    given = ~np.isnan(w)
    seen = np.logical_or.accumulate(~np.isnan(close), axis=0)
    codes[(given & ~seen & (w != 0)).any(axis=1)] = _NO_PRICE
    if not allow_short:
        codes[(given & (w < 0)).any(axis=1)] = _NEG
    codes[(given & ~np.isfinite(np.where(given, w, 0.0))).any(axis=1)] = _NONFINITE
    return codes


def simulate_weights(*, open: np.ndarray, close: np.ndarray, volume: np.ndarray,
                     weights: np.ndarray, account: AccountConfig,
                     elapsed_ns: np.ndarray | None = None,
                     hold_on_error: bool = False) -> SimResult | list[SimResult]:
    """Run weights decided at each bar end through the event loop's market-order semantics.

    ``open``/``close``/``volume`` are (T, N) aligned to the clock (NaN: no bar for that symbol);
    ``weights`` is (T, N), or (K, T, N) for K parameter sets (returns K results); NaN = hold.
    ``elapsed_ns`` (T,) is the time since the previous bar, for the borrow fee (default: one
    day per bar). Prices are not checked against high/low here; :func:`run_fast` does that.
    """
    o, c, v = (np.ascontiguousarray(a, dtype=np.float64) for a in (open, close, volume))
    if o.ndim != 2 or o.shape != c.shape or o.shape != v.shape:
        raise ConfigError(f"open/close/volume must be (T, N) arrays of one shape, got "
                          f"{o.shape}, {c.shape}, {v.shape}")
    w_all = np.asarray(weights, dtype=np.float64)
    if w_all.ndim == 2:
        return _simulate_one(o, c, v, w_all, account, elapsed_ns, hold_on_error)
    if w_all.ndim != 3:
        raise ConfigError(f"weights must be (T, N) or (K, T, N), got shape {w_all.shape}")
    return [_simulate_one(o, c, v, w, account, elapsed_ns, hold_on_error) for w in w_all]


def _simulate_one(o: np.ndarray, c: np.ndarray, v: np.ndarray, w: np.ndarray, p: AccountConfig,
                  elapsed_ns: np.ndarray | None, hold_on_error: bool) -> SimResult:
    t_len, n = c.shape
    if w.shape != (t_len, n):
        raise ConfigError(f"weights have shape {w.shape} but the bars are {(t_len, n)} "
                          "(one row per bar, one column per symbol)")
    w = np.ascontiguousarray(w)
    elapsed = (np.full(t_len, 86_400e9) if elapsed_ns is None
               else np.ascontiguousarray(elapsed_ns, dtype=np.float64))
    cp, acct = _account_arrays(p)
    err_in = _static_errors(w, c, p.allow_short)
    n_orders = int((~np.isnan(w)).sum())
    fills_bound = n_orders
    if p.costs.participation_cap is not None:  # a working order may fill once a bar until replaced
        given = ~np.isnan(w)
        first = np.where(given.any(axis=0), given.argmax(axis=0), t_len)
        fills_bound = max(n_orders, int((t_len - first).sum()))
    cap_fills = 2 * fills_bound + n + 1  # liquidations close at most what orders opened
    per_step = {k: np.full(t_len, np.nan) for k in ("equity", "cash", "gross", "net", "costs",
                                                     "pre")}
    pos_out, marks_out = np.zeros((t_len, n)), np.full((t_len, n), np.nan)
    err_out = np.zeros(t_len, dtype=np.int64)
    o_i, o_f = np.zeros((n_orders + 1, 5), np.int64), np.zeros((n_orders + 1, 3))
    pending = np.full(n, -1, np.int64)
    f_i, f_f = np.zeros((cap_fills, 4), np.int64), np.zeros((cap_fills, 5))
    n_events = cap_fills + n_orders + 1  # liquidations, shrunk orders, ruin
    e_i, e_f = np.zeros((n_events, 4), np.int64), np.zeros((n_events, 3))
    status, fail, steps, nf, no, ne = _kernel(
        o, c, v, w, elapsed, err_in, cp, acct, hold_on_error, per_step["equity"],
        per_step["cash"], per_step["gross"], per_step["net"], per_step["costs"], per_step["pre"],
        pos_out, marks_out, err_out, o_i, o_f, f_i, f_f, e_i, e_f, pending)
    fills = {"step": f_i[:nf, 0], "order": f_i[:nf, 1], "col": f_i[:nf, 2], "reason": f_i[:nf, 3],
             "quantity": f_f[:nf, 0], "price": f_f[:nf, 1], "commission": f_f[:nf, 2],
             "spread_cost": f_f[:nf, 3], "slippage_cost": f_f[:nf, 4]}
    working = np.zeros(no, dtype=bool)
    working[pending[pending >= 0]] = True
    orders = {"step": o_i[:no, 0], "col": o_i[:no, 1], "status": o_i[:no, 2],
              "fill_step": o_i[:no, 3], "quantity": o_f[:no, 0], "filled": o_f[:no, 1],
              "capped": o_i[:no, 4].astype(bool), "target": o_f[:no, 2], "working": working}
    events = {"step": e_i[:ne, 0], "kind": e_i[:ne, 1], "phase": e_i[:ne, 2],
              "col": e_i[:ne, 3], "equity": e_f[:ne, 0], "gross": e_f[:ne, 1],
              "filled": e_f[:ne, 1], "price": e_f[:ne, 2]}
    return SimResult(steps=int(steps), status=int(status), fail_step=int(fail),
                     equity=per_step["equity"], cash=per_step["cash"], gross=per_step["gross"],
                     net=per_step["net"], costs=per_step["costs"], equity_pre=per_step["pre"],
                     position=pos_out, marks=marks_out, errors=err_out, fills=fills,
                     orders=orders, events=events)


def run_fast(*, data: Any, weights: pd.DataFrame | np.ndarray, config: Any,
             name: str | None = None, save_to: str | None = None) -> Any:
    """Backtest precomputed ``weights`` (rows = decision bar ends, NaN = hold) on ``data``.

    Same inputs and the same :class:`RunResult` as ``run_backtest`` with an agent deciding those
    weights: the clock, universe and costs come from ``config`` (a ``BacktestConfig``). A frame is
    aligned to the run's clock by stamp (stamps it lacks hold); an array must have one row per
    clock bar. Decision errors raise ``AgentDecisionError`` with the step (partial record attached)
    or hold, per ``config.on_agent_error``.
    """
    from tradesim.engine.backtest import universe_and_clock
    from tradesim.engine.feed import AlignedBars, closes_on

    universe, clock = universe_and_clock(config=config, data=data)
    w = _weights_matrix(weights, clock, universe)
    started = _time.perf_counter()
    rows = AlignedBars(data, universe, clock)
    elapsed = np.r_[0.0, np.diff(clock.astype(np.int64)).astype(np.float64)]
    sim = _simulate_one(rows.open, rows.close, rows.volume, w, config,
                        elapsed, config.on_agent_error == "hold")
    bench = closes_on(data, config.benchmark, clock) if config.benchmark else None
    meta: dict[str, Any] = {"agent": name or config.agent, "bars": int(len(clock)),
                            "partial": False, "engine": "fastpath"}
    error = _failure(sim, w, universe, clock, config, rows)
    if error is not None:
        meta.update(partial=True, error=f"{type(error).__name__}: {error}")
    elif sim.status == _OK and any(sim.events["kind"] == _RUIN):
        meta["stopped"] = "ruin: equity fell to zero or below"
    result = _result(sim, w, universe, clock, config, data, bench, meta, started)
    if save_to is not None:
        result.save(save_to)
    if error is not None:
        error.partial_result = result
        raise error
    return result


def _weights_matrix(weights: pd.DataFrame | np.ndarray, clock: np.ndarray,
                    universe: tuple[str, ...]) -> np.ndarray:
    """(T, N) float weights on ``clock`` x ``universe``; stamps a frame lacks become NaN (hold)."""
    if isinstance(weights, pd.DataFrame):
        unknown = [str(c) for c in weights.columns if c not in universe]
        if unknown:
            raise ConfigError(f"weights for unknown symbol(s) {', '.join(unknown)}; the universe "
                              f"is {', '.join(universe)} (drop those columns or add the symbols)")
        index = pd.DatetimeIndex(weights.index)
        if index.tz is not None:
            index = index.tz_convert("UTC").tz_localize(None)
        if not index.is_unique:
            raise ConfigError("weights index has duplicate stamps; one row per bar end")
        frame = pd.DataFrame(weights.to_numpy(dtype=np.float64), index=index.as_unit("ns"),
                             columns=list(weights.columns))
        aligned = frame.reindex(index=pd.DatetimeIndex(clock), columns=list(universe))
        return np.ascontiguousarray(aligned.to_numpy(dtype=np.float64))
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1 and len(universe) == 1:
        w = w[:, None]
    if w.shape != (len(clock), len(universe)):
        raise ConfigError(f"weights array has shape {w.shape} but the run has {len(clock)} bars x "
                          f"{len(universe)} symbols ({', '.join(universe)}); pass a DataFrame "
                          "indexed by bar end to align by stamp")
    return np.ascontiguousarray(w)


def _decision_message(code: int, row: np.ndarray, universe: tuple[str, ...], sim: SimResult,
                      step: int, max_leverage: float) -> str:
    """Why a weights row was rejected, in the event loop's words."""
    given = ~np.isnan(row)
    names = lambda mask: ", ".join(s for s, m in zip(universe, mask) if m)
    if code == _NONFINITE:
        bad = given & ~np.isfinite(np.where(given, row, 0.0))
        return f"weight for {names(bad)} is not finite; it must be a finite number"
    if code == _NEG:
        return (f"negative weight for {names(given & (row < 0))} but shorting is off; set "
                "allow_short = true in the config or return weights >= 0")
    if code == _NO_PRICE:
        seen = np.zeros(len(universe), dtype=bool) if step < 0 else ~np.isnan(sim.marks[step])
        return (f"weight for {names(given & (row != 0) & ~seen)} before its first bar; there is "
                "no price to size the order from yet")
    equity = sim.equity_pre[step]
    pos, marks = sim.position[step], sim.marks[step]
    held = np.where(pos != 0, pos * marks, 0.0) / equity if equity > 0 else np.zeros(len(pos))
    gross = float(np.abs(np.where(given, row, held)).sum())
    return (f"weights sum to gross leverage {gross:.6g} (with kept positions), beyond "
            f"max_leverage {max_leverage:g}; scale them down or raise max_leverage")


def _failure(sim: SimResult, w: np.ndarray, universe: tuple[str, ...], clock: np.ndarray,
             config: Any, rows: Any) -> EngineError | None:
    """The exception the event loop would raise for this run (None when it ran through)."""
    from tradesim.data.bars import iso_time
    from tradesim.engine.broker import check_in_bar

    f = sim.fills
    price, step, col = f["price"], f["step"], f["col"]
    hi, lo = rows.high[step, col], rows.low[step, col]
    tol = 1e-9 * np.maximum(np.maximum(np.abs(hi), np.abs(lo)), 1.0)
    outside = np.flatnonzero(~((lo - tol <= price) & (price <= hi + tol)))
    if outside.size:
        k = int(outside[0])
        try:
            check_in_bar(float(price[k]), float(hi[k]), float(lo[k]), symbol=universe[col[k]],
                         time=clock[step[k]], step=int(step[k]))
        except LedgerInvariantError as exc:
            return exc
    i = sim.fail_step
    if sim.status in (_NEG, _NO_PRICE, _NONFINITE, _GROSS):
        message = _decision_message(sim.status, w[i], universe, sim, i, config.max_leverage)
        return AgentDecisionError(f"agent {config.agent!r}: invalid decision: {message}",
                                  step=i, time=iso_time(clock[i]))
    if sim.status == _LEVERAGE:
        return LedgerInvariantError("leverage cap broken by the orders the broker sized",
                                    step=i, time=clock[i])
    if sim.status == _NEG_EQUITY:
        return LedgerInvariantError("equity is negative without a liquidation event (margin "
                                    "checks failed to act)", step=i, time=clock[i])
    return None


def _result(sim: SimResult, w: np.ndarray, universe: tuple[str, ...], clock: np.ndarray,
            config: Any, data: Any, bench: np.ndarray | None, meta: dict[str, Any],
            started: float) -> Any:
    """The RunResult the event loop's recorder would build from this run."""
    from tradesim.engine.broker import MARKET
    from tradesim.engine.record import Recorder, json_rows

    n = sim.steps
    rec = Recorder(clock=clock, symbols=universe)
    equity = sim.equity[:n]
    scale = np.where(equity > 0, 1.0 / np.where(equity > 0, equity, 1.0), 0.0)
    rewards = np.full(n, np.nan)
    rewards[1:n] = log_growth(sim.equity_pre[:n])  # the loop's reward, from the rewards module
    rec.rows_from_arrays(equity=equity, cash=sim.cash[:n], gross=sim.gross[:n] * scale,
                         net=sim.net[:n] * scale, costs=sim.costs[:n],
                         held=sim.position[:n] * sim.marks[:n] * scale[:, None], rewards=rewards)
    o, f = sim.orders, sim.fills
    # journal: one row per step that ordered, held an invalid decision, or failed the run
    fallback, error = {}, {}
    for i in np.flatnonzero(sim.errors[:n]):
        fallback[int(i)] = "hold"
        error[int(i)] = "invalid decision: " + _decision_message(
            int(sim.errors[i]), w[i], universe, sim, int(i), config.max_leverage)
    steps = np.unique(np.r_[o["step"], np.fromiter(error, np.int64, len(error))])
    if meta.get("partial") and sim.fail_step >= 0 and sim.fail_step not in steps:
        error[sim.fail_step] = meta["error"]
        steps = np.union1d(steps, [sim.fail_step])
    status = o["status"].copy()
    if not meta["partial"]:
        status[status == _OPEN] = _CANCELLED  # end of data: open orders are cancelled
    orders = {"id": np.arange(1, len(status) + 1), "step": o["step"], "col": o["col"],
              "quantity": o["quantity"], "kind": MARKET, "level": math.nan, "reason": "rebalance",
              "status": pd.Categorical.from_codes(status, _STATUS), "filled": o["filled"],
              "fill_step": o["fill_step"]}
    fills = {"step": f["step"], "order_id": f["order"] + 1, "col": f["col"],
             "quantity": f["quantity"], "price": f["price"], "commission": f["commission"],
             "spread_cost": f["spread_cost"], "slippage_cost": f["slippage_cost"],
             "reason": pd.Categorical.from_codes(f["reason"], ("rebalance", "liquidation"))}
    decisions = {"step": steps, "weights": json_rows(weights=w[steps], symbols=universe),
                 "stop_loss": "{}", "take_profit": "{}", "confidence": math.nan,
                 "rationale": "precomputed weights (fast path)", "llm_calls": "[]", "expense": 0.0,
                 "fallback": [fallback.get(i, "") for i in steps.tolist()] if fallback else "",
                 "error": [error.get(i, "") for i in steps.tolist()] if error else ""}
    e = sim.events
    for k in range(len(e["step"])):
        at = int(e["step"][k])
        if e["kind"][k] == _LIQUIDATION:
            rec.event(step=at, time=clock[at], kind="liquidation",
                      phase="close" if e["phase"][k] else "open", equity=float(e["equity"][k]),
                      gross_exposure=float(e["gross"][k]),
                      maintenance_margin=float(config.maintenance_margin))
        elif e["kind"][k] == _SHRUNK:  # equity column holds the quantity asked for
            rec.event(step=at, time=clock[at], kind="order_shrunk",
                      symbol=universe[int(e["col"][k])], requested=float(e["equity"][k]),
                      filled=float(e["filled"][k]), price=float(e["price"][k]),
                      max_leverage=float(config.max_leverage))
        else:
            rec.event(step=at, time=clock[at], kind="ruin", equity=float(e["equity"][k]))
    # capped targets still working when the run ended (the loop cancels them then)
    last = sim.fail_step if sim.fail_step >= 0 else max(n - 1, 0)
    for k in np.flatnonzero(o["working"] & o["capped"]).tolist():
        j = int(o["col"][k])
        rec.event(step=last, time=clock[last], kind="target_unreached", symbol=universe[j],
                  target=float(o["target"][k]), held=float(sim.position[last, j]),
                  remaining=float(o["quantity"][k] - o["filled"][k]))
    meta["seconds"] = round(_time.perf_counter() - started, 6)
    from tradesim.rewards.metrics import compute_metrics

    return rec.build_from_arrays(
        config=config.model_dump(mode="json"), fingerprints=data.fingerprints(),
        fill_mode=config.fill, orders=orders, fills=fills, decisions=decisions, benchmark=bench,
        initial_cash=config.initial_cash, meta=meta, metrics_fn=compute_metrics)
