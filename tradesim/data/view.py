"""Point-in-time access: ``MarketData.as_of(t)`` shows only what was knowable at ``t``.

A view holds the decision time and, per symbol, the count of bars whose end is <= t; every
accessor returns arrays bounded by that count that are read-only for good (non-owning views of
an immutable buffer, so ``flags.writeable = True`` raises): short windows over a fresh copy of
the visible rows, long ones zero-copy over a read-only memoryview of them. ``Bars.meta`` reaches
agents without source paths or whole-history entries. Any request reaching past ``t`` raises
:class:`LookAheadError`. Agents get data only this way. In one process private attributes,
``gc`` and raw pointers still reach the rest: untrusted agents run isolated (see
``docs/isolation.md``), and the look-ahead check proves any agent clean.
"""

from __future__ import annotations

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

    def fingerprints(self, *, fresh: bool = False) -> dict[str, str]:
        """Per-symbol data fingerprints (and ``news``) recorded with every run.

        ``fresh=True`` hashes the arrays again instead of returning the cached hashes: an
        evaluation compares fresh fingerprints before and after each agent to catch a write.
        """
        if self._fingerprints is None or fresh:
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

    def news_count(self) -> int:
        """How many news items are available by ``time``."""
        return self._n_news

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
_PATH_KEYS = frozenset({"path", "root", "file", "files", "cache", "cache_path", "source_path"})


def _copy(arr: np.ndarray) -> np.ndarray:
    """A read-only-for-good copy: a non-owning view of an immutable ``bytes`` buffer.

    Text columns (object arrays) become fixed-width ``str`` arrays, which have a buffer.
    """
    if arr.dtype == object:
        arr = np.asarray(arr.tolist(), dtype=str) if arr.shape[0] else np.zeros(0, dtype="U1")
    return np.frombuffer(np.ascontiguousarray(arr).tobytes(), dtype=arr.dtype)


def _prefix_view(arr: np.ndarray, i: int, j: int) -> np.ndarray:
    """Rows ``[i, j)`` of ``arr``, zero-copy, over a read-only memoryview of exactly those rows.

    A plain slice would hand out the whole array as ``.base`` (and its owner may flip
    ``writeable`` back); this one's ``.base`` is a read-only memoryview, so the flag cannot be
    set. (Its ``.obj`` is still the source in this process: isolation is what removes it.)
    """
    size = arr.itemsize
    raw = memoryview(np.ascontiguousarray(arr).view(np.uint8)).toreadonly()  # type: ignore[arg-type]  # ndarray exports a buffer
    return np.frombuffer(raw[i * size: j * size], dtype=arr.dtype)


def public_meta(meta: Mapping[str, object]) -> dict[str, object]:
    """What of ``Bars.meta`` an agent may see: scalar facts, no source path, nothing that spans
    the whole history (repairs, raw closes)."""
    out: dict[str, object] = {}
    for key, value in meta.items():
        if key in _PATH_KEYS or not isinstance(value, (str, int, float, bool)):
            continue
        if isinstance(value, str) and (value.startswith(("/", "~", "file:"))
                                       or "/" in value or "\\" in value):
            continue  # looks like a path: the agent could open the source
        out[key] = value
    return out


def _sealed(full: Bars, i: int, j: int) -> Bars:
    """Bars ``[i, j)`` whose arrays reach no later row, even through NumPy's ``.base``.

    Short windows are copied; long ones are zero-copy views over a read-only memoryview, so a
    walk over history never copies it. Either way ``flags.writeable = True`` raises. (In one
    process private attributes, ``gc`` and raw pointers are outside what a view can seal;
    untrusted code needs process isolation.)
    """
    take = _copy_rows if j - i < _COPY_BELOW else _prefix_view
    return Bars(full.symbol, full.interval, full.adjusted, full.source,
                time=take(full.time, i, j), open=take(full.open, i, j), high=take(full.high, i, j),
                low=take(full.low, i, j), close=take(full.close, i, j),
                volume=take(full.volume, i, j), meta=public_meta(full.meta))


def _copy_rows(arr: np.ndarray, i: int, j: int) -> np.ndarray:
    return _copy(arr[i:j])
