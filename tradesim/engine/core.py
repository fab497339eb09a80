"""The account core: every rule of sizing, costs, participation, borrow fee, margin, liquidation,
exits and order fills, written once and compiled.

The event loop (:mod:`tradesim.engine.account`, :mod:`tradesim.engine.broker`) calls these
rules from Python per fill, per decision and per levered bar; the fast path's :func:`kernel`
and the single gymnasium env's :func:`step_book` call them inside compiled loops; the batched
torch env (it runs on a GPU) is the one twin, held to them by the parity tests. No pandas here:
:mod:`tradesim.engine.fastpath` wraps the kernel for DataFrames and run records.

Everything is compiled with numba when it is installed (cached on disk, so a fresh process pays
no compile) and runs as plain Python otherwise. Settings travel as two float arrays built once
by :func:`account_arrays`: ``cp`` (costs, slots ``_CP_*``) and ``acct`` (account rules,
``_ACCT_*``); a book's running state is ``state`` (``_ST_*``). Order, fill and event records are
pairs of int/float arrays with named columns (``_O_*``, ``_F_*``, ``_E_*``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tradesim.errors import ConfigError

if TYPE_CHECKING:
    from tradesim.engine.account import AccountConfig

try:
    from numba import njit as _njit
except ImportError:  # numba is optional: the same functions run interpreted
    def _njit(**_: Any) -> Any:  # type: ignore[no-redef]
        return lambda fn: fn

YEAR_NS = 365.25 * 86_400 * 1e9  # a year in nanoseconds: borrow fees accrue over elapsed time
SESSION_NS = 23_400 * 1e9  # a 6.5-hour equity session: bars per day = session / bar spacing
_TOL = 1e-9  # relative tolerance of the leverage checks (the ledger's)
_MAX_FLOAT = float(np.finfo(np.float64).max)

# decision error codes (per step); ERR_NEG_EQUITY: equity fell below zero without a liquidation
ERR_OK, ERR_NEG, ERR_NO_PRICE, ERR_NONFINITE, ERR_GROSS, ERR_LEVERAGE, ERR_NEG_EQUITY = range(7)
# order kinds (the broker's "market", "limit", "stop") and order states
KIND_MARKET, KIND_LIMIT, KIND_STOP = 0, 1, 2
ORDER_OPEN, ORDER_FILLED, ORDER_PARTIAL, ORDER_CANCELLED, ORDER_REPLACED = range(5)
ORDER_STATUS = ("open", "filled", "partial", "cancelled", "replaced")
# exits: none, stop-loss, take-profit
EXIT_NONE, EXIT_STOP, EXIT_TARGET = 0, 1, 2
# event kinds, fill reasons, margin-check phases
EV_LIQUIDATION, EV_RUIN, EV_SHRUNK = 1, 2, 3
FILL_REBALANCE, FILL_LIQUIDATED = 0, 1
AT_OPEN, AT_CLOSE = 0, 1
# cp, the cost parameters (account_arrays); NaN cap: none, NaN bars per day: inferred
_CP_COMMISSION_FIXED, _CP_COMMISSION_BPS, _CP_HALF_SPREAD_BPS, _CP_SLIPPAGE_BPS = 0, 1, 2, 3
_CP_IMPACT, _CP_PARTICIPATION_CAP, _CP_BORROW_BPS, _CP_BARS_PER_DAY = 4, 5, 6, 7
_CP_SIZE = 8
# acct, the account rules (account_arrays)
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


def account_arrays(account: AccountConfig) -> tuple[np.ndarray, np.ndarray]:
    """The ``cp`` and ``acct`` arrays (slots ``_CP_*``, ``_ACCT_*``) of the account's rules:
    NaN cap = none, NaN bars per day = inferred from the bar spacing."""
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


# --- the rules, one position or one book at a time ------------------------------------------


@_njit(cache=True)
def fill_charges(q: float, px: float, vol: float, bpd: float, cp: np.ndarray
                 ) -> tuple[float, float, float]:
    """Commission, half-spread and slippage (with square-root impact) of a fill of ``q`` at ``px``.

    Only ``|q|`` matters; zero costs nothing. ``bpd`` (bars per day) scales the bar's volume to
    the day's for the impact's participation (see :mod:`tradesim.engine.costs`).
    """
    notional = abs(q) * px
    comm = cp[_CP_COMMISSION_FIXED] + notional * (cp[_CP_COMMISSION_BPS] * 1e-4) if q != 0.0 else 0.0
    spread = notional * (cp[_CP_HALF_SPREAD_BPS] * 1e-4)
    slip = notional * (cp[_CP_SLIPPAGE_BPS] * 1e-4)
    if cp[_CP_IMPACT] != 0.0:
        day = vol * bpd
        part = abs(q) / day if day > 0 else 1.0
        slip = slip + notional * cp[_CP_IMPACT] * math.sqrt(min(part, 1.0))
    return comm, spread, slip


@_njit(cache=True, inline="always")
def lots_down(q: float, lot: float, fractional: bool) -> float:
    """``q`` rounded toward zero to whole lots (unchanged when fractional)."""
    if fractional or q == 0.0:
        return q
    return math.copysign(math.floor(abs(q) / lot) * lot, q)


@_njit(cache=True, inline="always")
def reduces(qty: float, held: float) -> bool:
    """Whether an order of ``qty`` only reduces a position of ``held`` (it frees cash, so it
    fills before the orders that spend it)."""
    return held != 0.0 and (held > 0) != (qty > 0) and abs(qty) <= abs(held)


@_njit(cache=True, inline="always")
def capped_qty(qty: float, vol: float, used: float, cp: np.ndarray, acct: np.ndarray) -> float:
    """What of ``qty`` the participation cap lets trade in a bar of volume ``vol`` (NaN: none)
    where ``used`` shares of the column already traded; whole lots. No cap: all of it."""
    cap = cp[_CP_PARTICIPATION_CAP]
    if cap != cap:
        return qty
    room = max(cap * (vol if vol == vol else 0.0) - used, 0.0)
    if abs(qty) <= room:
        return qty
    return lots_down(math.copysign(room, qty), acct[_ACCT_LOT], acct[_ACCT_FRACTIONAL] != 0.0)


@_njit(cache=True)
def affordable(j: int, q: float, px: float, vol: float, ref: np.ndarray, pos: np.ndarray,
               marks: np.ndarray, cash: float, bpd: float, cp: np.ndarray, acct: np.ndarray
               ) -> float:
    """The part of a fill of ``q`` shares of column ``j`` at ``px`` the account can pay for.

    The book after the fill, valued at this phase's fill prices ``ref`` (``marks`` where NaN),
    must keep gross <= max leverage x equity net of the fill's costs; with leverage 1 and no
    shorts that is "cash never goes negative". The part that reduces the position always
    fills; the opening part shrinks to whole lots. Costs use the impact rate of the requested
    size, an upper bound for any smaller fill, so the answer is closed-form and safe.
    """
    equity = cash
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
        day = vol * bpd
        part = size / day if day > 0 else 1.0
        rate += cp[_CP_IMPACT] * math.sqrt(min(part, 1.0))
    lev = acct[_ACCT_MAX_LEVERAGE]
    room = lev * (equity - cp[_CP_COMMISSION_FIXED] - reduce * px * rate) - gross_rest - base * px
    most = room / (px * (1.0 + lev * rate))
    if most >= opening:
        return q
    return math.copysign(reduce + lots_down(max(most, 0.0), acct[_ACCT_LOT],
                                            acct[_ACCT_FRACTIONAL] != 0.0), q)


@_njit(cache=True, inline="always")
def target_shares(weight: float, equity: float, price: float, lot: float, fractional: bool
                  ) -> float:
    """Shares that hold ``weight`` of ``equity`` at ``price``, truncated toward zero to whole
    lots; a NaN size is 0 and an infinite one the largest float (as ``np.nan_to_num``)."""
    num = weight * equity
    if price != 0.0:
        raw = num / price
    elif num == 0.0 or num != num:  # NumPy's x / 0: NaN for 0 / 0, +-inf otherwise
        raw = math.nan
    else:
        raw = math.copysign(math.inf, num) * math.copysign(1.0, price)
    if not fractional and math.isfinite(raw):
        raw = np.trunc(raw / lot) * lot
    if math.isfinite(raw):
        return raw
    return 0.0 if raw != raw else math.copysign(_MAX_FLOAT, raw)


@_njit(cache=True, inline="always")
def size_targets(w: np.ndarray, equity: float, pos: np.ndarray, marks: np.ndarray,
                 acct: np.ndarray, target: np.ndarray) -> float:
    """Target shares for weights ``w`` of ``equity`` at ``marks`` into ``target`` (NaN keeps the
    position). Returns the gross exposure of the orders' targets when it breaks the leverage
    cap (max leverage, or the gross already held when that is more), else -1: the caller raises,
    since sizing truncates toward zero and so never adds exposure to checked weights."""
    lot, fractional = acct[_ACCT_LOT], acct[_ACCT_FRACTIONAL] != 0.0
    held_gross = 0.0
    gross_t = 0.0
    for j in range(pos.shape[0]):
        if pos[j] != 0.0:
            held_gross += abs(pos[j] * marks[j])
        if w[j] != w[j]:
            target[j] = pos[j]
            continue
        target[j] = target_shares(w[j], equity, marks[j], lot, fractional)
        if target[j] != 0.0:
            gross_t += abs(target[j] * marks[j])
    cap_lev = max(acct[_ACCT_MAX_LEVERAGE], held_gross / equity if equity > 0 else 0.0)
    if gross_t > 0 and (equity <= 0 or gross_t > cap_lev * equity * (1 + _TOL) + 1e-9):
        return gross_t
    return -1.0


@_njit(cache=True, inline="always")
def gross_weight(w: np.ndarray, equity: float, pos: np.ndarray, marks: np.ndarray,
                 max_lev: float) -> float:
    """The decision check: the gross of the weights ``w`` gives when it is beyond ``max_lev``
    and the decision raises the book's gross (kept positions, NaN, at their weight now), else -1.

    Kept positions do not count against the cap here: their weights drift with prices, so an
    agent that restates some symbols could not know its room. The account fills new exposure
    only up to what it can afford at the fill (:func:`affordable`, an ``order_shrunk`` event).
    """
    gross_now = 0.0
    gross = 0.0
    given = 0.0
    for j in range(pos.shape[0]):
        hw = pos[j] * marks[j] / equity if (pos[j] != 0.0 and equity > 0) else 0.0
        gross_now += abs(hw)
        if w[j] == w[j]:
            given += abs(w[j])
            gross += abs(w[j])
        else:
            gross += abs(hw)
    if given > max_lev * (1 + _TOL) and gross > gross_now * (1 + _TOL):
        return given
    return -1.0


@_njit(cache=True, inline="always")
def bars_per_day(gap_ns: float) -> float:
    """Bars in a trading day for bars ``gap_ns`` apart (the smallest spacing seen)."""
    return max(1.0, SESSION_NS / gap_ns)


@_njit(cache=True, inline="always")
def borrow_fee(pos: np.ndarray, marks: np.ndarray, bps_annual: float, elapsed_ns: float
               ) -> float:
    """Fee for holding the short positions of ``pos`` at ``marks`` over ``elapsed_ns``."""
    if bps_annual == 0.0 or elapsed_ns <= 0:
        return 0.0
    short = 0.0
    for j in range(pos.shape[0]):
        if pos[j] < 0:
            short += -pos[j] * marks[j]
    return short * bps_annual * 1e-4 * elapsed_ns / YEAR_NS


@_njit(cache=True, inline="always")
def margin_state(prices: np.ndarray, pos: np.ndarray, marks: np.ndarray, cash: float
                 ) -> tuple[float, float]:
    """Equity and gross exposure of the book at ``prices`` (``marks`` where NaN): what the
    margin check compares (liquidate when equity < maintenance margin x gross)."""
    gross = 0.0
    eq = cash
    for j in range(pos.shape[0]):
        if pos[j] != 0.0:
            m = marks[j] if prices[j] != prices[j] else prices[j]
            gross += abs(pos[j] * m)
            eq += pos[j] * m
    return eq, gross


@_njit(cache=True, inline="always")
def margin_breached(equity: float, gross: float, maintenance: float) -> bool:
    """Whether a book of ``equity`` and ``gross`` exposure is below the maintenance margin."""
    return not (gross == 0.0 or equity >= maintenance * gross)


@_njit(cache=True)
def order_price(kind: int, quantity: float, level: float, open_: float, high: float,
                low: float) -> float:
    """Fill price of a market/limit/stop order (``KIND_*``) in a bar (NaN: no trigger).

    Limit and stop orders trigger against the bar's high/low; a level the open already passed
    fills at the open (gap-through).
    """
    if kind == KIND_MARKET:
        return open_
    buy = quantity > 0
    if kind == KIND_LIMIT:
        if buy:
            return min(open_, level) if low <= level else math.nan
        return max(open_, level) if high >= level else math.nan
    if buy:  # stop
        return max(open_, level) if high >= level else math.nan
    return min(open_, level) if low <= level else math.nan


@_njit(cache=True)
def _fmin(a: float, b: float) -> float:
    return b if a != a else a if b != b else min(a, b)


@_njit(cache=True)
def _fmax(a: float, b: float) -> float:
    return b if a != a else a if b != b else max(a, b)


@_njit(cache=True)
def exit_fill(quantity: float, stop: float, target: float, open_: float, high: float,
              low: float) -> tuple[float, int]:
    """One position's exit in a bar: (price or NaN, ``EXIT_NONE``/``EXIT_STOP``/``EXIT_TARGET``).

    Long: stop hit when low <= stop, target when high >= target; short mirrors it. A level the
    open already passed fills at the open; both inside the bar -> the stop (adverse first).
    """
    long, short = quantity > 0, quantity < 0
    stop_hit = (long and low <= stop) or (short and high >= stop)
    tgt_hit = (long and high >= target) or (short and low <= target)
    stop_gap = (long and open_ <= stop) or (short and open_ >= stop)
    tgt_gap = (long and open_ >= target) or (short and open_ <= target)
    use_tgt = tgt_hit and (tgt_gap or not stop_hit) and not stop_gap
    if stop_hit and not use_tgt:
        return (_fmin(open_, stop) if long else _fmax(open_, stop)), EXIT_STOP
    if use_tgt:
        return (_fmax(open_, target) if long else _fmin(open_, target)), EXIT_TARGET
    return math.nan, EXIT_NONE


# --- a book in arrays: the kernel's bar ------------------------------------------------------


@_njit(cache=True)
def _book(k, i, j, q, px, vol, oid, reason, pos, state, cp, f_i, f_f):
    """Book one fill of ``q`` shares of column ``j`` at ``px`` (the ledger's arithmetic)."""
    comm, spread, slip = fill_charges(q, px, vol, state[_ST_BARS_PER_DAY], cp)
    pos[j] += q
    state[_ST_CASH] -= q * px + comm + spread + slip
    state[_ST_COMMISSION] += comm
    state[_ST_SPREAD] += spread
    state[_ST_SLIPPAGE] += slip
    f_i[k, _F_STEP], f_i[k, _F_ORDER], f_i[k, _F_COL], f_i[k, _F_REASON] = i, oid, j, reason
    f_f[k, _F_QTY], f_f[k, _F_PRICE] = q, px
    f_f[k, _F_COMMISSION], f_f[k, _F_SPREAD], f_f[k, _F_SLIPPAGE] = comm, spread, slip


@_njit(cache=True)
def _execute(i, ref, vol, pos, marks, pending, state, cp, acct, o_i, o_f, f_i, f_f, nf,
             e_i, e_f, ne):
    """Fill every pending market order at ``ref`` (NaN: it waits), capped by volume and cash.

    Orders that only reduce a position go first (they free cash); then the rest, each sized
    down to what the account can pay for at the fill price (an ``order_shrunk`` event, the rest
    cancelled). An order the participation cap holds back stays pending (it keeps working).
    """
    for phase in range(2):
        for j in range(pos.shape[0]):
            k = pending[j]
            if k < 0 or ref[j] != ref[j]:
                continue
            remaining = o_f[k, _O_QTY] - o_f[k, _O_FILLED]
            if reduces(remaining, pos[j]) != (phase == 0):
                continue
            qty = capped_qty(remaining, vol[j], 0.0, cp, acct)
            working = qty != remaining  # the cap held part back: the rest keeps working
            if working:
                o_i[k, _O_CAPPED] = 1
            if qty != 0.0:
                asked = qty
                qty = affordable(j, qty, ref[j], vol[j], ref, pos, marks, state[_ST_CASH],
                                 state[_ST_BARS_PER_DAY], cp, acct)
                if qty != asked:
                    working = False
                    e_i[ne, _E_STEP], e_i[ne, _E_KIND], e_i[ne, _E_PHASE] = i, EV_SHRUNK, AT_OPEN
                    e_i[ne, _E_COL] = j
                    e_f[ne, _E_EQUITY], e_f[ne, _E_GROSS], e_f[ne, _E_PRICE] = asked, qty, ref[j]
                    ne += 1
            if not working:
                pending[j] = -1
            if qty == 0.0:
                if not working and o_i[k, _O_STATUS] == ORDER_OPEN:
                    o_i[k, _O_STATUS] = ORDER_CANCELLED
                continue
            o_f[k, _O_FILLED] += qty
            o_i[k, _O_STATUS] = ORDER_FILLED if qty == remaining else ORDER_PARTIAL
            o_i[k, _O_FILL_STEP] = i
            _book(nf, i, j, qty, ref[j], vol[j], k, FILL_REBALANCE, pos, state, cp, f_i, f_f)
            nf += 1
    return nf, ne


@_njit(cache=True)
def _liquidate(i, phase, eq, gross, prices, vol, pos, pending, state, cp, o_i, f_i, f_f, nf,
               e_i, e_f, ne):
    """Margin call: a ``liquidation`` event (book at ``eq``/``gross``), working orders cancelled,
    everything tradable at ``prices`` closed out; returns (fills, events)."""
    e_i[ne, _E_STEP], e_i[ne, _E_KIND], e_i[ne, _E_PHASE] = i, EV_LIQUIDATION, phase
    e_f[ne, _E_EQUITY], e_f[ne, _E_GROSS] = eq, gross
    ne += 1
    for j in range(pos.shape[0]):
        k = pending[j]
        if k >= 0:
            if o_i[k, _O_STATUS] == ORDER_OPEN:
                o_i[k, _O_STATUS] = ORDER_CANCELLED  # a partly filled one stays partial
            pending[j] = -1
    for j in range(pos.shape[0]):
        if pos[j] != 0.0 and prices[j] == prices[j]:
            _book(nf, i, j, -pos[j], prices[j], vol[j], -1, FILL_LIQUIDATED, pos, state, cp,
                  f_i, f_f)
            nf += 1
    return nf, ne


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
def _has_position(pos: np.ndarray) -> bool:
    """Whether the book holds anything (a loop: numba compiles no generator into ``any``)."""
    for j in range(pos.shape[0]):  # noqa: SIM110
        if pos[j] != 0.0:
            return True
    return False


@_njit(cache=True, inline="always")
def _bar_open(i, elapsed, o, v, pos, marks, pending, state, cp, acct, o_i, o_f, f_i, f_f, nf,
              e_i, e_f, ne):
    """Bar ``i`` up to its open: bar spacing, short borrow fee over ``elapsed`` ns, margin check
    at the open ``o``, then pending market orders filled there (unless fills are at the close).

    Returns (fills, events, liquidated).
    """
    if i > 0 and 0.0 < elapsed < state[_ST_GAP]:
        state[_ST_GAP] = elapsed
        if cp[_CP_BARS_PER_DAY] != cp[_CP_BARS_PER_DAY]:
            state[_ST_BARS_PER_DAY] = bars_per_day(elapsed)
    has_pos = _has_position(pos)
    if has_pos and i > 0:
        fee = borrow_fee(pos, marks, cp[_CP_BORROW_BPS], elapsed)
        if fee != 0.0:
            state[_ST_CASH] -= fee
            state[_ST_BORROW] += fee
    liquidated = False
    if has_pos:
        eq, gross = margin_state(o, pos, marks, state[_ST_CASH])
        if margin_breached(eq, gross, acct[_ACCT_MAINTENANCE]):
            nf, ne = _liquidate(i, AT_OPEN, eq, gross, o, v, pos, pending, state, cp, o_i, f_i,
                                f_f, nf, e_i, e_f, ne)
            liquidated = True
    if acct[_ACCT_CLOSE_FILL] == 0.0:
        waiting = False
        for j in range(pos.shape[0]):
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
    for j in range(pos.shape[0]):
        if c[j] == c[j]:
            marks[j] = c[j]
    if _has_position(pos):
        eq, gross = margin_state(c, pos, marks, state[_ST_CASH])
        if margin_breached(eq, gross, acct[_ACCT_MAINTENANCE]):
            nf, ne = _liquidate(i, AT_CLOSE, eq, gross, c, v, pos, pending, state, cp, o_i,
                                f_i, f_f, nf, e_i, e_f, ne)
            return nf, ne, True
    return nf, ne, False


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
            o_i[pending[j], _O_STATUS] = ORDER_REPLACED
            pending[j] = -1
        delta = target[j] - pos[j]
        if abs(delta) > 1e-12:
            k = j if per_column else no
            o_i[k, _O_STEP], o_i[k, _O_COL], o_i[k, _O_STATUS] = i, j, ORDER_OPEN
            o_i[k, _O_FILL_STEP], o_i[k, _O_CAPPED] = -1, 0
            o_f[k, _O_QTY], o_f[k, _O_FILLED], o_f[k, _O_TARGET] = delta, 0.0, target[j]
            pending[j] = k
            if not per_column:
                no += 1
    return no


@_njit(cache=True)
def kernel(o, c, v, w, elapsed, err_in, cp, acct, hold_on_error,  # noqa: C901 - one numba loop
           eq_out, cash_out, gross_out, net_out, costs_out, pre_out, pos_out, marks_out,
           err_out, o_i, o_f, f_i, f_f, e_i, e_f, pending):
    """One run of weights ``w`` over T bars; returns (status, fail step, steps, fills, orders,
    events). ``pending`` (N, -1 = none) holds each symbol's working order as the run ended.
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
            code = ERR_OK
        if active and code == ERR_OK and gross_weight(w[i], equity, pos, marks,
                                                      acct[_ACCT_MAX_LEVERAGE]) >= 0:
            code = ERR_GROSS
        status = ERR_OK
        if code != ERR_OK:
            active = False
            if hold_on_error:
                err_out[i] = code
            else:
                status = code
        if active:
            if size_targets(w[i], equity, pos, marks, acct, target) >= 0:
                return ERR_LEVERAGE, i, i, nf, no, ne
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
        if status != ERR_OK:
            return status, i, i + 1, nf, no, ne
        if equity < 0 and not liquidated:
            return ERR_NEG_EQUITY, i, i, nf, no, ne  # the ledger raises
        if equity <= 0:
            e_i[ne, _E_STEP], e_i[ne, _E_KIND], e_i[ne, _E_PHASE] = i, EV_RUIN, AT_OPEN
            e_f[ne, _E_EQUITY], e_f[ne, _E_GROSS] = equity, gross
            ne += 1
            return ERR_OK, -1, i + 1, nf, no, ne
    return ERR_OK, -1, t_len, nf, no, ne


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
        size_targets(wanted, equity, pos, marks, acct, target)
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
            comm, spread, slip = fill_charges(-pos[j], marks[j], v[j], state[_ST_BARS_PER_DAY], cp)
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
        cp, acct = account_arrays(account)
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


def _static_errors(w: np.ndarray, close: np.ndarray, allow_short: bool) -> np.ndarray:
    """Per-step decision error codes knowable without the book: inf, shorts, no price yet."""
    codes = np.zeros(w.shape[0], dtype=np.int64)
    given = ~np.isnan(w)
    seen = np.logical_or.accumulate(~np.isnan(close), axis=0)
    codes[(given & ~seen & (w != 0)).any(axis=1)] = ERR_NO_PRICE
    if not allow_short:
        codes[(given & (w < 0)).any(axis=1)] = ERR_NEG
    codes[(given & ~np.isfinite(np.where(given, w, 0.0))).any(axis=1)] = ERR_NONFINITE
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
    cp, acct = account_arrays(p)
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
    # a liquidation at each open and close (one that cannot close a symbol without bars is
    # logged again every bar), a shrunk fill per order, the ruin
    n_events = 2 * t_len + n_orders + 1
    e_i, e_f = np.zeros((n_events, 4), np.int64), np.zeros((n_events, 3))
    status, fail, steps, nf, no, ne = kernel(
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
