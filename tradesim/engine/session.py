"""The session: the one loop that drives an agent over a clock, tick by tick.

Per tick t: the account steps through bar t (pending orders and exits fill, marks move to the
close), the Feedback of the previous decision is delivered (its outcome is realised now), the
agent decides on an Observation built from the point-in-time view as of t, the Decision is
validated and turned into orders for t+1 (or at close t), and the recorder appends the step. A
backtest is a session over a :class:`~tradesim.engine.feed.HistoricalFeed`; the paper daemon
drives the same session over a live feed with :meth:`Session.begin`, :meth:`Session.step` and
:meth:`Session.end`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sized

import numpy as np

from tradesim.contracts import (
    Agent,
    BaseAgent,
    Decision,
    Feedback,
    Observation,
    Portfolio,
    RunContext,
)
from tradesim.data.bars import iso_time
from tradesim.engine.account import Account
from tradesim.engine.core import gross_weight
from tradesim.engine.feed import Feed, Tick, frozen_maker
from tradesim.engine.ledger import Ledger
from tradesim.engine.record import Recorder
from tradesim.errors import AgentDecisionError, EngineError, FatalAgentError
from tradesim.rewards.step import log_growth_step

_observation = frozen_maker(Observation)  # (time, step, universe, market, portfolio, interval)
_portfolio = frozen_maker(Portfolio)  # (cash, positions, prices, equity)


class Session:
    """One agent, one account and one recorder, stepped by the ticks of a feed.

    ``on_agent_error="hold"`` turns an agent's exception or invalid Decision into a recorded
    hold; a :class:`~tradesim.errors.FatalAgentError` (a spent budget, a replay miss) stops the
    run either way. The agent's ``start`` and ``stop`` are each called once per run.
    """

    def __init__(self, *, agent: Agent, account: Account, recorder: Recorder,
                 context: RunContext, on_agent_error: str = "raise") -> None:
        self.agent, self.account, self.recorder = agent, account, recorder
        self.context = context
        self.universe = tuple(context.universe)
        self.on_agent_error = on_agent_error
        self._col = {s: j for j, s in enumerate(self.universe)}
        n = len(self.universe)
        self._seen = [False] * n  # symbols with a bar so far (a weight needs a price)
        self._unseen = n
        self._prev: tuple | None = None  # (decision time, equity then, fills after it, costs)
        self._feedback = not _ignores_feedback(agent)
        self._started = self._ended = False
        self.stopped = ""  # why the session stopped early ("ruin"), empty while it runs on

    # --- lifecycle --------------------------------------------------------------------------

    def begin(self, *, state: dict | None = None) -> None:
        """Start the agent with the run's context (then restore ``state`` when resuming)."""
        self.agent.start(self.context)
        self._started = True
        if state is not None:
            self.agent.load_state(state)

    def end(self, *, error: BaseException | None = None) -> None:
        """Cancel what is still open, record it, and stop the agent (once, also on failure)."""
        if self._ended:
            return
        self._ended = True
        try:
            account = self.account
            for order in list(account.broker.open_orders):
                account.broker.cancel(order)
            if account.fills or account.broker.closed or account.events:
                self._drain()
        finally:
            if self._started:
                self.agent.stop(error=error)

    def checkpoint(self) -> dict:
        """The loop's own state between ticks (besides account and agent): for a live restart."""
        return {"seen": list(self._seen), "unseen": self._unseen, "prev": self._prev,
                "stopped": self.stopped}

    def resume(self, checkpoint: dict) -> None:
        """Restore a :meth:`checkpoint` on a fresh session over the restored account."""
        self._seen, self._unseen = list(checkpoint["seen"]), int(checkpoint["unseen"])
        self._prev, self.stopped = checkpoint["prev"], str(checkpoint["stopped"])

    def run(self, feed: Feed, *, progress: Callable[[int, int], None] | None = None) -> None:
        """Drive the agent through every tick of ``feed``: begin, step until done or ruined, end.

        ``progress(done, total)`` is called about a thousand times when the feed has a length.
        """
        total = len(feed) if isinstance(feed, Sized) else 0
        every = max(1, total // 1000)
        self.begin()
        try:
            for tick in feed:
                if not self.step(tick):
                    break
                if progress is not None and total and (
                        (tick.step + 1) % every == 0 or tick.step + 1 == total):
                    progress(tick.step + 1, total)
        except BaseException as exc:
            self.end(error=exc)
            raise
        self.end()

    # --- one tick ---------------------------------------------------------------------------

    def step(self, tick: Tick) -> bool:
        """Process one tick; False when the run must stop (ruin). Raises AgentDecisionError."""
        account, recorder = self.account, self.recorder
        L = account.ledger
        i, t, close = tick.step, tick.time, tick.close
        account._open(i, t, tick.open, tick.high, tick.low, close, tick.volume, tick.ns)
        if self._unseen:
            seen = self._seen
            for j, c in enumerate(close):
                if not math.isnan(c) and not seen[j]:
                    seen[j] = True
                    self._unseen -= 1
        equity = L.equity()
        reward = math.nan
        prev = self._prev
        if prev is not None:
            reward = log_growth_step(prev[1], equity)  # from the ledger, net of costs
            if self._feedback:
                self._feed(i, t, prev, equity, reward)
        universe = self.universe
        shares = L.shares
        positions = {s: q for s, q in zip(universe, shares) if q} if any(shares) else {}
        prices = (dict(zip(universe, L.prices)) if not self._unseen  # every mark is set by now
                  else {s: m for s, m in zip(universe, L.prices) if not math.isnan(m)})
        obs = _observation(t, i, universe, tick.view, _portfolio(L.cash, positions, prices, equity),
                           self.context.interval)
        costs_before = L.costs
        if equity <= 0:  # ruined at the open (a liquidation gapped through): nothing to decide
            recorder.decision(step=i, time=t, decision=None, fallback="ruin",
                              error=f"equity {equity:.2f} <= 0 before the decision")
            account.close_step()
            self._record(i, t, equity, reward)
            self.stopped = "ruin"
            return False
        fills_before = len(account.fills)
        w, sl, tp = self._decide(obs, i, t, reward)
        if w is not None or sl is not None or tp is not None:
            account.rebalance(weights=w if w is not None else [math.nan] * len(universe),
                              stop_loss=sl, take_profit=tp)
        equity_end = account.close_step()
        # close fills belong to the next Feedback; agents that ignore feedback skip the copy
        after = ([f for _, _, f in account.fills[fills_before:]] if self._feedback
                 and len(account.fills) > fills_before else [])
        self._record(i, t, equity_end, reward)
        self._prev = (t, equity, after, costs_before)
        if account.ruined:
            self.stopped = "ruin"
            return False
        return True

    def _decide(self, obs: Observation, i: int, t: np.datetime64, reward: float
                ) -> tuple[list[float] | None, list[float] | None, list[float] | None]:
        """Ask the agent, validate, journal; rows of weights/stops/targets (None = unchanged)."""
        account = self.account
        decision = None
        try:
            decision = self.agent.decide(obs)
            if isinstance(decision, Decision) and decision.expense:
                self._charge(decision.expense)
            if type(decision) is Decision and not (
                    decision.weights or decision.stop_loss or decision.take_profit
                    or decision.rebalance_missing):
                w = sl = tp = None  # a plain hold, the common case: nothing to validate
            else:
                w, sl, tp = _validate(decision, universe=self._col, has_price=self._seen,
                                      ledger=account.ledger,
                                      max_leverage=account.max_leverage,
                                      allow_short=account.allow_short)
        except Exception as exc:
            error = (f"invalid decision: {exc}" if isinstance(exc, _InvalidDecision)
                     else f"decide raised {type(exc).__name__}: {exc}")
            if isinstance(exc, _MalformedDecision):
                decision = None  # its fields cannot be journalled; the error names them
            # a spent budget or a replay miss stops the run: it is no agent mistake to hold through
            if self.on_agent_error != "hold" or isinstance(exc, FatalAgentError):
                self._fail(i, t, decision, error, reward)
                raise AgentDecisionError(f"agent {self.agent.name!r}: {error}",
                                         step=i, time=iso_time(t)) from exc
            self.recorder.decision(step=i, time=t,
                                   decision=decision if isinstance(decision, Decision) else None,
                                   fallback="hold", error=error)
            return None, None, None
        self.recorder.decision(step=i, time=t, decision=decision)
        return w, sl, tp

    def _charge(self, expense: object) -> None:
        """Debit a decision's expense (money spent outside the market); raises when invalid."""
        if isinstance(expense, bool) or not isinstance(expense, (int, float)) or not (
                math.isfinite(expense) and expense >= 0):
            raise _InvalidDecision(f"expense is {expense!r}; it must be a finite number of "
                                   "dollars >= 0 (what the decision cost outside the market)")
        self.account.charge_expense(float(expense))

    def _feed(self, i: int, t: np.datetime64, prev: tuple, equity: float, reward: float) -> None:
        """Deliver the Feedback of the decision taken at ``prev`` (its outcome is known at ``t``)."""
        L = self.account.ledger
        fills = tuple(prev[2]) + tuple(f for _, _, f in self.account.fills)
        fb = Feedback(time=t, decision_time=prev[0], fills=fills, equity=equity,
                      period_return=equity / prev[1] - 1 if prev[1] > 0 else math.nan,
                      costs=L.costs - prev[3], reward=reward)
        try:
            self.agent.update(fb)
        except Exception as exc:  # the agent's own bug: name the step, keep the record
            self._fail(i, t, None, f"update raised {type(exc).__name__}: {exc}", reward)
            raise AgentDecisionError(f"agent {self.agent.name!r} update() raised "
                                     f"{type(exc).__name__}: {exc}", step=i,
                                     time=iso_time(t)) from exc

    def _record(self, i: int, t: np.datetime64, equity: float, reward: float) -> None:
        """Append the book at the end of step ``i`` and what the account produced in it."""
        account = self.account
        L = account.ledger
        gross, net = L.exposures() if any(L.shares) else (0.0, 0.0)  # flat: nothing to sum
        self.recorder.row(step=i, time=t, reward=reward, equity=equity, cash=L.cash,
                          gross=gross, net=net, costs_total=L.costs, positions=L.shares,
                          marks=L.prices)
        if account.fills or account.broker.closed or account.events:  # most steps make none
            self._drain()

    def _drain(self) -> None:
        """Hand the fills, closed orders and events the account produced to the recorder."""
        self.recorder.take(*self.account.take_records())

    def _fail(self, i: int, t: np.datetime64, decision: object, error: str, reward: float) -> None:
        """Record the failing step (journal, book at its end) so the partial record is complete."""
        self.recorder.decision(step=i, time=t,
                               decision=decision if isinstance(decision, Decision) else None,
                               error=error)
        try:
            equity = self.account.close_step()
        except EngineError:
            equity = self.account.ledger.equity()
        self._record(i, t, equity, reward)


class _InvalidDecision(Exception):
    """A Decision that breaks the rules (the message says which and how to fix it)."""


class _MalformedDecision(_InvalidDecision):
    """A Decision whose fields are not mappings: it is journalled as None (unserialisable)."""


def _row(what: str, mapping: Mapping, universe: dict[str, int], fill: float) -> list[float]:
    """One Decision mapping as a row over the universe (``fill`` where absent); raises."""
    if not isinstance(mapping, Mapping):
        field = "weights" if what == "weight" else what
        example = next(iter(universe), "SYMBOL")
        raise _MalformedDecision(
            f"Decision.{field} is a {type(mapping).__name__} ({mapping!r:.60}); it must map "
            f"symbol -> number, e.g. Decision({field}={{{example!r}: 0.5}})")
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
                                   "set allow_short = true in the config (--allow-short) or "
                                   "return weights >= 0")
        no_price = [s for s, j in universe.items() if w[j] != 0 and w[j] == w[j]
                    and not has_price[j]]
        if no_price:
            raise _InvalidDecision(f"weight for {', '.join(no_price)} before its first bar; "
                                   "there is no price to size the order from yet")
        gross = gross_weight(np.array(w), ledger.equity(), np.array(ledger.shares),
                             np.array(ledger.prices), max_leverage)
        if gross >= 0:
            raise _InvalidDecision(f"weights sum to gross leverage {gross:.6g}, beyond "
                                   f"max_leverage {max_leverage:g}; scale them down or raise "
                                   "max_leverage")
    return w, sl, tp


def _ignores_feedback(agent: Agent) -> bool:
    """True when ``update`` is BaseAgent's no-op, so building Feedback objects can be skipped."""
    update = getattr(type(agent), "update", None)
    return update is BaseAgent.update
