"""Point-in-time access: ``MarketData.as_of(t)`` shows only what was knowable at ``t``.

A view holds the decision time and, per symbol, the count of bars whose end is <= t; every
accessor returns read-only arrays bounded by that count — long windows zero-copy over a buffer that
ends at t, short ones copied — so no public path, NumPy's ``.base`` included, reaches a later bar.
Any request reaching past ``t`` raises :class:`LookAheadError`. Agents get data only this way.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd

from tradesim.data.bars import NEWS_COLUMNS, Bars, News, to_utc_stamp
from tradesim.errors import LookAheadError, UnknownSymbolError


class MarketData:
    """A universe of bars (one :class:`Bars` per symbol) plus news, sliceable point-in-time."""

    def __init__(self, bars: Mapping[str, Bars], news: News | None = None) -> None:
        if not bars:
            raise ValueError("MarketData needs at least one symbol's bars")
        self._bars = dict(bars)
        self._news = news if news is not None else News.empty()
        self._fingerprints: dict[str, str] | None = None

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self._bars)

    def __repr__(self) -> str:
        bars = sum(len(b) for b in self._bars.values())
        return (f"MarketData({len(self._bars)} symbols: {', '.join(self._bars)}; {bars} bars, "
                f"{len(self._news)} news items)")

    @property
    def repairs(self) -> pd.DataFrame:
        """Every repair made to these bars on load, one row per (symbol, time, check): what the
        data was before and after. Empty when nothing was repaired. For reports and run folders
        (``tradesim.data.quality.render_repairs`` prints it)."""
        from tradesim.data.quality import repairs_frame

        return repairs_frame(r for b in self._bars.values() for r in b.meta.get("repairs", []))

    @property
    def news(self) -> News:
        """All news (for loaders and reports, never handed to agents)."""
        return self._news

    def full(self, symbol: str) -> Bars:
        """The whole history of ``symbol`` (engine and reports only; agents get views)."""
        try:
            return self._bars[symbol]
        except KeyError:
            raise UnknownSymbolError(f"symbol {symbol!r} is not in this data; "
                                     f"loaded: {', '.join(self._bars)}") from None

    def timeline(self) -> np.ndarray:
        """Sorted union of all bar-end stamps: the clock a backtest steps through."""
        return np.unique(np.concatenate([b.time for b in self._bars.values()]))

    def fingerprints(self) -> dict[str, str]:
        """Per-symbol data fingerprints (and ``news``) recorded with every run."""
        if self._fingerprints is None:  # the arrays are read-only: hash them once
            out = {s: b.fingerprint() for s, b in self._bars.items()}
            if len(self._news):
                out["news"] = self._news.fingerprint()
            self._fingerprints = out
        return dict(self._fingerprints)

    def as_of(self, t: object) -> PointInTimeView:
        """The market as knowable at ``t``: bars ending <= t, news available <= t."""
        stamp = t if isinstance(t, np.datetime64) else to_utc_stamp(t)
        counts = {s: int(b.time.searchsorted(stamp, "right")) for s, b in self._bars.items()}
        n_news = int(self._news.available_at.searchsorted(stamp, "right"))
        return PointInTimeView(stamp, self._bars, counts, self._news, n_news)


class PointInTimeView(Mapping[str, Bars]):
    """Read-only market data as of ``time``; a mapping from symbol to its visible bars."""

    __slots__ = ("_time", "_bars", "_counts", "_news", "_n_news")

    def __init__(self, time: np.datetime64, bars: Mapping[str, Bars], counts: Mapping[str, int],
                 news: News, n_news: int) -> None:
        self._time, self._bars, self._counts = time, bars, counts
        self._news, self._n_news = news, n_news

    @property
    def time(self) -> np.datetime64:
        """Decision time (UTC ns): nothing later is visible."""
        return self._time

    def __getitem__(self, symbol: str) -> Bars:
        return self.bars(symbol)

    def __iter__(self) -> Iterator[str]:
        return iter(self._bars)

    def __len__(self) -> int:
        return len(self._bars)

    def _check(self, end: object | None) -> None:
        if end is not None and to_utc_stamp(end) > self._time:
            raise LookAheadError(f"asked for data up to {to_utc_stamp(end)} but the decision time "
                                 f"is {self._time}; only data ending at or before it is visible")

    def bars(self, symbol: str, *, start: object | None = None, end: object | None = None,
             lookback: int | None = None) -> Bars:
        """Visible bars of ``symbol`` (optionally from ``start``, to ``end`` <= time, last ``lookback``)."""
        self._check(end)
        if symbol not in self._bars:
            raise UnknownSymbolError(f"symbol {symbol!r} is not in this universe; "
                                     f"available: {', '.join(self._bars)}")
        full, n = self._bars[symbol], self._counts[symbol]
        i, j = (0 if lookback is None else max(0, n - lookback)), n
        if start is not None or end is not None:
            window = full.head(n).between(start, end)  # views: only positions are read here
            j = int(full.time.searchsorted(window.time[-1], "right")) if len(window) else 0
            i = j - len(window)
            if lookback is not None:
                i = max(i, j - lookback)
        return _sealed(full, i, j)

    def count(self, symbol: str) -> int:
        """How many bars of ``symbol`` are visible."""
        return self._counts[symbol]

    def last_close(self, symbol: str) -> float:
        """Close of the latest visible bar of ``symbol`` (NaN if none yet)."""
        n = self._counts[symbol]
        return float(self._bars[symbol].close[n - 1]) if n else float("nan")

    def news(self, symbols: list[str] | tuple[str, ...] | None = None, *, end: object | None = None,
             lookback: int | None = None) -> News:
        """News available by ``time`` (optionally only for ``symbols``, the last ``lookback`` items)."""
        self._check(end)
        n = self._n_news if end is None else int(
            np.searchsorted(self._news.available_at, to_utc_stamp(end), "right"))
        items = self._news.head(n)
        if symbols is not None:
            items = items.for_symbols(symbols)  # copies
        items = items if lookback is None else items.tail(lookback)
        return News(*(_copy(getattr(items, c)) for c in NEWS_COLUMNS))


_COPY_BELOW = 2048  # rows; shorter windows are copied (cheaper than building a sealed view)


def _copy(arr: np.ndarray) -> np.ndarray:
    out = arr.copy()
    out.flags.writeable = False
    return out


def _prefix_view(arr: np.ndarray, i: int, j: int) -> np.ndarray:
    """Rows ``[i, j)`` of ``arr``, zero-copy, over a buffer that ends at row ``j``.

    A plain slice would keep the whole array reachable through ``.base``; this one's ``.base``
    is a ctypes buffer of exactly the visible rows.
    """
    size = arr.itemsize
    buf = (ctypes.c_char * ((j - i) * size)).from_address(arr.ctypes.data + i * size)
    # keeps the memory alive as long as the view (private, like any internals)
    setattr(buf, "_owner", arr)  # noqa: B010 -- ctypes instances take ad-hoc attributes; stubs don't say so
    out = np.frombuffer(buf, dtype=arr.dtype)  # type: ignore[call-overload]  # stub omits ctypes buffers
    out.flags.writeable = False
    return out


def _sealed(full: Bars, i: int, j: int) -> Bars:
    """Bars ``[i, j)`` whose arrays reach no later row, even through NumPy's ``.base``.

    Short windows are copied; long ones are zero-copy views over a truncated buffer, so a walk
    over history never copies it. (Agents run in-process: private attributes, ``gc`` and raw
    pointers are outside what a view can seal; untrusted code needs process isolation.)
    """
    take = _copy_rows if j - i < _COPY_BELOW else _prefix_view
    return Bars(full.symbol, full.interval, full.adjusted, full.source,
                time=take(full.time, i, j), open=take(full.open, i, j), high=take(full.high, i, j),
                low=take(full.low, i, j), close=take(full.close, i, j),
                volume=take(full.volume, i, j), meta=full.meta)


def _copy_rows(arr: np.ndarray, i: int, j: int) -> np.ndarray:
    return _copy(arr[i:j])
