"""Validated containers for price bars and news: NumPy arrays, UTC bar-end stamps, provenance.

Every source returns these, the store persists them, and the point-in-time view slices them
without copying. Timestamps are ``datetime64[ns]`` in UTC and mark the *end* of each bar, so a
bar is knowable exactly when its stamp has passed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from tradesim.errors import DataFormatError

PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
BAR_COLUMNS: tuple[str, ...] = (*PRICE_COLUMNS, "volume")
INTERVALS: tuple[str, ...] = ("1m", "2m", "5m", "15m", "30m", "1h", "1d")

_NS = np.dtype("datetime64[ns]")


def to_utc_ns(values: object) -> np.ndarray:
    """Convert stamps (tz-aware or UTC-naive pandas/NumPy/str) to a ``datetime64[ns]`` UTC array."""
    idx = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
    return idx.tz_convert("UTC").tz_localize(None).to_numpy(dtype=_NS)


def to_utc_stamp(value: object) -> np.datetime64:
    """Convert one time (str, datetime, pandas or NumPy) to a ``datetime64[ns]`` UTC scalar.

    A naive value is taken as UTC.
    """
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return np.datetime64(ts.tz_localize(None).value, "ns")


def iso_time(t: np.datetime64) -> str:
    """A UTC stamp as ``YYYY-MM-DDTHH:MM:SSZ`` (how errors and records name a bar)."""
    return str(t.astype("datetime64[s]")) + "Z"


def interval_nanos(interval: str) -> int:
    """Length of a bar interval in nanoseconds (``1d`` counts as 24h)."""
    if interval not in INTERVALS:
        raise ValueError(f"unknown interval {interval!r}; use one of {', '.join(INTERVALS)}")
    unit = {"m": 60, "h": 3600, "d": 86400}[interval[-1]]
    return int(interval[:-1]) * unit * 1_000_000_000


def seal(arr: np.ndarray) -> np.ndarray:
    """``arr`` as a read-only-for-good array: a view of an immutable ``bytes`` copy, so nobody
    (its owner included) can set ``flags.writeable = True`` on it or on any view of it."""
    if isinstance(arr.base, bytes) and not arr.flags.writeable:
        return arr  # already sealed
    return np.frombuffer(np.ascontiguousarray(arr).tobytes(), dtype=arr.dtype)


@dataclass(frozen=True, slots=True, eq=False)
class Bars:
    """OHLCV bars of one symbol: float64 arrays aligned with ``time`` (UTC bar end, increasing).

    ``adjusted`` says whether prices are split/dividend adjusted; ``source`` names where they came
    from. Construct with :meth:`from_arrays` or :meth:`from_frame`, which validate shapes and types.
    """

    symbol: str
    interval: str
    adjusted: bool
    source: str
    time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_arrays(cls, *, symbol: str, interval: str, adjusted: bool, source: str,
                    time: object, open: object, high: object, low: object, close: object,
                    volume: object, meta: dict | None = None) -> Bars:
        """Build bars from array-likes, converting stamps to UTC ns and prices to float64."""
        interval_nanos(interval)
        t = time if isinstance(time, np.ndarray) and time.dtype == _NS else to_utc_ns(time)
        cols = {name: np.array(arr, dtype=np.float64, copy=True)
                for name, arr in zip(BAR_COLUMNS, (open, high, low, close, volume))}
        for name, arr in cols.items():
            if arr.shape != t.shape:
                raise DataFormatError(f"{symbol}: column {name} has {arr.shape[0]} rows but time "
                                      f"has {t.shape[0]}", column=name)
        t = np.array(t, dtype=_NS, copy=True)
        return cls(symbol=symbol, interval=interval, adjusted=bool(adjusted), source=source,
                   time=seal(t), meta=dict(meta or {}),
                   **{name: seal(arr) for name, arr in cols.items()})

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, *, symbol: str, interval: str, adjusted: bool,
                   source: str, meta: dict | None = None) -> Bars:
        """Build bars from a frame indexed by bar-end time with open/high/low/close/volume columns."""
        missing = [c for c in BAR_COLUMNS if c not in frame.columns]
        if missing:
            raise DataFormatError(f"{symbol}: missing column(s) {', '.join(missing)}; "
                                  f"expected {', '.join(BAR_COLUMNS)}", column=missing[0])
        return cls.from_arrays(symbol=symbol, interval=interval, adjusted=adjusted, source=source,
                               time=frame.index, meta=meta,
                               **{c: frame[c].to_numpy(dtype=np.float64) for c in BAR_COLUMNS})

    def __len__(self) -> int:
        return int(self.time.shape[0])

    def frame(self) -> pd.DataFrame:
        """The bars as a DataFrame indexed by tz-aware UTC bar-end time (copies; for the edges)."""
        index = pd.DatetimeIndex(self.time, name="time").tz_localize("UTC")
        return pd.DataFrame({c: getattr(self, c) for c in BAR_COLUMNS}, index=index)

    def head(self, n: int) -> Bars:
        """The first ``n`` bars as zero-copy views of these arrays."""
        return self.slice(0, n)

    def slice(self, start: int, stop: int) -> Bars:
        """Bars ``[start, stop)`` as zero-copy views."""
        s = slice(start, stop)
        return Bars(self.symbol, self.interval, self.adjusted, self.source, self.time[s],
                    self.open[s], self.high[s], self.low[s], self.close[s], self.volume[s],
                    self.meta)

    def between(self, start: object | None = None, end: object | None = None) -> Bars:
        """Bars whose end stamp lies in ``[start, end]`` (either bound optional), as views."""
        i = 0 if start is None else int(np.searchsorted(self.time, to_utc_stamp(start), "left"))
        j = len(self) if end is None else int(np.searchsorted(self.time, to_utc_stamp(end), "right"))
        return self.slice(i, j)

    def with_arrays(self, **arrays: Any) -> Bars:
        """A copy with some arrays (or ``meta``) replaced (used by repairs); other fields are shared."""
        sealed: dict[str, Any] = {k: seal(v) if isinstance(v, np.ndarray) else v
                                  for k, v in arrays.items()}
        return replace(self, **sealed)

    def fingerprint(self) -> str:
        """SHA-256 over the stamps, prices and provenance: identifies exactly which data a run saw."""
        h = hashlib.sha256(f"{self.symbol}|{self.interval}|{self.adjusted}|{self.source}".encode())
        for name in ("time", *BAR_COLUMNS):
            h.update(np.ascontiguousarray(getattr(self, name)).tobytes())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        span = (f"{pd.Timestamp(self.time[0])} .. {pd.Timestamp(self.time[-1])}" if len(self)
                else "empty")
        return (f"Bars({self.symbol!r}, {self.interval}, {len(self)} bars, {span} UTC, "
                f"adjusted={self.adjusted}, source={self.source!r})")


NEWS_COLUMNS: tuple[str, ...] = ("published_at", "available_at", "symbol", "title", "body", "source")


@dataclass(frozen=True, slots=True, eq=False)
class News:
    """Dated headlines sorted by ``available_at`` (UTC ns): when an agent may first see each item.

    ``published_at`` is the stamp in the feed; ``available_at`` is when it becomes usable for
    trading (for example the next session's open for items published after the close).
    """

    published_at: np.ndarray
    available_at: np.ndarray
    symbol: np.ndarray
    title: np.ndarray
    body: np.ndarray
    source: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> News:
        """Build from a frame with the :data:`NEWS_COLUMNS`; sorts stably by ``available_at``."""
        missing = [c for c in ("published_at", "available_at", "symbol", "title")
                   if c not in frame.columns]
        if missing:
            raise DataFormatError(f"news frame lacks column(s) {', '.join(missing)}",
                                  column=missing[0])
        avail = to_utc_ns(frame["available_at"])
        order = np.argsort(avail, kind="stable")
        def text(col: str) -> np.ndarray:
            values = frame[col] if col in frame.columns else pd.Series([""] * len(frame))
            return values.fillna("").astype(str).to_numpy(dtype=object)[order]
        arrays = dict(published_at=to_utc_ns(frame["published_at"])[order],
                      available_at=avail[order], symbol=text("symbol"), title=text("title"),
                      body=text("body"), source=text("source"))
        for arr in arrays.values():
            arr.flags.writeable = False  # shared by every view, like Bars
        return cls(**arrays)

    @classmethod
    def empty(cls) -> News:
        """No news at all."""
        return cls.from_frame(pd.DataFrame({c: pd.Series(dtype=object) for c in NEWS_COLUMNS}))

    def __len__(self) -> int:
        return int(self.available_at.shape[0])

    def head(self, n: int) -> News:
        """The first ``n`` items (by availability) as zero-copy views."""
        return News(*(getattr(self, c)[:n] for c in NEWS_COLUMNS))

    def tail(self, n: int) -> News:
        """The last ``n`` items (by availability) as zero-copy views."""
        start = max(0, len(self) - n)
        return News(*(getattr(self, c)[start:] for c in NEWS_COLUMNS))

    def for_symbols(self, symbols: list[str] | tuple[str, ...]) -> News:
        """Only items tagged with one of ``symbols`` (copies; do it once, not per step)."""
        keep = np.isin(self.symbol, list(symbols))
        return News(*(getattr(self, c)[keep] for c in NEWS_COLUMNS))

    def frame(self) -> pd.DataFrame:
        """The items as a DataFrame with tz-aware UTC stamps (copies; for the edges)."""
        out = pd.DataFrame({c: getattr(self, c) for c in NEWS_COLUMNS})
        for c in ("published_at", "available_at"):
            out[c] = pd.DatetimeIndex(out[c]).tz_localize("UTC")
        return out

    def fingerprint(self) -> str:
        """SHA-256 over stamps, symbols and titles."""
        h = hashlib.sha256(self.available_at.tobytes())
        h.update(self.published_at.tobytes())
        for col in ("symbol", "title", "body", "source"):
            h.update("\x1f".join(getattr(self, col)).encode())
        return h.hexdigest()[:16]
