"""Clocks and feeds: what delivers bars to a session, one :class:`Tick` at a time.

A feed knows its universe and yields ticks in time order; each tick carries the bar row of every
symbol (NaN where a symbol has no bar then) and the point-in-time view an agent may see at that
moment. :class:`HistoricalFeed` replays a :class:`MarketData` over a clock (a backtest); the
paper daemon's live feed yields ticks as bars arrive. Rows are converted in chunks so a long
run holds no per-bar Python objects beyond the chunk being replayed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, Protocol, TypeVar

import numpy as np

from tradesim.data.view import MarketData, PointInTimeView

ClockKind = Literal["historical", "live"]

_T = TypeVar("_T")


def frozen_maker(cls: type[_T]) -> Callable[..., _T]:
    """A positional constructor of the frozen slots dataclass ``cls``: every field, in order.

    It sets each slot through its descriptor, about 2.5x cheaper than the generated ``__init__``
    (``object.__setattr__`` per field): for the few objects the session loop builds per bar.
    The objects are the same; no defaults apply and no ``__post_init__`` runs.
    """
    if "__slots__" not in vars(cls):
        raise TypeError(f"frozen_maker needs a slots dataclass; {cls.__qualname__} has no slots")
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]  # a dataclass by contract
    if any(n.startswith("_fm_") for n in names):  # the generated code's own names
        raise TypeError(f"frozen_maker cannot build {cls.__qualname__}: a field starts with _fm_")
    scope: dict[str, Any] = {"_fm_new": object.__new__, "_fm_cls": cls}
    scope.update({f"_fm_set_{n}": getattr(cls, n).__set__ for n in names})
    lines = [f"def make({', '.join(names)}):", "    _fm_obj = _fm_new(_fm_cls)",
             *(f"    _fm_set_{n}(_fm_obj, {n})" for n in names), "    return _fm_obj"]
    # as dataclasses writes __init__: one unrolled function (named for profiles and tracebacks)
    exec(compile("\n".join(lines), f"<frozen_maker {cls.__qualname__}>", "exec"), scope)
    make: Callable[..., _T] = scope["make"]
    return make


@dataclass(frozen=True, slots=True)
class Tick:
    """One bar-end stamp: the bar rows of the universe (NaN = no bar) and what is visible then."""

    step: int
    time: np.datetime64
    open: Sequence[float]
    high: Sequence[float]
    low: Sequence[float]
    close: Sequence[float]
    volume: Sequence[float]
    view: PointInTimeView
    ns: int  # ``time`` as integer nanoseconds (the account's bar spacing and fee accrual)


_tick = frozen_maker(Tick)  # a Tick per bar, positionally, at a third of the dataclass's cost


class Feed(Protocol):
    """Delivers ticks to a session, in time order, for one universe."""

    universe: tuple[str, ...]
    interval: str
    kind: ClockKind

    def __iter__(self) -> Iterator[Tick]: ...


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


class HistoricalFeed:
    """A :class:`MarketData` replayed over ``clock`` (bar-end stamps): the backtest's clock."""

    kind: ClockKind = "historical"

    def __init__(self, *, data: MarketData, universe: tuple[str, ...], clock: np.ndarray,
                 interval: str = "1d", chunk: int = 4096) -> None:
        self.data, self.universe, self.clock = data, tuple(universe), clock
        self.interval, self.chunk = interval, int(chunk)

    def __len__(self) -> int:
        return len(self.clock)

    def __iter__(self) -> Iterator[Tick]:
        data, clock = self.data, self.clock
        bars = {s: data.full(s) for s in data.symbols}
        names = tuple(bars)
        news = data.news
        rows = AlignedBars(data, self.universe, clock)
        for lo in range(0, len(clock), self.chunk):
            hi = min(lo + self.chunk, len(clock))
            part = clock[lo:hi]
            counts = list(zip(*(np.searchsorted(b.time, part, "right").tolist()
                                for b in bars.values())))
            n_news = np.searchsorted(news.available_at, part, "right").tolist()
            stamps = part.astype(np.int64).tolist()
            # tuples of floats: cheap to index, untracked by the cyclic garbage collector
            opens, highs, lows, closes, volumes = (list(zip(*a[lo:hi].T.tolist())) for a in (
                rows.open, rows.high, rows.low, rows.close, rows.volume))
            for k, t in enumerate(part):
                view = PointInTimeView(t, bars, dict(zip(names, counts[k])), news, n_news[k])
                yield _tick(lo + k, t, opens[k], highs[k], lows[k], closes[k], volumes[k], view,
                            stamps[k])


def closes_on(data: MarketData, symbol: str, clock: np.ndarray) -> np.ndarray:
    """Closes of ``symbol`` on ``clock``, carried forward over missing bars (NaN before its first)."""
    x = AlignedBars(data, (symbol,), clock).close[:, 0]
    idx = np.where(np.isnan(x), 0, np.arange(len(x)))
    np.maximum.accumulate(idx, out=idx)
    return x[idx]
