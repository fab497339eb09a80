"""The step loop: one account stepping through bars, and the agent loop around it.

:class:`Engine` is clock-agnostic: it is fed one bar row at a time (``open_step``), takes target
weights (``rebalance``) and closes the step (``close_step``, which checks the ledger invariants).
A backtest feeds rows from arrays aligned to ``MarketData.timeline()``; the paper daemon feeds
rows as they arrive. :func:`run_loop` drives an agent through it bar by bar.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from tradesim.contracts import (
    Agent,
    BaseAgent,
    Decision,
    Feedback,
    Fill,
    Observation,
    Portfolio,
)
from tradesim.data.view import MarketData, PointInTimeView
from tradesim.engine.broker import (
    LIMIT,
    MARKET,
    STOP,
    Broker,
    Order,
    check_in_bar,
    exit_price,
    target_qty,
)
from tradesim.engine.costs import CostModel, borrow_fee_on
from tradesim.engine.ledger import Ledger
from tradesim.engine.record import Recorder
from tradesim.errors import AgentDecisionError, EngineError, LLMError
from tradesim.rewards.step import log_growth_step

FILL_MODES: tuple[str, ...] = ("next_open", "close")
_EXIT_REASON = {1: "stop_loss", 2: "take_profit"}


class Engine:
    """Broker + ledger of one account; processes one bar per step, whatever drives the clock.

    Bar rows (one value per symbol, NaN = no bar) may be lists or arrays; the book is kept in
    plain Python floats because a step touches a handful of symbols, where scalar arithmetic is
    many times faster than NumPy calls. ``stop_loss`` / ``take_profit`` hold one level per symbol
    (NaN = none).
    """

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
        self.stop_loss: list[float] = [math.nan] * n
        self.take_profit: list[float] = [math.nan] * n
        self.fills: list[tuple[int, int, Fill]] = []  # (step, order id or 0, fill), whole run
        self.events: list[dict] = []
        self._used: dict[int, float] = {}  # shares traded per column in the current bar
        self.ruined = False
        self._open_kinds = (MARKET, LIMIT, STOP) if fill == "next_open" else (LIMIT, STOP)
        self._armed = 0  # symbols with a stop-loss or take-profit level set
        self._step_fills: list[tuple[int, Fill]] = []
        self._step_orders: list[Order] = []
        self._liquidated = False
        self._bar: tuple | None = None
        self._last_time: np.datetime64 | None = None

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
        self._open(step, time, open, high, low, close, volume)

    def _open(self, step: int, time: np.datetime64, open: Sequence[float],
              high: Sequence[float], low: Sequence[float], close: Sequence[float],
              volume: Sequence[float]) -> None:
        """:meth:`open_step` on rows of Python floats, positionally (the loop's hot path)."""
        L = self.ledger
        L.begin_step()
        self._step_fills, self._step_orders, self._liquidated = [], [], False
        self._bar = (step, time, open, high, low, close, volume)
        shares = L.shares
        has_pos = any(shares)
        if has_pos and self._last_time is not None and self.costs.borrow_bps_annual:
            short_value = 0.0
            for q, m in zip(shares, L.prices):
                if q < 0:
                    short_value += -q * m
            if short_value:
                fee = borrow_fee_on(short_value, self.costs.borrow_bps_annual,
                                    float((time - self._last_time).astype("int64")))
                if fee:
                    L.charge_borrow(fee)
        self._last_time = time
        # no margin call can trigger with cash >= 0 and only long positions (at positive
        # prices): then equity >= gross exposure >= maintenance_margin x gross
        cushioned = self.maintenance_margin <= 1.0
        if has_pos and not (cushioned and L.cash >= 0 and min(shares) >= 0):
            self._margin_call(phase="open", prices=open)
        self._used: dict[int, float] = {}  # shares traded per column in this bar (for the cap)
        if self.broker.open_orders:
            for order, fill in self.broker.execute(step=step, time=time, ref=open, high=high,
                                                   low=low, volume=volume,
                                                   kinds=self._open_kinds, used=self._used):
                self._book(step, fill, order)
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
        current, marks = L.shares, L.prices
        target = [q if math.isnan(w) else target_qty(w, equity, m, lot_size=self.lot_size,
                                              fractional=self.fractional)
                  for w, q, m in zip(weights, current, marks)]
        gross_now, _ = L.exposures()
        cap = max(self.max_leverage, gross_now / equity if equity > 0 else 0)
        L.check_leverage(step=step, time=time, target=target, prices=marks, equity=equity,
                         max_leverage=cap, orders=self.broker.open_orders)
        orders = []
        broker = self.broker
        if broker.open_orders:  # market orders still open for re-targeted symbols are stale
            for order in [o for o in broker.open_orders
                          if o.kind == MARKET and not math.isnan(weights[o.col])]:
                broker.cancel(order)
        for j, w in enumerate(weights):
            if math.isnan(w):
                continue
            delta = target[j] - current[j]
            if abs(delta) > 1e-12:
                orders.append(broker.create(time=time, col=j, quantity=delta))
        if stop_loss is not None or take_profit is not None:
            for levels, new in ((self.stop_loss, stop_loss), (self.take_profit, take_profit)):
                if new is not None:
                    for j, x in enumerate(new):
                        if not math.isnan(x):
                            levels[j] = float(x)
            self._count_armed()
        self._step_orders.extend(orders)
        if self.fill == "close" and orders:
            _, _, _, high, low, close, volume = self._bar
            for order, fill in broker.execute(step=step, time=time, ref=close, high=high,
                                              low=low, volume=volume, kinds=(MARKET,),
                                              used=self._used):
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
        L = self.ledger
        col = L.col[fill.symbol]
        L.apply(fill, col)
        self._step_fills.append((col, fill))
        self.fills.append((step, order.id if order is not None else 0, fill))
        if L.shares[col] == 0.0 and not (math.isnan(self.stop_loss[col])
                                         and math.isnan(self.take_profit[col])):
            self.stop_loss[col] = self.take_profit[col] = math.nan
            self._count_armed()

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
            price, reason = exit_price(q, stop, target, open_[j], high[j], low[j])
            if reason:
                qty = -q
                cap = self.costs.participation_cap
                if cap is not None:  # exits share the bar's cap: a locked bar does not fill
                    vol = 0.0 if math.isnan(volume[j]) else volume[j]
                    room = max(cap * vol - self._used.get(j, 0.0), 0.0)
                    qty = math.copysign(min(abs(q), room), -q)
                    self._used[j] = self._used.get(j, 0.0) + abs(qty)
                if qty == 0.0:
                    continue  # still armed: it triggers again on the next bar with volume
                fill = self.broker.make_fill(time=time, col=j, quantity=qty, price=price,
                                             volume=volume[j], reason=_EXIT_REASON[reason])
                check_in_bar(fill.price, high[j], low[j], symbol=fill.symbol, time=time, step=step)
                self._book(step, fill, None)

    def _margin_call(self, *, phase: str, prices: Sequence[float]) -> None:
        """Liquidate everything tradable now when equity falls below the maintenance margin."""
        L = self.ledger
        gross = value = 0.0
        for q, p, m in zip(L.shares, prices, L.prices):
            if q:
                v = q * (m if math.isnan(p) else p)
                gross += abs(v)
                value += v
        equity = L.cash + value
        if gross == 0.0 or equity >= self.maintenance_margin * gross:
            return
        step, time, _, high, low, _, volume = self._bar
        self._liquidated = True
        self._event(step, time, "liquidation", phase=phase, equity=equity, gross_exposure=gross,
                    maintenance_margin=self.maintenance_margin)
        self.broker.cancel_all()
        for j, p in enumerate(prices):
            q = L.shares[j]
            if q and not math.isnan(p):
                fill = self.broker.make_fill(time=time, col=j, quantity=-q, price=p,
                                             volume=volume[j], reason="liquidation")
                check_in_bar(fill.price, high[j], low[j], symbol=fill.symbol, time=time, step=step)
                self._book(step, fill, None)

    def _event(self, step: int, time: np.datetime64, kind: str, **detail: float | str) -> None:
        self.events.append({"step": step, "time": time, "kind": kind, **detail})


# --- the agent loop --------------------------------------------------------------------------

class AlignedBars:
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


class _InvalidDecision(Exception):
    """A Decision that breaks the rules (the message says which and how to fix it)."""


def _row(what: str, mapping: Mapping, universe: dict[str, int], fill: float) -> list[float]:
    """One Decision mapping as a row over the universe (``fill`` where absent); raises."""
    unknown = [s for s in mapping if s not in universe]
    if unknown:
        raise _InvalidDecision(f"{what} for unknown symbol(s) {', '.join(map(repr, unknown))}; "
                               f"the universe is {', '.join(universe)}")
    row = [fill] * len(universe)
    for s, v in mapping.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _InvalidDecision(f"{what} for {s!r} is {v!r}; it must be a finite number")
        if what != "weight" and v <= 0:
            raise _InvalidDecision(f"{what} for {s!r} is {v!r}; a price level must be positive")
        row[universe[s]] = float(v)
    return row


def _validate(decision: object, *, universe: dict[str, int], ledger: Ledger,
              has_price: list[bool], max_leverage: float, allow_short: bool
              ) -> tuple[list[float] | None, list[float] | None, list[float] | None]:
    """Decision -> (weights row, stop row, target row), NaN = unchanged; raises _InvalidDecision."""
    if not isinstance(decision, Decision):
        raise _InvalidDecision(f"decide returned {type(decision).__name__}, expected a Decision")
    weights, missing = decision.weights, decision.rebalance_missing
    if not (weights or decision.stop_loss or decision.take_profit or missing):
        return None, None, None  # a plain hold: the common case, kept cheap
    w = (_row("weight", weights, universe, 0.0 if missing else math.nan)
         if weights or missing else None)
    sl = _row("stop_loss", decision.stop_loss, universe, math.nan) if decision.stop_loss else None
    tp = (_row("take_profit", decision.take_profit, universe, math.nan)
          if decision.take_profit else None)
    if w is not None:
        if not allow_short and any(x < 0 for x in w):
            bad = [s for s, j in universe.items() if w[j] < 0]
            raise _InvalidDecision(f"negative weight for {', '.join(bad)} but shorting is off; "
                                   "set allow_short = true in the config (--allow-short) or return weights >= 0")
        no_price = [s for s, j in universe.items() if w[j] != 0 and w[j] == w[j]
                    and not has_price[j]]
        if no_price:
            raise _InvalidDecision(f"weight for {', '.join(no_price)} before its first bar; "
                                   "there is no price to size the order from yet")
        equity = ledger.equity()
        gross = gross_now = 0.0
        for x, q, m in zip(w, ledger.shares, ledger.prices):
            held = abs(q * m / equity) if q and equity > 0 else 0.0
            gross += held if math.isnan(x) else abs(x)
            gross_now += held
        if gross > max_leverage * (1 + 1e-9) and gross > gross_now * (1 + 1e-9):
            raise _InvalidDecision(f"weights sum to gross leverage {gross:.6g} (with kept "
                                   f"positions), beyond max_leverage {max_leverage:g}; scale them "
                                   "down or raise max_leverage")
    return w, sl, tp


def _ignores_feedback(agent: Agent) -> bool:
    """True when ``update`` is BaseAgent's no-op, so building Feedback objects can be skipped."""
    return getattr(getattr(agent, "update", None), "__func__", None) is BaseAgent.update


def run_loop(*, engine: Engine, agent: Agent, data: MarketData, universe: tuple[str, ...],
             clock: np.ndarray, recorder: Recorder, interval: str = "1d",
             on_agent_error: str = "raise",
             progress: Callable[[int, int], None] | None = None) -> None:
    """Drive ``agent`` through ``clock``, filling ``recorder``.

    Per step t: fills and stops in bar t, mark at close t, Feedback for the previous decision,
    Observation from ``data`` as of t, decide, validate, orders for t+1 (or at close t).
    Raises AgentDecisionError (``on_agent_error="raise"``) after recording the failing step.
    ``progress`` is called about a thousand times over the run and at its last step.
    """
    bars = {s: data.full(s) for s in data.symbols}
    names = tuple(bars)
    counts = list(zip(*(np.searchsorted(b.time, clock, "right").tolist() for b in bars.values())))
    news = data.news
    n_news = np.searchsorted(news.available_at, clock, "right").tolist()
    rows = AlignedBars(data, universe, clock)
    # tuples of floats: cheap to index, and untracked by the cyclic garbage collector
    opens, highs, lows, closes, volumes = (list(zip(*a.T.tolist())) for a in (
        rows.open, rows.high, rows.low, rows.close, rows.volume))
    times = list(clock)
    col = {s: j for j, s in enumerate(universe)}
    n = len(universe)
    L = engine.ledger
    total = len(clock)
    every = max(1, total // 1000)
    feedback = not _ignores_feedback(agent)
    journal = recorder.journal
    rewards = recorder.rewards
    decide = agent.decide
    prev: tuple | None = None  # (decision time, equity then, fills index, costs then)
    seen = [False] * n
    unseen = n
    for i in range(total):
        t = times[i]
        close = closes[i]
        engine._open(i, t, opens[i], highs[i], lows[i], close, volumes[i])
        if unseen:
            for j, c in enumerate(close):
                if not math.isnan(c) and not seen[j]:
                    seen[j] = True
                    unseen -= 1
        equity = L.equity()
        if prev is not None:
            reward = log_growth_step(prev[1], equity)  # from the ledger, net of costs
            rewards[i] = reward
            if feedback:
                _feed(engine, agent, recorder, i, t, prev, equity, reward)
        shares = L.shares
        positions = {s: q for s, q in zip(universe, shares) if q} if any(shares) else {}
        prices = (dict(zip(universe, L.prices)) if not unseen  # every mark is set by now
                  else {s: m for s, m in zip(universe, L.prices) if not math.isnan(m)})
        view = PointInTimeView(t, bars, dict(zip(names, counts[i])), news, n_news[i])
        obs = Observation(time=t, step=i, universe=universe, market=view, interval=interval,
                          portfolio=Portfolio(cash=L.cash, positions=positions, prices=prices,
                                              equity=equity))
        fills_before, costs_before = len(engine.fills), L.costs
        decision = None
        if equity <= 0:  # ruined at the open (a liquidation gapped through): nothing to decide
            journal.append((i, t, None, "ruin", f"equity {equity:.2f} <= 0 before the decision"))
            engine.close_step()
            gross, net = L.exposures()
            recorder.row(step=i, equity=equity, cash=L.cash, gross=gross, net=net,
                         costs_total=L.costs, positions=L.shares, marks=L.prices)
            break
        try:
            decision = decide(obs)
            if type(decision) is Decision and not (
                    decision.weights or decision.stop_loss or decision.take_profit
                    or decision.rebalance_missing):
                w = sl = tp = None  # a plain hold, the common case: nothing to validate
            else:
                w, sl, tp = _validate(decision, universe=col, has_price=seen, ledger=L,
                                      max_leverage=engine.max_leverage,
                                      allow_short=engine.allow_short)
        except Exception as exc:
            error = (f"invalid decision: {exc}" if isinstance(exc, _InvalidDecision)
                     else f"decide raised {type(exc).__name__}: {exc}")
            # a spent budget or a replay miss stops the run: it is no agent mistake to hold through
            if on_agent_error != "hold" or isinstance(exc, LLMError):
                _fail(engine, recorder, i, t, decision, error)
                raise AgentDecisionError(f"agent {getattr(agent, 'name', agent)!r}: {error}",
                                         step=i, time=iso_time(t)) from exc
            journal.append((i, t, decision if isinstance(decision, Decision) else None, "hold",
                            error))
            w = sl = tp = None
        else:
            journal.append((i, t, decision, "", ""))
        if w is not None or sl is not None or tp is not None:
            engine.rebalance(weights=w if w is not None else [math.nan] * n,
                             stop_loss=sl, take_profit=tp)
        equity_end = engine.close_step()
        gross, net = L.exposures()
        recorder.row(step=i, equity=equity_end, cash=L.cash, gross=gross, net=net,
                     costs_total=L.costs, positions=L.shares, marks=L.prices)
        prev = (t, equity, fills_before, costs_before)
        if engine.ruined:
            break
        if progress is not None and ((i + 1) % every == 0 or i + 1 == total):
            progress(i + 1, total)
    for order in list(engine.broker.open_orders):
        engine.broker.cancel(order)


def _feed(engine: Engine, agent: Agent, recorder: Recorder, i: int, t: np.datetime64,
          prev: tuple, equity: float, reward: float) -> None:
    """Deliver the Feedback of the decision taken at ``prev`` (its outcome is known at ``t``)."""
    L = engine.ledger
    fb = Feedback(time=t, decision_time=prev[0],
                  fills=tuple(f for _, _, f in engine.fills[prev[2]:]), equity=equity,
                  period_return=equity / prev[1] - 1 if prev[1] > 0 else math.nan,
                  costs=L.costs - prev[3], reward=reward)
    try:
        agent.update(fb)
    except Exception as exc:  # the agent's own bug: name the step, keep the record
        _fail(engine, recorder, i, t, None, f"update raised {type(exc).__name__}: {exc}")
        raise AgentDecisionError(f"agent {getattr(agent, 'name', agent)!r} update() raised "
                                 f"{type(exc).__name__}: {exc}", step=i, time=iso_time(t)) from exc


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
                 costs_total=engine.ledger.costs, positions=engine.ledger.shares,
                 marks=engine.ledger.prices)


def closes_on(data: MarketData, symbol: str, clock: np.ndarray) -> np.ndarray:
    """Closes of ``symbol`` on ``clock``, carried forward over missing bars (NaN before its first)."""
    x = AlignedBars(data, (symbol,), clock).close[:, 0]
    idx = np.where(np.isnan(x), 0, np.arange(len(x)))
    np.maximum.accumulate(idx, out=idx)
    return x[idx]


def iso_time(t: np.datetime64) -> str:
    return str(t.astype("datetime64[s]")) + "Z"
