"""Vectorised fast path: a weights matrix decided up front, run through one compiled array kernel.

For agents whose decisions do not depend on their own fills (baselines, parameter sweeps) the
weights at every bar end can be computed at once (``agent.target_weights(data)``). The kernel
then replays exactly what the event loop (:mod:`tradesim.engine.loop`) does with market orders:
shares sized at decision time from the last close and truncated to whole lots (or fractional),
fills at the next bar's open (or this bar's close with ``fill="close"``), the same commission,
half-spread, slippage/impact, participation cap (excess cancelled), short borrow fee, decision
checks (shorting, leverage, no price yet), margin liquidation and ruin. NaN weights hold.

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

from tradesim.errors import AgentDecisionError, ConfigError, LedgerInvariantError

try:
    from numba import njit as _njit
except ImportError:  # numba is optional: the same kernel runs interpreted
    def _njit(**_: Any) -> Any:
        return lambda fn: fn

_YEAR_NS = 365.25 * 86_400 * 1e9  # the same year as tradesim.engine.costs.borrow_fee
_TOL = 1e-9  # the ledger's relative tolerance for leverage checks

# decision error codes (per step) shared by the kernel and the messages below
_OK, _NEG, _NO_PRICE, _NONFINITE, _GROSS, _LEVERAGE = 0, 1, 2, 3, 4, 5
# order status codes
_OPEN, _FILLED, _PARTIAL, _CANCELLED = 0, 1, 2, 3
_STATUS = ("open", "filled", "partial", "cancelled")
_LIQUIDATION, _RUIN = 1, 2


@dataclass(frozen=True)
class CostParams:
    """Cost model and account rules as plain numbers for the kernel (see ``CostModel``)."""

    initial_cash: float = 100_000.0
    commission_fixed: float = 0.0
    commission_bps: float = 0.0
    half_spread_bps: float = 0.0
    slippage_bps: float = 0.0
    impact_coef: float = 0.0
    participation_cap: float | None = None
    borrow_bps_annual: float = 0.0
    lot_size: float = 1.0
    fractional: bool = False
    allow_short: bool = False
    max_leverage: float = 1.0
    maintenance_margin: float = 0.25
    fill: str = "next_open"

    @classmethod
    def from_config(cls, config: Any) -> CostParams:
        """From a ``BacktestConfig`` (its ``costs`` and account fields)."""
        c = config.costs
        return cls(initial_cash=config.initial_cash, commission_fixed=c.commission_fixed,
                   commission_bps=c.commission_bps, half_spread_bps=c.half_spread_bps,
                   slippage_bps=c.slippage_bps, impact_coef=c.impact_coef,
                   participation_cap=c.participation_cap, borrow_bps_annual=c.borrow_bps_annual,
                   lot_size=config.lot_size, fractional=config.fractional,
                   allow_short=config.allow_short, max_leverage=config.max_leverage,
                   maintenance_margin=config.maintenance_margin, fill=config.fill)


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
    orders: dict[str, np.ndarray]  # step, col, qty, filled, status, fill_step
    events: dict[str, np.ndarray]  # step, kind, phase (0 open, 1 close), equity, gross

    @property
    def final_equity(self) -> float:
        return float(self.equity[self.steps - 1]) if self.steps else math.nan


@_njit(cache=True)
def _book(k, i, j, q, px, vol, oid, reason, pos, state, cp, f_i, f_f):
    """Book one fill of ``q`` shares of column ``j`` at ``px`` (the ledger's arithmetic)."""
    notional = abs(q) * px
    comm = cp[0] + notional * (cp[1] * 1e-4)
    spread = notional * (cp[2] * 1e-4)
    slip = notional * (cp[3] * 1e-4)
    if cp[4] != 0.0:
        part = abs(q) / vol if vol > 0 else 1.0
        slip = slip + notional * cp[4] * math.sqrt(min(part, 1.0))
    pos[j] += q
    state[0] -= q * px + comm + spread + slip
    state[1] += comm
    state[2] += spread
    state[3] += slip
    f_i[k, 0], f_i[k, 1], f_i[k, 2], f_i[k, 3] = i, oid, j, reason
    f_f[k, 0], f_f[k, 1], f_f[k, 2], f_f[k, 3], f_f[k, 4] = q, px, comm, spread, slip


@_njit(cache=True)
def _execute(i, ref, vol, pos, pending, state, cp, o_i, o_f, f_i, f_f, nf):
    """Fill every pending market order at ``ref`` (NaN: it waits), capped by volume."""
    cap = cp[5]
    for j in range(pos.shape[0]):
        k = pending[j]
        if k < 0 or ref[j] != ref[j]:
            continue
        remaining = o_f[k, 0] - o_f[k, 1]
        qty = remaining
        if cap == cap:
            v = vol[j] if vol[j] == vol[j] else 0.0
            room = max(cap * v, 0.0)
            qty = math.copysign(min(abs(remaining), room), remaining)
        pending[j] = -1
        if qty == 0.0:
            o_i[k, 2] = 3  # cancelled
            continue
        o_f[k, 1] += qty
        o_i[k, 2] = 1 if qty == remaining else 2
        o_i[k, 3] = i
        _book(nf, i, j, qty, ref[j], vol[j], k, 0, pos, state, cp, f_i, f_f)
        nf += 1
    return nf


@_njit(cache=True)
def _margin(i, phase, prices, vol, pos, marks, pending, state, cp, mm, o_i, f_i, f_f, nf,
            e_i, e_f, ne):
    """Liquidate everything tradable when equity < maintenance margin x gross (as the loop)."""
    gross = 0.0
    eq = state[0]
    for j in range(pos.shape[0]):
        if pos[j] != 0.0:
            m = marks[j] if prices[j] != prices[j] else prices[j]
            gross += abs(pos[j] * m)
            eq += pos[j] * m
    if gross == 0.0 or eq >= mm * gross:
        return nf, ne, False
    e_i[ne, 0], e_i[ne, 1], e_i[ne, 2] = i, 1, phase
    e_f[ne, 0], e_f[ne, 1] = eq, gross
    ne += 1
    for j in range(pos.shape[0]):
        k = pending[j]
        if k >= 0:
            o_i[k, 2] = 3
            pending[j] = -1
    for j in range(pos.shape[0]):
        if pos[j] != 0.0 and prices[j] == prices[j]:
            _book(nf, i, j, -pos[j], prices[j], vol[j], -1, 1, pos, state, cp, f_i, f_f)
            nf += 1
    return nf, ne, True


@_njit(cache=True)
def _kernel(o, c, v, w, elapsed, err_in, cp, acct, hold_on_error,
            eq_out, cash_out, gross_out, net_out, costs_out, pre_out, pos_out, marks_out,
            err_out, o_i, o_f, f_i, f_f, e_i, e_f):
    """One run over T bars; returns (status, fail step, steps, fills, orders, events)."""
    t_len, n = c.shape
    cash0, lot, fractional, max_lev, mm, close_fill = (acct[0], acct[1], acct[2] != 0.0,
                                                        acct[3], acct[4], acct[5] != 0.0)
    pos = np.zeros(n)
    marks = np.full(n, np.nan)
    pending = np.full(n, -1, np.int64)
    sized = np.zeros(n)
    target = np.zeros(n)
    # cash, commission, spread, slippage, borrow
    state = np.array([cash0, 0.0, 0.0, 0.0, 0.0])
    nf = 0
    no = 0
    ne = 0
    last_costs = 0.0
    for i in range(t_len):
        has_pos = False
        for j in range(n):
            if pos[j] != 0.0:
                has_pos = True
        if has_pos and i > 0 and cp[6] != 0.0 and elapsed[i] > 0:
            short = 0.0
            for j in range(n):
                if pos[j] < 0:
                    short += -pos[j] * marks[j]
            fee = short * cp[6] * 1e-4 * elapsed[i] / _YEAR_NS
            if fee != 0.0:
                state[0] -= fee
                state[4] += fee
        liquidated = False
        if has_pos:
            nf, ne, liq = _margin(i, 0, o[i], v[i], pos, marks, pending, state, cp, mm, o_i,
                                  f_i, f_f, nf, e_i, e_f, ne)
            liquidated = liquidated or liq
        if not close_fill:
            nf = _execute(i, o[i], v[i], pos, pending, state, cp, o_i, o_f, f_i, f_f, nf)
        for j in range(n):
            if c[i, j] == c[i, j]:
                marks[j] = c[i, j]
        has_pos = False
        for j in range(n):
            if pos[j] != 0.0:
                has_pos = True
        if has_pos:
            nf, ne, liq = _margin(i, 1, c[i], v[i], pos, marks, pending, state, cp, mm, o_i,
                                  f_i, f_f, nf, e_i, e_f, ne)
            liquidated = liquidated or liq
        equity = state[0]
        gross_now = 0.0
        for j in range(n):
            if pos[j] != 0.0:
                equity += pos[j] * marks[j]
        pre_out[i] = equity
        code = err_in[i]
        active = False
        for j in range(n):
            if w[i, j] == w[i, j]:
                active = True
        if active and code == 0:  # the loop's gross check with kept positions
            gross = 0.0
            for j in range(n):
                hw = pos[j] * marks[j] / equity if (pos[j] != 0.0 and equity > 0) else 0.0
                gross_now += abs(hw)
                gross += abs(w[i, j]) if w[i, j] == w[i, j] else abs(hw)
            if gross > max_lev * (1 + _TOL) and gross > gross_now * (1 + _TOL):
                code = 4
        if code != 0:
            if not hold_on_error:
                status = code
                active = False
            else:
                err_out[i] = code
                active = False
                status = 0
        else:
            status = 0
        if active:
            held_gross = 0.0
            for j in range(n):
                if pos[j] != 0.0:
                    held_gross += abs(pos[j] * marks[j])
                if w[i, j] != w[i, j]:
                    target[j] = pos[j]
                    continue
                raw = w[i, j] * equity / marks[j]
                s = raw if fractional else np.trunc(raw / lot) * lot
                sized[j] = s if s == s else 0.0
                target[j] = sized[j]
            gross_t = 0.0
            for j in range(n):
                if target[j] != 0.0:
                    gross_t += abs(target[j] * marks[j])
            cap_lev = max(max_lev, held_gross / equity if equity > 0 else 0.0)
            if gross_t > 0 and (equity <= 0 or gross_t > cap_lev * equity * (1 + _TOL) + 1e-9):
                return 5, i, i, nf, no, ne
            created = False
            for j in range(n):
                if w[i, j] != w[i, j]:
                    continue
                if pending[j] >= 0:
                    o_i[pending[j], 2] = 3
                    pending[j] = -1
                delta = target[j] - pos[j]
                if abs(delta) > 1e-12:
                    o_i[no, 0], o_i[no, 1], o_i[no, 2], o_i[no, 3] = i, j, 0, -1
                    o_f[no, 0], o_f[no, 1] = delta, 0.0
                    pending[j] = no
                    no += 1
                    created = True
            if close_fill and created:
                nf = _execute(i, c[i], v[i], pos, pending, state, cp, o_i, o_f, f_i, f_f, nf)
        equity = state[0]
        gross = 0.0
        net = 0.0
        for j in range(n):
            if pos[j] != 0.0:
                value = pos[j] * marks[j]
                equity += value
                gross += abs(value)
                net += value
        costs = state[1] + state[2] + state[3] + state[4]
        eq_out[i], cash_out[i], gross_out[i], net_out[i] = equity, state[0], gross, net
        costs_out[i] = costs - last_costs
        last_costs = costs
        pos_out[i] = pos
        marks_out[i] = marks
        if status != 0:
            return status, i, i + 1, nf, no, ne
        if equity < 0 and not liquidated:
            return 6, i, i, nf, no, ne  # negative equity without a liquidation: the ledger raises
        if equity <= 0:
            e_i[ne, 0], e_i[ne, 1], e_i[ne, 2] = i, 2, 0
            e_f[ne, 0], e_f[ne, 1] = equity, gross
            ne += 1
            return 0, -1, i + 1, nf, no, ne
    return 0, -1, t_len, nf, no, ne


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
                     weights: np.ndarray, params: CostParams, elapsed_ns: np.ndarray | None = None,
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
        return _simulate_one(o, c, v, w_all, params, elapsed_ns, hold_on_error)
    if w_all.ndim != 3:
        raise ConfigError(f"weights must be (T, N) or (K, T, N), got shape {w_all.shape}")
    return [_simulate_one(o, c, v, w, params, elapsed_ns, hold_on_error) for w in w_all]


def _simulate_one(o: np.ndarray, c: np.ndarray, v: np.ndarray, w: np.ndarray, p: CostParams,
                  elapsed_ns: np.ndarray | None, hold_on_error: bool) -> SimResult:
    t_len, n = c.shape
    if w.shape != (t_len, n):
        raise ConfigError(f"weights have shape {w.shape} but the bars are {(t_len, n)} "
                          "(one row per bar, one column per symbol)")
    if p.fill not in ("next_open", "close"):
        raise ConfigError(f"fill must be next_open or close, got {p.fill!r}")
    w = np.ascontiguousarray(w)
    elapsed = (np.full(t_len, 86_400e9) if elapsed_ns is None
               else np.ascontiguousarray(elapsed_ns, dtype=np.float64))
    cap = math.nan if p.participation_cap is None else float(p.participation_cap)
    cp = np.array([p.commission_fixed, p.commission_bps, p.half_spread_bps, p.slippage_bps,
                   p.impact_coef, cap, p.borrow_bps_annual], dtype=np.float64)
    acct = np.array([p.initial_cash, p.lot_size, float(p.fractional), p.max_leverage,
                     p.maintenance_margin, float(p.fill == "close")], dtype=np.float64)
    err_in = _static_errors(w, c, p.allow_short)
    n_orders = int((~np.isnan(w)).sum())
    cap_fills = 2 * n_orders + n + 1  # liquidations close at most what orders opened
    per_step = {k: np.full(t_len, np.nan) for k in ("equity", "cash", "gross", "net", "costs",
                                                     "pre")}
    pos_out, marks_out = np.zeros((t_len, n)), np.full((t_len, n), np.nan)
    err_out = np.zeros(t_len, dtype=np.int64)
    o_i, o_f = np.zeros((n_orders + 1, 4), np.int64), np.zeros((n_orders + 1, 2))
    f_i, f_f = np.zeros((cap_fills, 4), np.int64), np.zeros((cap_fills, 5))
    e_i, e_f = np.zeros((cap_fills + 1, 3), np.int64), np.zeros((cap_fills + 1, 2))
    status, fail, steps, nf, no, ne = _kernel(
        o, c, v, w, elapsed, err_in, cp, acct, hold_on_error, per_step["equity"],
        per_step["cash"], per_step["gross"], per_step["net"], per_step["costs"], per_step["pre"],
        pos_out, marks_out, err_out, o_i, o_f, f_i, f_f, e_i, e_f)
    fills = {"step": f_i[:nf, 0], "order": f_i[:nf, 1], "col": f_i[:nf, 2], "reason": f_i[:nf, 3],
             "quantity": f_f[:nf, 0], "price": f_f[:nf, 1], "commission": f_f[:nf, 2],
             "spread_cost": f_f[:nf, 3], "slippage_cost": f_f[:nf, 4]}
    orders = {"step": o_i[:no, 0], "col": o_i[:no, 1], "status": o_i[:no, 2],
              "fill_step": o_i[:no, 3], "quantity": o_f[:no, 0], "filled": o_f[:no, 1]}
    events = {"step": e_i[:ne, 0], "kind": e_i[:ne, 1], "phase": e_i[:ne, 2],
              "equity": e_f[:ne, 0], "gross": e_f[:ne, 1]}
    return SimResult(steps=int(steps), status=int(status), fail_step=int(fail),
                     equity=per_step["equity"], cash=per_step["cash"], gross=per_step["gross"],
                     net=per_step["net"], costs=per_step["costs"], equity_pre=per_step["pre"],
                     position=pos_out, marks=marks_out, errors=err_out, fills=fills,
                     orders=orders, events=events)
