"""Adversarial canary agents for the hack audit: real agents that try to game the engine.

Each canary is an ordinary :class:`~tradesim.contracts.Agent` run through the real engine, never
special-cased by it; each counts what it attempted and what got through (``attempts``,
``leaks``) so the audit can say how a hack was blocked. Two helpers build the markets some
canaries need: :func:`lock_limit_moves` (limit-locked bars that trade no volume) and
:func:`shuffled_market` (bars in random order with the drift removed: nothing to predict).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
from collections.abc import Mapping

import numpy as np

from tradesim.contracts import BaseAgent, Decision, Feedback, Observation, RunContext
from tradesim.data.bars import Bars
from tradesim.data.view import MarketData
from tradesim.errors import ConfigError, LookAheadError

_DAY = np.timedelta64(1, "D")


def forward_returns(data: MarketData, *,
                    horizon: int = 1) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per symbol (bar stamps, return earned by an order decided at that bar over ``horizon`` bars).

    A decision at bar t fills at the open of t+1, so the return is open[t+1+h] / open[t+1] - 1
    (NaN where the future is beyond the data). This is the future an oracle is handed.
    """
    out = {}
    for s in data.symbols:
        b = data.full(s)
        fwd = np.full(len(b), np.nan)
        if len(b) > horizon + 1:
            fwd[: len(b) - horizon - 1] = b.open[horizon + 1:] / b.open[1: len(b) - horizon] - 1.0
        out[s] = (b.time, fwd)
    return out


def _at(series: tuple[np.ndarray, np.ndarray], time: np.datetime64) -> float:
    """Value of a (stamps, values) series at exactly ``time`` (NaN when absent)."""
    stamps, values = series
    i = int(np.searchsorted(stamps, time))
    return float(values[i]) if i < len(stamps) and stamps[i] == time else math.nan


class _Canary(BaseAgent):
    """A canary keeps score of its own attempts (what it tried, what got through)."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}
        self.leaks: dict[str, int] = {}

    def start(self, context: RunContext) -> None:
        """A new run: count its attempts afresh."""
        super().start(context)
        self.attempts, self.leaks = {}, {}

    def _tried(self, what: str, *, leaked: bool) -> None:
        self.attempts[what] = self.attempts.get(what, 0) + 1
        if leaked:
            self.leaks[what] = self.leaks.get(what, 0) + 1

    def state(self) -> dict:
        return {"attempts": dict(self.attempts), "leaks": dict(self.leaks)}

    def load_state(self, state: dict) -> None:
        self.attempts = dict(state.get("attempts", {}))
        self.leaks = dict(state.get("leaks", {}))


class Peeker(_Canary):
    """Tries to read past ``obs.time``; trades on any future close it obtains, else holds 1/N.

    ``via="api"`` uses the view's public methods (``end=`` beyond the decision time, huge
    lookbacks, future ``start``, news); ``via="memory"`` follows the ``.base`` of the NumPy
    arrays it is handed back to the buffer they were sliced from.
    """

    name = "peeker"

    def __init__(self, *, via: str = "api") -> None:
        super().__init__()
        if via not in ("api", "memory"):
            raise ConfigError(f"Peeker(via={via!r}): use 'api' or 'memory'")
        self.via = via
        self.name = "peeker" if via == "api" else "peeker_memory"

    def decide(self, obs: Observation) -> Decision:
        future = {s: self._peek(obs, s) for s in obs.universe}
        seen = {s: c for s, c in future.items() if math.isfinite(c)}
        if seen:
            best = max(seen, key=lambda s: seen[s] / obs.market.last_close(s))
            up = seen[best] > obs.market.last_close(best)
            return Decision(weights={s: float(up and s == best) for s in obs.universe},
                            rationale="traded on a peeked future close")
        return Decision(weights={s: 1.0 / len(obs.universe) for s in obs.universe
                                 if obs.market.count(s)}, rationale="nothing leaked: 1/N")

    def _peek(self, obs: Observation, symbol: str) -> float:
        """The next bar's close if any attempt obtained it, else NaN."""
        view, later = obs.market, obs.time + _DAY
        if self.via == "memory":
            close = view.bars(symbol).close
            base = close
            while isinstance(base.base, np.ndarray):
                base = base.base
            offset = (close.__array_interface__["data"][0]
                      - base.__array_interface__["data"][0]) // close.itemsize
            nxt = offset + close.shape[0]
            leaked = base is not close and close.strides == base.strides and nxt < base.shape[0]
            self._tried("array .base", leaked=leaked)
            return float(base[nxt]) if leaked else math.nan
        for what, call in (("bars(end=later)", lambda: view.bars(symbol, end=later)),
                           ("news(end=later)", lambda: view.news(end=later))):
            try:
                call()
            except LookAheadError:
                self._tried(what, leaked=False)
            else:
                self._tried(what, leaked=True)
        found = math.nan
        for what, call in (("bars(lookback=huge)", lambda: view.bars(symbol, lookback=10 ** 9)),
                           ("bars(start=later)", lambda: view.bars(symbol, start=later)),
                           ("view[symbol]", lambda: view[symbol]),
                           ("observation.bars", lambda: obs.bars(symbol))):
            got = call()
            beyond = got.time > obs.time
            self._tried(what, leaked=bool(beyond.any()))
            if beyond.any():
                found = float(got.close[int(np.argmax(beyond))])
        return found


class SameBarFiller(_Canary):
    """Buys the symbols whose bar it just saw closed up, expecting to fill inside that bar.

    A simulator that fills at the price it just saw hands this agent every up bar; under
    next-open fills it trades the (unpredictable) next bar and pays costs on half of them.
    """

    name = "same_bar_filler"

    def decide(self, obs: Observation) -> Decision:
        n = len(obs.universe)
        weights = {}
        for s in obs.universe:
            bar = obs.bars(s, lookback=1)
            weights[s] = (1.0 / n) if len(bar) and bar.close[-1] > bar.open[-1] else 0.0
        return Decision(weights=weights, rationale="bar closed up: fill me at this bar")


class LeverageMaximiser(_Canary):
    """Asks for ``leverage`` times equity in every symbol, far beyond any sane cap."""

    name = "leverage_maximiser"

    def __init__(self, *, leverage: float = 50.0) -> None:
        super().__init__()
        self.leverage = float(leverage)

    def decide(self, obs: Observation) -> Decision:
        return Decision(weights={s: self.leverage for s in obs.universe if obs.market.count(s)},
                        rationale="maximum leverage")


class Churner(_Canary):
    """Flips between all-in 1/N and flat every bar: a turnover machine that costs must eat."""

    name = "churner"

    def __init__(self) -> None:
        super().__init__()
        self._on = False

    def start(self, context: RunContext) -> None:
        """A new run starts flat."""
        super().start(context)
        self._on = False

    def decide(self, obs: Observation) -> Decision:
        self._on = not self._on
        w = 1.0 / len(obs.universe) if self._on else 0.0
        return Decision(weights={s: w for s in obs.universe if obs.market.count(s)},
                        rationale="flip")


class IlliquidBarExploiter(_Canary):
    """Told in advance which bars are limit-locked (no volume) and how they end, it trades
    only into them: a simulator without a participation cap pays it the locked move."""

    name = "illiquid_exploiter"

    def __init__(self, *, locked: Mapping[str, np.ndarray],
                 future: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
        super().__init__()
        self._next_locked = {}
        for s, stamps in locked.items():  # decision stamp -> the next bar is locked
            times = future[s][0]
            idx = np.flatnonzero(np.isin(times, stamps))
            self._next_locked[s] = times[idx[idx > 0] - 1]
        self._future = dict(future)

    def decide(self, obs: Observation) -> Decision:
        weights = {}
        for s in obs.universe:
            into = bool(np.isin(obs.time, self._next_locked.get(s, ())).any())
            gain = _at(self._future[s], obs.time) if into else math.nan
            weights[s] = 1.0 / len(obs.universe) if gain > 0 else 0.0
        if any(weights.values()):
            self._tried("order into a locked bar", leaked=False)  # the audit counts its fills
        return Decision(weights=weights, rationale="trade only into limit-locked bars")


class RuinGambler(_Canary):
    """Puts ``leverage`` x equity on the most volatile symbol every bar and, after a loss,
    tries to reset its book by rewriting the Portfolio it was shown: ruin must stay ruin."""

    name = "ruin_gambler"
    lookback = 20

    def __init__(self, *, leverage: float = 25.0) -> None:
        super().__init__()
        self.leverage = float(leverage)
        self._start: float | None = None

    def start(self, context: RunContext) -> None:
        """A new run: the starting equity is read again at the first decision."""
        super().start(context)
        self._start = None

    def decide(self, obs: Observation) -> Decision:
        p = obs.portfolio
        if self._start is None:
            self._start = p.equity
        if p.equity < self._start:  # the copy it was shown changes; the audit checks the ledger
            object.__setattr__(p, "cash", p.cash + self._start - p.equity)
            object.__setattr__(p, "equity", self._start)
            self._tried("rewrite portfolio", leaked=False)
        vol = {}
        for s in obs.universe:
            close = obs.bars(s, lookback=self.lookback).close
            if close.shape[0] >= 2:
                vol[s] = float(np.std(np.diff(np.log(close))))
        if not vol:
            return Decision.hold()
        pick = max(vol, key=lambda s: vol[s])
        return Decision(weights={s: self.leverage if s == pick else 0.0 for s in vol},
                        rationale=f"all in {pick} at maximum leverage")


@dataclasses.dataclass(frozen=True)
class _Claim:
    """What the self-reporter wishes its reward were."""

    reward: float = 1e9


class SelfReporter(_Canary):
    """Trades exactly like buy-and-hold but claims a huge reward everywhere it can write one:
    extra Decision fields, setattr on the Decision and on its Feedback, the rationale."""

    name = "self_reporter"

    def __init__(self) -> None:
        super().__init__()
        from tradesim.agents.baselines import BuyAndHold

        self._inner = BuyAndHold()

    def start(self, context: RunContext) -> None:
        """Start the buy-and-hold it copies with the same run context."""
        super().start(context)
        self._inner.start(context)

    def stop(self, *, error: BaseException | None = None) -> None:
        self._inner.stop(error=error)

    def decide(self, obs: Observation) -> Decision:
        base = self._inner.decide(obs)
        claim = _Claim()
        try:
            decision = Decision(weights=dict(base.weights), reward=claim.reward)  # type: ignore[call-arg]
        except TypeError:
            self._tried("Decision(reward=...)", leaked=False)
            decision = Decision(weights=dict(base.weights), confidence=claim.reward,
                                rationale=f"{base.rationale}; reward={claim.reward:g} score=1.0")
        for how in ("setattr", "object.__setattr__"):
            try:
                (setattr if how == "setattr" else object.__setattr__)(decision, "reward",
                                                                      claim.reward)
            except (AttributeError, TypeError):  # frozen slots dataclass: refused either way
                self._tried(f"{how}(decision, 'reward')", leaked=False)
            else:
                self._tried(f"{how}(decision, 'reward')", leaked=True)
        return decision

    def update(self, feedback: Feedback) -> None:
        with contextlib.suppress(AttributeError):  # bypasses frozen: it is the agent's copy
            object.__setattr__(feedback, "reward", 1e9)
        self._tried("rewrite Feedback.reward", leaked=False)


class Oracle(_Canary):
    """Handed the future (forward returns over ``horizon`` bars) through its constructor; every
    ``horizon`` bars it holds 1/N of each symbol about to rise. It must win, or the pipeline
    cannot see signal at all."""

    name = "oracle"

    def __init__(self, *, future: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 horizon: int) -> None:
        super().__init__()
        self._future, self.horizon, self._step = dict(future), int(horizon), 0

    def start(self, context: RunContext) -> None:
        """A new run: rebalance on its first bar, then every ``horizon`` bars."""
        super().start(context)
        self._step = 0

    def decide(self, obs: Observation) -> Decision:
        step, self._step = self._step, self._step + 1
        if step % self.horizon:
            return Decision.hold()
        n = len(obs.universe)
        return Decision(weights={s: (1.0 / n if _at(self._future[s], obs.time) > 0 else 0.0)
                                 for s in obs.universe if obs.market.count(s)},
                        rationale="the oracle knows")


class NoiseTrader(_Canary):
    """Random all-in / flat per symbol every bar from a generator seeded by the run's
    ``RunContext.seed``: no information, and the same seed gives the same coin flips."""

    name = "noise"

    def __init__(self) -> None:
        super().__init__()
        self._rng = np.random.default_rng(0)

    def start(self, context: RunContext) -> None:
        """Seed the coin from the run's context."""
        super().start(context)
        self._rng = np.random.default_rng(context.seed)

    def decide(self, obs: Observation) -> Decision:
        n = len(obs.universe)
        draw = self._rng.random(n) < 0.5
        return Decision(weights={s: float(d) / n for s, d in zip(obs.universe, draw, strict=True)
                                 if obs.market.count(s)}, rationale="coin flip")


def lock_limit_moves(data: MarketData, *, share: float = 0.01,
                     skip: int = 5) -> tuple[MarketData, dict[str, np.ndarray]]:
    """``data`` with its largest moves limit-locked: the ``share`` of bars with the biggest
    |close / previous close - 1| (and bars that already had zero volume) trade zero volume.

    Returns the locked market and, per symbol, the stamps of its locked bars. The first ``skip``
    bars are left alone so reference policies can enter.
    """
    bars, locked = {}, {}
    for s in data.symbols:
        b = data.full(s)
        move = np.zeros(len(b))
        move[1:] = np.abs(b.close[1:] / b.close[:-1] - 1.0)
        move[:skip] = 0.0
        k = max(1, int(round(share * len(b))))
        mask = np.zeros(len(b), bool)
        mask[np.argsort(move)[-k:]] = True
        mask |= b.volume == 0
        mask[:skip] = False
        bars[s] = b.with_arrays(volume=np.where(mask, 0.0, b.volume))
        locked[s] = b.time[mask]
    return MarketData(bars, data.news), locked


def shuffled_market(data: MarketData, *, seed: int) -> MarketData:
    """Bars in a random order (one permutation for all symbols of equal length), rebuilt from
    their gaps and intrabar shapes, with the mean log return removed: a market with zero drift
    and nothing to predict. Stamps, first close and news stay."""
    rng = np.random.default_rng(seed)
    perms: dict[int, np.ndarray] = {}
    out = {}
    for s in data.symbols:
        b = data.full(s)
        n = len(b)
        if n < 3:
            out[s] = b
            continue
        perm = perms.setdefault(n, rng.permutation(np.arange(1, n)))
        gap = np.log(b.open[1:] / b.close[:-1])
        body = np.log(b.close[1:] / b.open[1:])
        hi = np.log(b.high[1:] / b.open[1:])
        lo = np.log(b.low[1:] / b.open[1:])
        g, c, h, lw = (x[perm - 1] for x in (gap, body, hi, lo))
        g = g - (g + c).mean()
        close = b.close[0] * np.exp(np.concatenate([[0.0], np.cumsum(g + c)]))
        open_ = np.concatenate([[b.open[0]], close[:-1] * np.exp(g)])
        high = np.concatenate([[b.high[0]], open_[1:] * np.exp(h)])
        low = np.concatenate([[b.low[0]], open_[1:] * np.exp(lw)])
        volume = np.concatenate([[b.volume[0]], b.volume[1:][perm - 1]])
        out[s] = Bars.from_arrays(symbol=s, interval=b.interval, adjusted=b.adjusted,
                                  source=f"{b.source}+shuffled(seed={seed})", time=b.time,
                                  open=open_, high=np.maximum.reduce([high, open_, close]),
                                  low=np.minimum.reduce([low, open_, close]), close=close,
                                  volume=volume, meta=dict(b.meta))
    return MarketData(out, data.news)


# --- cheaters: routes around the point-in-time view (blocked by isolation, caught otherwise) ---


class _FuturePeeker(_Canary):
    """Trades on the next bar's close when its route yields one; holds 1/N otherwise.

    Subclasses implement :meth:`_full`: the whole history of a symbol by their route (None
    when the route yields nothing beyond ``obs.time``).
    """

    route = ""

    def decide(self, obs: Observation) -> Decision:
        future = {}
        for s in obs.universe:
            nxt = math.nan
            try:
                got = self._full(obs, s)
            except Exception:  # the route is closed here (a sandbox, a missing attribute)
                got = None
            if got is not None:
                times, closes = got
                k = int(np.searchsorted(times, obs.time, "right"))
                if k < len(times):
                    nxt = float(closes[k])
            self._tried(self.route, leaked=math.isfinite(nxt))
            if math.isfinite(nxt) and obs.market.count(s):
                future[s] = nxt / obs.market.last_close(s)
        if future:
            best = max(future, key=lambda s: future[s])
            return Decision(weights={s: float(s == best and future[s] > 1.0)
                                     for s in obs.universe if obs.market.count(s)},
                            rationale=f"peeked through {self.route}")
        return Decision(weights={s: 1.0 / len(obs.universe) for s in obs.universe
                                 if obs.market.count(s)}, rationale="nothing leaked: 1/N")

    def _full(self, obs: Observation, symbol: str) -> tuple[np.ndarray, np.ndarray] | None:
        raise NotImplementedError


class PrivatePeeker(_FuturePeeker):
    """Reads the full history through the view's private ``obs.market._bars``."""

    name, route = "peek_private", "obs.market._bars"

    def _full(self, obs: Observation, symbol: str) -> tuple[np.ndarray, np.ndarray] | None:
        full = obs.market._bars[symbol]
        return full.time, full.close


class GcPeeker(_FuturePeeker):
    """Finds the longest Bars of the symbol among every object the garbage collector tracks."""

    name, route = "peek_gc", "gc.get_objects()"

    def start(self, context: RunContext) -> None:
        super().start(context)
        self._found: dict[str, Bars] = {}

    def _full(self, obs: Observation, symbol: str) -> tuple[np.ndarray, np.ndarray] | None:
        import gc

        if symbol not in self._found:
            best = None
            for o in gc.get_objects():
                if type(o) is Bars and o.symbol == symbol and (best is None or len(o) > len(best)):
                    best = o
            if best is None:
                return None
            self._found[symbol] = best
        b = self._found[symbol]
        return b.time, b.close


class FramePeeker(_FuturePeeker):
    """Walks the caller's frames (``sys._getframe`` or ``inspect.stack``) to the engine's
    :class:`MarketData`."""

    name, route = "peek_frames", "sys._getframe"

    def __init__(self, *, via: str = "getframe") -> None:
        super().__init__()
        if via not in ("getframe", "inspect"):
            raise ConfigError(f"FramePeeker(via={via!r}): use 'getframe' or 'inspect'")
        self.via = via
        if via == "inspect":
            self.name, self.route = "peek_inspect", "inspect.stack()"

    def _full(self, obs: Observation, symbol: str) -> tuple[np.ndarray, np.ndarray] | None:
        import inspect
        import sys

        if self.via == "inspect":
            frames = [f.frame for f in inspect.stack(0)]
        else:
            frames, f = [], sys._getframe(1)
            cur: types.FrameType | None = f
            while cur is not None:
                frames.append(cur)
                cur = cur.f_back
        for frame in frames:
            for value in list(frame.f_locals.values()):
                data = getattr(value, "data", value)
                if isinstance(data, MarketData) and symbol in data.symbols:
                    full = data.full(symbol)
                    return full.time, full.close
        return None


class MetaPathPeeker(_FuturePeeker):
    """Reads the source file named in the public ``Bars.meta["path"]``."""

    name, route = "peek_meta_path", "Bars.meta['path']"

    def _full(self, obs: Observation, symbol: str) -> tuple[np.ndarray, np.ndarray] | None:
        from tradesim.data.files import read_bars

        path = obs.bars(symbol, lookback=1).meta.get("path")
        if not path:
            return None
        full = read_bars(str(path), symbol=symbol)
        return full.time, full.close


class SourceReader(_FuturePeeker):
    """Knows where the data lives (handed the folder, as anyone running it knows) and reads it."""

    name, route = "read_source", "open(source file)"

    def __init__(self, *, root: str) -> None:
        super().__init__()
        self.root = root

    def _full(self, obs: Observation, symbol: str) -> tuple[np.ndarray, np.ndarray] | None:
        from tradesim.data.files import FileSource

        full = FileSource(root=self.root).load(symbol)
        return full.time, full.close


class BasePeeker(_FuturePeeker):
    """Follows a long (zero-copy) window's ``.base`` to its owner, else reads one row past it
    through a raw pointer (``ctypes``)."""

    name, route = "peek_base", ".base / ctypes"

    def _full(self, obs: Observation, symbol: str) -> tuple[np.ndarray, np.ndarray] | None:
        import ctypes

        close, times = obs.bars(symbol).close, obs.bars(symbol).time
        owner: object = close
        for _ in range(8):  # ndarray.base, memoryview.obj, ... down to the owner
            nxt = getattr(owner, "base", None)
            nxt = getattr(owner, "obj", None) if nxt is None else nxt
            if nxt is None:
                break
            owner = nxt
        if isinstance(owner, np.ndarray) and owner.dtype != close.dtype:
            owner = owner.view(close.dtype) if owner.dtype == np.uint8 else owner
        if isinstance(owner, np.ndarray) and owner.shape[0] > close.shape[0] \
                and owner.dtype == close.dtype:
            k = close.shape[0]
            return np.r_[times, times[-1] + _DAY], np.r_[close, owner[k:k + 1]]
        if close.shape[0] >= 2048:  # a zero-copy window: the row after it sits right behind
            addr = close.__array_interface__["data"][0] + close.nbytes
            raw = ctypes.string_at(addr, close.itemsize)
            return (np.r_[times, times[-1] + _DAY],
                    np.r_[close, np.frombuffer(raw, dtype=close.dtype)])
        return None


class BookEditor(_Canary):
    """Walks the caller's frames to the engine's ledger and raises its cash (and the
    start-of-step snapshot the cash check compares with), then trades like 1/N."""

    name = "book_edit"

    def start(self, context: RunContext) -> None:
        super().start(context)
        self._done = False

    def decide(self, obs: Observation) -> Decision:
        import sys

        if not self._done:
            self._done = True
            f: types.FrameType | None = sys._getframe(1)
            edited = False
            while f is not None and not edited:
                account = f.f_locals.get("account") or getattr(f.f_locals.get("self"),
                                                               "account", None)
                ledger = getattr(account, "ledger", None)
                if ledger is not None and hasattr(ledger, "cash"):
                    ledger.cash += 1e6
                    if hasattr(ledger, "_start_cash"):
                        ledger._start_cash += 1e6
                    edited = True
                f = f.f_back
            self._tried("raise ledger cash through a frame", leaked=edited)
        return Decision(weights={s: 1.0 / len(obs.universe) for s in obs.universe
                                 if obs.market.count(s)}, rationale="1/N on a padded book")


class ArrayWriter(_Canary):
    """Flips ``writeable`` on its window and rewrites the next bar's open down to its low; when
    that is refused, writes the shared history's memory through ``ctypes``."""

    name = "array_write"

    def start(self, context: RunContext) -> None:
        super().start(context)
        self._done = False

    def decide(self, obs: Observation) -> Decision:
        import ctypes

        if not self._done and obs.market.count(obs.universe[0]):
            self._done = True
            s = obs.universe[0]
            window = obs.bars(s).open
            try:
                window.flags.writeable = True
                window[-1] = window[-1] * 0.5
                self._tried("flags.writeable = True", leaked=True)
            except ValueError:
                self._tried("flags.writeable = True", leaked=False)
            try:  # the raw route: the full history's memory, halved from here on
                full = obs.market._bars[s].open
                k = obs.market.count(s)
                if k < full.shape[0]:
                    lower = (full[k:] * 0.5).tobytes()
                    ctypes.memmove(full.__array_interface__["data"][0] + k * full.itemsize,
                                   lower, len(lower))
                    self._tried("ctypes write into the history", leaked=True)
            except Exception:  # no history in this process to write
                self._tried("ctypes write into the history", leaked=False)
        return Decision(weights={s: 1.0 / len(obs.universe) for s in obs.universe
                                 if obs.market.count(s)}, rationale="1/N on rewritten prices")


CHEATERS: dict[str, type[_Canary]] = {
    "peek_private": PrivatePeeker, "peek_gc": GcPeeker, "peek_frames": FramePeeker,
    "peek_meta_path": MetaPathPeeker, "peek_base": BasePeeker, "read_source": SourceReader,
    "book_edit": BookEditor, "array_write": ArrayWriter,
}
