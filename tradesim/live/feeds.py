"""Live clocks and feeds: when the next bar closes, and where its bars come from.

:func:`next_bar_closes` follows the exchange calendar (sessions, early closes, holidays and DST
come from exchange_calendars in UTC; ``24/7`` closes every UTC midnight). :class:`ReplayFeed`
replays recorded bars on an accelerated clock (tests, demos); :class:`PollingFeed` polls a
source (yfinance by default) after each bar close. Neither substitutes a stale price: a symbol
without a fresh bar gets NaN (no bar), which the account treats as "orders wait, mark stays".
"""

from __future__ import annotations

import logging
import threading
import time as _time
from collections.abc import Callable, Iterator

import numpy as np

from tradesim.data.bars import Bars, News, interval_nanos
from tradesim.data.calendars import session_bounds
from tradesim.data.view import MarketData, PointInTimeView
from tradesim.engine.feed import ClockKind, HistoricalFeed, Tick
from tradesim.errors import DataSourceError

log = logging.getLogger("tradesim.live")
_DAY_NS = 86_400 * 10**9


def next_bar_closes(after: np.datetime64, *, exchange: str, interval: str, count: int = 1
                    ) -> np.ndarray:
    """The next ``count`` bar-end stamps (UTC ns) strictly after ``after`` on ``exchange``.

    Daily bars end at each session's close (early closes honoured); intraday bars every
    ``interval`` from the open, the last one cut at the close.
    """
    after = _ns64(after)
    step = interval_nanos(interval)
    out: list[np.datetime64] = []
    lo = after - np.timedelta64(_DAY_NS, "ns")
    while len(out) < count:
        hi = lo + np.timedelta64(14 * _DAY_NS, "ns")
        _, opens, closes = session_bounds(lo, hi, exchange=exchange)
        for o, c in zip(opens, closes):
            if interval == "1d" or step >= _DAY_NS:
                ends = [c]
            else:
                ends = list(np.arange(o + np.timedelta64(step, "ns"), c,
                                      np.timedelta64(step, "ns"))) + [c]
            out.extend(e for e in ends if e > after and (not out or e > out[-1]))
        lo = hi
    return np.array(out[:count], dtype="datetime64[ns]")


class ReplayFeed:
    """Recorded bars replayed as a live feed: one tick every ``pace_s`` wall seconds.

    Ticks before ``start_step`` are skipped (a restart resumes after its last committed tick).
    ``stop`` ends the iteration early (the daemon is stopping, not the data).
    """

    kind: ClockKind = "live"

    def __init__(self, *, data: MarketData, universe: tuple[str, ...], clock: np.ndarray,
                 interval: str, pace_s: float = 0.0, start_step: int = 0,
                 stop: threading.Event | None = None) -> None:
        self.universe, self.interval = tuple(universe), interval
        self._inner = HistoricalFeed(data=data, universe=self.universe, clock=clock,
                                     interval=interval)
        self.pace_s, self.start_step = float(pace_s), int(start_step)
        self.stop = stop or threading.Event()
        self.degraded = ""
        self.next_due: float | None = None  # wall time the next tick is expected

    def __len__(self) -> int:
        return len(self._inner)

    def __iter__(self) -> Iterator[Tick]:
        for tick in self._inner:
            if tick.step < self.start_step:
                continue
            if self.pace_s:
                self.next_due = _time.time() + self.pace_s
                if self.stop.wait(self.pace_s):
                    return
            if self.stop.is_set():
                return
            yield tick


Fetch = Callable[[str, np.datetime64, np.datetime64], Bars]


class PollingFeed:
    """Bars polled from a source after each bar close of the exchange calendar.

    ``fetch(symbol, start, end)`` returns the symbol's bars ending in ``[start, end]``. A source
    error is an outage: retried with exponential backoff (``degraded`` says so meanwhile). A
    symbol whose newest bar is older than the due bar is stale: it is polled again every
    ``poll_s`` until ``max_wait_s``, then the tick goes out with NaN for it (halted).
    """

    kind: ClockKind = "live"

    def __init__(self, *, universe: tuple[str, ...], interval: str, exchange: str,
                 fetch: Fetch, after: np.datetime64, start_step: int = 0, delay_s: float = 5.0,
                 poll_s: float = 30.0, max_wait_s: float = 900.0, backoff_s: float = 2.0,
                 backoff_max_s: float = 120.0, lookback_days: int = 30,
                 now: Callable[[], float] = _time.time, stop: threading.Event | None = None,
                 sleep: Callable[[float], bool] | None = None, max_ticks: int | None = None
                 ) -> None:
        self.universe, self.interval, self.exchange = tuple(universe), interval, exchange
        self.fetch, self.after, self.start_step = fetch, _ns64(after), start_step
        self.delay_s, self.poll_s, self.max_wait_s = delay_s, poll_s, max_wait_s
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s
        self.lookback = np.timedelta64(lookback_days * _DAY_NS, "ns")
        self.now, self.stop = now, stop or threading.Event()
        self._sleep = sleep or self.stop.wait
        self.max_ticks = max_ticks
        self.degraded = ""
        self.next_due: float | None = None
        self.outages = 0

    def __iter__(self) -> Iterator[Tick]:
        step, t_prev = self.start_step, self.after
        while not self.stop.is_set() and (self.max_ticks is None
                                          or step - self.start_step < self.max_ticks):
            t = next_bar_closes(t_prev, exchange=self.exchange, interval=self.interval)[0]
            due = _epoch(t) + self.delay_s
            self.next_due = due
            while self.now() < due:
                if self._sleep(min(due - self.now(), 60.0)) or self.stop.is_set():
                    return
            bars = self._poll(t, due)
            if bars is None:
                return
            yield self._tick(step, t, bars)
            step, t_prev = step + 1, t

    def _poll(self, t: np.datetime64, due: float) -> dict[str, Bars] | None:
        """Fetch until every symbol has its bar at ``t`` or ``max_wait_s`` passed (None: stop)."""
        wait = self.backoff_s
        got: dict[str, Bars] = {}
        while True:
            try:
                for s in self.universe:
                    if s not in got or not _has(got[s], t):
                        got[s] = self.fetch(s, t - self.lookback, t)
            except DataSourceError as exc:
                self.outages += 1
                self.degraded = f"feed outage: {type(exc).__name__}: {exc}"
                log.warning("feed outage (%s); retrying in %.1fs", exc, wait)
                if self._sleep(wait) or self.stop.is_set():
                    return None
                wait = min(wait * 2, self.backoff_max_s)
                continue
            self.degraded = ""
            stale = [s for s in self.universe if not _has(got[s], t)]
            if not stale or self.now() - due >= self.max_wait_s:
                if stale:
                    log.warning("no fresh bar at %s for %s: halted this tick", t, ", ".join(stale))
                return got
            if self._sleep(self.poll_s) or self.stop.is_set():
                return None

    def _tick(self, step: int, t: np.datetime64, got: dict[str, Bars]) -> Tick:
        n = len(self.universe)
        rows = [[float("nan")] * n for _ in range(5)]
        for j, s in enumerate(self.universe):
            b = got[s]
            k = int(np.searchsorted(b.time, t, "left"))
            if k < len(b) and b.time[k] == t:  # the bar of t itself: never an older one
                for r, arr in zip(rows, (b.open, b.high, b.low, b.close, b.volume)):
                    r[j] = float(arr[k])
        counts = {s: int(np.searchsorted(b.time, t, "right")) for s, b in got.items()}
        view = PointInTimeView(t, got, counts, News.empty(), 0)
        o, h, lo, c, v = (tuple(r) for r in rows)
        return Tick(step, t, o, h, lo, c, v, view, int(t.astype("datetime64[ns]").astype(np.int64)))


def _has(b: Bars, t: np.datetime64) -> bool:
    return bool(len(b)) and bool((b.time == t).any())


def _ns64(t: object) -> np.datetime64:
    out: np.datetime64 = np.asarray(t, dtype="datetime64[ns]")[()]  # type: ignore[assignment]
    return out


def _epoch(t: np.datetime64) -> float:
    return float(_ns64(t).astype("int64")) / 1e9


def yahoo_fetch(*, interval: str) -> Fetch:
    """A :data:`Fetch` over yfinance (``YahooSource``), no cache: a poll must reach Yahoo.

    A symbol Yahoo does not know (HTTP 404: misspelt or delisted) is not a feed outage: it gets
    no bars, so it is halted at every tick (and logged) while the rest of the universe trades,
    instead of the whole feed retrying it forever. Rate limits, network and server errors still
    raise, and the feed backs off.
    """
    from tradesim.data.yahoo import YahooSource
    from tradesim.errors import UnknownSymbolError

    src = YahooSource(retries=0)
    unknown: set[str] = set()

    def fetch(symbol: str, start: np.datetime64, end: np.datetime64) -> Bars:
        try:
            return src.load(symbol, interval=interval, start=start, end=end)
        except UnknownSymbolError as exc:
            if symbol not in unknown:
                unknown.add(symbol)
                log.error("%s; it is halted until Yahoo knows it", exc)
            return Bars.from_arrays(symbol=symbol, interval=interval, adjusted=src.auto_adjust,
                                    source=src.name, time=np.empty(0, dtype="datetime64[ns]"),
                                    open=[], high=[], low=[], close=[], volume=[])

    return fetch
