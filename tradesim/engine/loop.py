"""The step loop: one account stepping through bars, and the agent loop around it.

:class:`Engine` is clock-agnostic: it is fed one bar row at a time (``open_step``), takes target
weights (``rebalance``) and closes the step (``close_step``, which checks the ledger invariants).
A backtest feeds rows from arrays aligned to ``MarketData.timeline()``; the paper daemon feeds
rows as they arrive. :func:`run_loop` drives an agent through it bar by bar.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from tradesim.contracts import Agent, Decision, Feedback, Fill, Observation, Portfolio
from tradesim.data.view import MarketData, PointInTimeView
from tradesim.engine.broker import (
    LIMIT,
    MARKET,
    STOP,
    Broker,
    Order,
    check_in_bar,
    exit_prices,
    target_shares,
)
from tradesim.engine.costs import CostModel, borrow_fee
from tradesim.engine.ledger import Ledger
from tradesim.engine.record import Recorder
from tradesim.errors import AgentDecisionError, EngineError

FILL_MODES: tuple[str, ...] = ("next_open", "close")
_EXIT_REASON = {1: "stop_loss", 2: "take_profit"}


class Engine:
    """Broker + ledger of one account; processes one bar per step, whatever drives the clock."""

    def __init__(self, *, symbols: tuple[str, ...], initial_cash: float, costs: CostModel,
                 fill: str = "next_open", lot_size: float = 1.0, fractional: bool = False,
                 allow_short: bool = False, max_leverage: float = 1.0,
                 maintenance_margin: float = 0.25) -> None:
        if fill not in FILL_MODES:
            raise ValueError(f"fill must be one of {', '.join(FILL_MODES)}, got {fill!r}")
        self.symbols = tuple(symbols)
        self.costs, self.fill = costs, fill
        self.lot_size, self.fractional = float(lot_size), bool(fractional)
        self.allow_short, self.max_leverage = bool(allow_short), float(max_leverage)
        self.maintenance_margin = float(maintenance_margin)
        self.ledger = Ledger(symbols=self.symbols, initial_cash=initial_cash)
        self.broker = Broker(symbols=self.symbols, costs=costs)
        n = len(self.symbols)
        self.stop_loss = np.full(n, np.nan)
        self.take_profit = np.full(n, np.nan)
        self.fills: list[tuple[int, int, Fill]] = []  # (step, order id or 0, fill), whole run
        self.events: list[dict] = []
        self.ruined = False
        self._step_fills: list[tuple[int, Fill]] = []
        self._step_orders: list[Order] = []
        self._liquidated = False
        self._bar: tuple | None = None
        self._last_time: np.datetime64 | None = None

    # --- one step ---------------------------------------------------------------------------

    def open_step(self, *, step: int, time: np.datetime64, open: np.ndarray, high: np.ndarray,
                  low: np.ndarray, close: np.ndarray, volume: np.ndarray) -> None:
        """Bar ``step`` happened: borrow fee, margin at the open, pending orders, stops, close mark.

        NaN entries mean the symbol has no bar at this time (its orders wait, its mark stays).
        """
        L = self.ledger
        L.begin_step()
        self._step_fills, self._step_orders, self._liquidated = [], [], False
        self._bar = (step, time, open, high, low, close, volume)
        has_pos = bool(L.position.any())
        if has_pos and self._last_time is not None and self.costs.borrow_bps_annual:
            fee = borrow_fee(L.position, L.marks, self.costs.borrow_bps_annual,
                             float((time - self._last_time).astype("int64")))
            if fee:
                L.charge_borrow(fee)
        self._last_time = time
        if has_pos:
            self._margin_call(phase="open", prices=open)
        if self.broker.open_orders:
            kinds = (MARKET, LIMIT, STOP) if self.fill == "next_open" else (LIMIT, STOP)
            for order, fill in self.broker.execute(step=step, time=time, ref=open, high=high,
                                                   low=low, volume=volume, kinds=kinds):
                self._book(step, fill, order)
        if L.position.any() and (np.isfinite(self.stop_loss).any()
                                 or np.isfinite(self.take_profit).any()):
            self._exits(step, time, open, high, low, volume)
        L.mark(close)
        if L.position.any():
            self._margin_call(phase="close", prices=close)

    def rebalance(self, *, weights: np.ndarray, stop_loss: np.ndarray | None = None,
                  take_profit: np.ndarray | None = None) -> list[Order]:
        """Orders toward target ``weights`` (NaN: keep that position) sized at the last closes.

        In ``fill="close"`` mode they execute at this bar's close right away.
        """
        step, time = self._bar[0], self._bar[1]
        L = self.ledger
        equity = L.equity()
        current = L.position
        sized = target_shares(np.nan_to_num(weights), equity, L.marks, lot_size=self.lot_size,
                              fractional=self.fractional)
        target = np.where(np.isnan(weights), current, np.nan_to_num(sized))
        delta = target - current
        gross_now, _ = L.exposures()
        L.check_leverage(step=step, time=time, target=target, prices=L.marks, equity=equity,
                         max_leverage=max(self.max_leverage, gross_now / equity if equity > 0 else 0),
                         orders=self.broker.open_orders)
        orders = []
        for j in np.flatnonzero(~np.isnan(weights)):
            self.broker.cancel_all(col=int(j), kind=MARKET)
            if abs(delta[j]) > 1e-12:
                orders.append(self.broker.create(time=time, col=int(j), quantity=float(delta[j])))
        if stop_loss is not None:
            np.copyto(self.stop_loss, stop_loss, where=~np.isnan(stop_loss))
        if take_profit is not None:
            np.copyto(self.take_profit, take_profit, where=~np.isnan(take_profit))
        self._step_orders.extend(orders)
        if self.fill == "close" and orders:
            _, _, _, high, low, close, volume = self._bar
            for order, fill in self.broker.execute(step=step, time=time, ref=close, high=high,
                                                   low=low, volume=volume, kinds=(MARKET,)):
                self._book(step, fill, order)
        return orders

    def submit(self, *, symbol: str, quantity: float, kind: str = MARKET,
               level: float = math.nan) -> Order:
        """Queue an explicit order (market, limit or stop) for the next bar processed."""
        order = self.broker.create(time=self._bar[1] if self._bar else np.datetime64("NaT", "ns"),
                                   col=self.ledger.col[symbol], quantity=quantity, kind=kind,
                                   level=level, reason="order")
        self._step_orders.append(order)
        return order

    def close_step(self) -> float:
        """Check the ledger invariants for this step; returns equity. Ruin stops the account."""
        step, time = self._bar[0], self._bar[1]
        equity = self.ledger.check(step=step, time=time, fills=self._step_fills,
                                   liquidated=self._liquidated,
                                   orders=self._step_orders + self.broker.open_orders)
        if equity <= 0 and not self.ruined:
            self.ruined = True
            self._event(step, time, "ruin", equity=equity)
        return equity

    # --- internals -------------------------------------------------------------------------

    def _book(self, step: int, fill: Fill, order: Order | None) -> None:
        col = self.ledger.col[fill.symbol]
        self.ledger.apply(fill, col)
        self._step_fills.append((col, fill))
        self.fills.append((step, order.id if order is not None else 0, fill))
        if self.ledger.position[col] == 0.0:
            self.stop_loss[col] = self.take_profit[col] = np.nan

    def _exits(self, step: int, time: np.datetime64, open_: np.ndarray, high: np.ndarray,
               low: np.ndarray, volume: np.ndarray) -> None:
        pos = self.ledger.position
        price, reason = exit_prices(pos, self.stop_loss, self.take_profit, open_, high, low)
        for j in np.flatnonzero(reason):
            fill = self.broker.make_fill(time=time, col=int(j), quantity=-float(pos[j]),
                                         price=float(price[j]), volume=float(volume[j]),
                                         reason=_EXIT_REASON[int(reason[j])])
            self._checked(step, time, fill, high[j], low[j])
            self._book(step, fill, None)

    def _margin_call(self, *, phase: str, prices: np.ndarray) -> None:
        """Liquidate everything tradable now when equity falls below the maintenance margin."""
        L = self.ledger
        marks = np.where(np.isnan(prices), L.marks, prices)
        held = L.position != 0.0
        gross = float(np.abs(L.position[held] * marks[held]).sum())
        equity = L.equity(marks)
        if gross == 0.0 or equity >= self.maintenance_margin * gross:
            return
        step, time, _, high, low, _, volume = self._bar
        self._liquidated = True
        self._event(step, time, "liquidation", phase=phase, equity=equity, gross_exposure=gross,
                    maintenance_margin=self.maintenance_margin)
        self.broker.cancel_all()
        for j in np.flatnonzero(held & ~np.isnan(prices)):
            fill = self.broker.make_fill(time=time, col=int(j), quantity=-float(L.position[j]),
                                         price=float(prices[j]), volume=float(volume[j]),
                                         reason="liquidation")
            self._checked(step, time, fill, high[j], low[j])
            self._book(step, fill, None)

    def _checked(self, step: int, time: np.datetime64, fill: Fill, high: float, low: float) -> None:
        check_in_bar(fill.price, float(high), float(low), symbol=fill.symbol, time=time, step=step)

    def _event(self, step: int, time: np.datetime64, kind: str, **detail: float | str) -> None:
        self.events.append({"step": step, "time": time, "kind": kind, **detail})


# --- the agent loop --------------------------------------------------------------------------

class _Aligned:
    """Bars of the universe aligned to the clock as (T, N) arrays; NaN where a symbol has no bar."""

    def __init__(self, data: MarketData, universe: tuple[str, ...], clock: np.ndarray) -> None:
        t, n = len(clock), len(universe)
        self.open, self.high, self.low, self.close, self.volume = (
            np.full((t, n), np.nan) for _ in range(5))
        for j, s in enumerate(universe):
            b = data.full(s)
            pos = np.searchsorted(b.time, clock, "left")
            ok = pos < len(b)
            ok[ok] = b.time[pos[ok]] == clock[ok]
            for name in ("open", "high", "low", "close", "volume"):
                getattr(self, name)[ok, j] = getattr(b, name)[pos[ok]]


def _reward(equity_before: float, equity_after: float) -> float:
    """Log growth of equity net of costs over one decision period (-inf at ruin)."""
    if equity_before <= 0:
        return math.nan
    return math.log(equity_after / equity_before) if equity_after > 0 else -math.inf


class _InvalidDecision(Exception):
    """A Decision that breaks the rules (the message says which and how to fix it)."""


def _validate(decision: object, *, universe: dict[str, int], ledger: Ledger,
              has_price: np.ndarray, max_leverage: float, allow_short: bool
              ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Decision -> (weights row, stop row, target row), NaN = unchanged; raises _InvalidDecision."""
    if not isinstance(decision, Decision):
        raise _InvalidDecision(f"decide returned {type(decision).__name__}, expected a Decision")
    if not (decision.weights or decision.stop_loss or decision.take_profit
            or decision.rebalance_missing):
        return None, None, None  # a plain hold: the common case, kept cheap
    n = len(universe)
    rows: list[np.ndarray | None] = []
    for what, mapping in (("weight", decision.weights), ("stop_loss", decision.stop_loss),
                          ("take_profit", decision.take_profit)):
        if not mapping and not (what == "weight" and decision.rebalance_missing):
            rows.append(None)
            continue
        unknown = [s for s in mapping if s not in universe]
        if unknown:
            raise _InvalidDecision(f"{what} for unknown symbol(s) {', '.join(map(repr, unknown))}; "
                             f"the universe is {', '.join(universe)}")
        row = np.full(n, 0.0 if what == "weight" and decision.rebalance_missing else np.nan)
        for s, v in mapping.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise _InvalidDecision(f"{what} for {s!r} is {v!r}; it must be a finite number")
            if what != "weight" and v <= 0:
                raise _InvalidDecision(f"{what} for {s!r} is {v!r}; a price level must be positive")
            row[universe[s]] = float(v)
        rows.append(row)
    w = rows[0]
    if w is not None:
        if not allow_short and (w < 0).any():
            bad = [s for s, j in universe.items() if w[j] < 0]
            raise _InvalidDecision(f"negative weight for {', '.join(bad)} but shorting is off; "
                             "set allow_short = true in the config or return weights >= 0")
        no_price = [s for s, j in universe.items() if w[j] != 0 and w[j] == w[j]
                    and not has_price[j]]
        if no_price:
            raise _InvalidDecision(f"weight for {', '.join(no_price)} before its first bar; "
                             "there is no price to size the order from yet")
        equity = ledger.equity()
        held = np.where(ledger.position != 0, ledger.position * ledger.marks, 0.0)
        held_weights = held / equity if equity > 0 else np.zeros(n)
        combined = np.where(np.isnan(w), held_weights, w)
        gross, gross_now = float(np.abs(combined).sum()), float(np.abs(held_weights).sum())
        if gross > max_leverage * (1 + 1e-9) and gross > gross_now * (1 + 1e-9):
            raise _InvalidDecision(f"weights sum to gross leverage {gross:.6g} (with kept positions), "
                             f"beyond max_leverage {max_leverage:g}; scale them down or raise "
                             "max_leverage")
    return rows[0], rows[1], rows[2]


def run_loop(*, engine: Engine, agent: Agent, data: MarketData, universe: tuple[str, ...],
             clock: np.ndarray, recorder: Recorder, interval: str = "1d",
             on_agent_error: str = "raise",
             progress: Callable[[int, int], None] | None = None) -> None:
    """Drive ``agent`` through ``clock``, filling ``recorder``.

    Per step t: fills and stops in bar t, mark at close t, Feedback for the previous decision,
    Observation from ``data`` as of t, decide, validate, orders for t+1 (or at close t).
    Raises AgentDecisionError (``on_agent_error="raise"``) after recording the failing step.
    """
    bars = {s: data.full(s) for s in data.symbols}
    counts = {s: np.searchsorted(b.time, clock, "right").tolist() for s, b in bars.items()}
    news = data.news
    n_news = np.searchsorted(news.available_at, clock, "right").tolist()
    rows = _Aligned(data, universe, clock)
    col = {s: j for j, s in enumerate(universe)}
    L = engine.ledger
    total = len(clock)
    prev: tuple | None = None  # (decision time, equity then, fills index, costs then)
    seen = np.zeros(len(universe), dtype=bool)
    for i in range(total):
        t = clock[i]
        engine.open_step(step=i, time=t, open=rows.open[i], high=rows.high[i], low=rows.low[i],
                         close=rows.close[i], volume=rows.volume[i])
        seen |= ~np.isnan(rows.close[i])
        equity = L.equity()
        if prev is not None:
            reward = _reward(prev[1], equity)
            recorder.rewards[i] = reward
            fills = tuple(f for _, _, f in engine.fills[prev[2]:])
            fb = Feedback(time=t, decision_time=prev[0], fills=fills, equity=equity,
                          period_return=equity / prev[1] - 1 if prev[1] > 0 else math.nan,
                          costs=L.costs - prev[3], reward=reward)
            try:
                agent.update(fb)
            except Exception as exc:  # the agent's own bug: name the step, keep the record
                _fail(engine, recorder, i, t, None, f"update raised {type(exc).__name__}: {exc}")
                raise AgentDecisionError(f"agent {getattr(agent, 'name', agent)!r} update() "
                                         f"raised {type(exc).__name__}: {exc}", step=i,
                                         time=_iso(t)) from exc
        marks = L.marks
        positions = {s: float(L.position[j]) for s, j in col.items() if L.position[j]}
        prices = {s: float(marks[j]) for s, j in col.items() if marks[j] == marks[j]}
        view = PointInTimeView(t, bars, {s: c[i] for s, c in counts.items()}, news, n_news[i])
        obs = Observation(time=t, step=i, universe=universe, market=view, interval=interval,
                          portfolio=Portfolio(cash=L.cash, positions=positions, prices=prices,
                                              equity=equity))
        fills_before, costs_before = len(engine.fills), L.costs
        decision = error = None
        try:
            decision = agent.decide(obs)
            w, sl, tp = _validate(decision, universe=col, has_price=seen, ledger=L,
                                  max_leverage=engine.max_leverage, allow_short=engine.allow_short)
        except Exception as exc:
            error = (f"invalid decision: {exc}" if isinstance(exc, _InvalidDecision)
                     else f"decide raised {type(exc).__name__}: {exc}")
            if on_agent_error != "hold":
                _fail(engine, recorder, i, t, decision, error)
                raise AgentDecisionError(f"agent {getattr(agent, 'name', agent)!r}: {error}",
                                         step=i, time=_iso(t)) from exc
            recorder.decision(step=i, time=t, decision=decision, fallback="hold", error=error)
            w = sl = tp = None
        else:
            recorder.decision(step=i, time=t, decision=decision)
        if w is not None or sl is not None or tp is not None:
            engine.rebalance(weights=w if w is not None else np.full(len(col), np.nan),
                             stop_loss=sl, take_profit=tp)
        equity_end = engine.close_step()
        gross, net = L.exposures()
        recorder.row(step=i, equity=equity_end, cash=L.cash, gross=gross, net=net,
                     costs_total=L.costs, positions=L.position, marks=marks)
        prev = (t, equity, fills_before, costs_before)
        if engine.ruined:
            break
        if progress is not None:
            progress(i + 1, total)
    for order in list(engine.broker.open_orders):
        engine.broker.cancel(order)


def _fail(engine: Engine, recorder: Recorder, i: int, t: np.datetime64,
          decision: object, error: str) -> None:
    """Record the failing step (journal, book at its end) so the partial record is complete."""
    recorder.decision(step=i, time=t, decision=decision if isinstance(decision, Decision) else None,
                      error=error)
    try:
        equity = engine.close_step()
    except EngineError:
        equity = engine.ledger.equity()
    gross, net = engine.ledger.exposures()
    recorder.row(step=i, equity=equity, cash=engine.ledger.cash, gross=gross, net=net,
                 costs_total=engine.ledger.costs, positions=engine.ledger.position,
                 marks=engine.ledger.marks)


def closes_on(data: MarketData, symbol: str, clock: np.ndarray) -> np.ndarray:
    """Closes of ``symbol`` on ``clock``, carried forward over missing bars (NaN before its first)."""
    x = _Aligned(data, (symbol,), clock).close[:, 0]
    idx = np.where(np.isnan(x), 0, np.arange(len(x)))
    np.maximum.accumulate(idx, out=idx)
    return x[idx]


def _iso(t: np.datetime64) -> str:
    return str(t.astype("datetime64[s]")) + "Z"
