"""The local Parquet cache of bars: read-through, incremental, idempotent, crash-safe.

One file per (source key, interval, symbol); the source key carries the adjustment mode
(``yfinance-adj`` vs ``yfinance-raw``) and the file's metadata repeats it with the rest of the
provenance. Each file remembers the window it covers, so :meth:`Store.get` fetches only what is
missing. A fetched piece overlaps the stored bars by one bar; if the prices there disagree (a
new dividend or split re-based the adjusted history), the whole window is fetched again rather
than splicing two adjustment bases together. Writes go to a temporary file in the same folder,
are fsynced and then renamed over the old file, so a crash never leaves a half-written entry.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tradesim.data.bars import BAR_COLUMNS, PRICE_COLUMNS, Bars, interval_nanos, to_utc_stamp
from tradesim.data.sources import Source
from tradesim.errors import ConfigError, DataFormatError, DataSourceError

FORMAT_VERSION = 1
_META_KEY = b"tradesim"
_NS = np.dtype("datetime64[ns]")
_MAX_NAME = 120  # longer source keys are shortened with a hash to stay a valid folder name
_PRICE_RTOL = 1e-6  # overlap prices further apart than this mean the history was re-based
_SCHEMA = pa.schema([("time", pa.timestamp("ns", tz="UTC")),
                     *[(c, pa.float64()) for c in BAR_COLUMNS]])


def default_root() -> Path:
    """``$TRADESIM_CACHE`` if set, else ``~/.cache/tradesim``."""
    env = os.environ.get("TRADESIM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tradesim"


def end_bound(end: object | None) -> np.datetime64 | None:
    """An end bound as a UTC stamp; a bare date (``"2020-12-31"``) includes that whole day."""
    if end is None:
        return None
    day_only = (isinstance(end, str) and len(end.strip()) <= 10) or (
        isinstance(end, _dt.date) and not isinstance(end, _dt.datetime))
    stamp = to_utc_stamp(end)
    return stamp + np.timedelta64(86_400_000_000_000 - 1, "ns") if day_only else stamp


@dataclass(frozen=True, slots=True)
class StoreEntry:
    """What one cache file holds (read from its metadata, without loading the bars)."""

    source: str
    symbol: str
    interval: str
    adjusted: bool
    rows: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    fingerprint: str
    fetched_at: str
    path: Path


@dataclass(frozen=True, slots=True)
class _Cached:
    """A cache file's bars, the window it covers (``lo`` None = from the source's beginning)."""

    bars: Bars
    lo: np.datetime64 | None
    hi: np.datetime64


class Store:
    """Parquet cache keyed by (source key incl. adjustment mode, symbol, interval)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"cache {self.root} is a file, not a folder; pass a folder "
                              "(--cache DIR or $TRADESIM_CACHE)")

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    def path(self, *, source_key: str, symbol: str, interval: str) -> Path:
        """Where the entry lives: ``root/<source key>/<interval>/<symbol>.parquet`` (escaped)."""
        interval_nanos(interval)
        folder = _escape(source_key)
        if len(folder) > _MAX_NAME:  # e.g. a files source keyed by a long absolute path
            digest = hashlib.sha256(source_key.encode()).hexdigest()[:16]
            folder = f"{folder[:_MAX_NAME - 17]}-{digest}"
        return self.root / folder / interval / f"{_escape(symbol)}.parquet"

    def get(self, source: Source, symbol: str, *, interval: str = "1d", start: object | None = None,
            end: object | None = None, refresh: bool = False) -> Bars:
        """Bars of ``symbol`` ending in ``[start, end]``, fetching only what the cache lacks.

        ``start=None`` means the source's whole history; ``end=None`` means now. ``refresh``
        fetches the whole covered window again (after upstream corrections).
        """
        lo = None if start is None else to_utc_stamp(start)
        now = _now()
        bound = end_bound(end)
        hi = now if bound is None else min(bound, now)
        if lo is not None and lo > hi:
            raise ConfigError(f"start {start} lies after end {end if end is not None else 'now'} "
                              f"for {symbol}; swap them")
        path = self.path(source_key=source.key, symbol=symbol, interval=interval)
        cached = self._read(path)
        if cached is None or refresh:
            cov_lo = lo if cached is None else _earliest(lo, cached.lo)
            cov_hi = hi if cached is None else max(hi, cached.hi)
            stored = self._fetch(source, symbol, interval, cov_lo, cov_hi, fetched_at=now)
            if cached is not None:
                _check_mode(cached.bars, stored, path)
            self._write(path, source.key, stored, cov_lo, cov_hi, fetched_at=now)
        else:
            stored = self._update(source, symbol, interval, path, cached, lo, hi, now)
        return stored.between(lo, hi)

    def read(self, *, source_key: str, symbol: str, interval: str = "1d") -> Bars | None:
        """The cached bars of an entry as stored (``None`` if there is none); never fetches."""
        cached = self._read(self.path(source_key=source_key, symbol=symbol, interval=interval))
        return None if cached is None else cached.bars

    def entries(self) -> list[StoreEntry]:
        """Every cached entry, sorted by source, interval and symbol."""
        return [self._entry(p) for p in self._files()]

    def verify(self, *, exchange: str | None = "XNYS", allow: tuple[str, ...] = ()) -> list:
        """Re-read every entry: unreadable files, fingerprint mismatches and quality findings.

        Returns ``quality.Finding`` items (empty when the cache is sound).
        """
        from tradesim.data.quality import Finding, check_bars

        findings: list[Finding] = []
        for path in self._files():
            try:
                meta = _metadata(path)
                cached = self._read(path)
            except DataFormatError as exc:
                findings.append(Finding(symbol=unquote(path.stem), time=None, check="unreadable",
                                        message=str(exc), fix=f"delete {path} and fetch again"))
                continue
            assert cached is not None  # _files() lists only existing entries
            bars = cached.bars
            if bars.fingerprint() != meta["fingerprint"]:
                findings.append(Finding(
                    symbol=bars.symbol, time=None, check="fingerprint",
                    message=f"{path} holds data whose fingerprint {bars.fingerprint()} differs "
                            f"from the recorded {meta['fingerprint']} (edited or corrupted)",
                    fix=f"delete {path} and fetch again"))
            calendar = bars.meta.get("calendar", exchange) if exchange is not None else None
            findings.extend(check_bars(bars, exchange=calendar, allow=allow))
        return findings

    # -- internals ------------------------------------------------------------------------

    def _update(self, source: Source, symbol: str, interval: str, path: Path, cached: _Cached,
                lo: np.datetime64 | None, hi: np.datetime64, now: np.datetime64) -> Bars:
        """Fetch the missing ends of the window, check the overlaps, merge and write if changed."""
        stored, cov_lo, cov_hi = cached.bars, cached.lo, cached.hi
        pieces: list[Bars] = []
        if cov_lo is not None and (lo is None or lo < cov_lo):
            anchor = stored.time[0] if len(stored) else cov_lo
            pieces.append(self._fetch(source, symbol, interval, lo, anchor, fetched_at=now))
            cov_lo = lo
        if hi > cov_hi:
            anchor = stored.time[-1] if len(stored) else cov_hi
            pieces.append(self._fetch(source, symbol, interval, anchor, hi, fetched_at=now))
            cov_hi = hi
        if not pieces:
            return stored
        for piece in pieces:
            _check_mode(stored, piece, path)
        if not all(_overlap_agrees(stored, piece) for piece in pieces):
            merged = self._fetch(source, symbol, interval, cov_lo, cov_hi, fetched_at=now)
            merged = merged.with_arrays(meta={**merged.meta, "rebased_at": _iso(now)})
        else:
            merged = _merge(stored, pieces)
        self._write(path, source.key, merged, cov_lo, cov_hi, fetched_at=now)
        return merged

    def _fetch(self, source: Source, symbol: str, interval: str, lo: np.datetime64 | None,
               hi: np.datetime64, *, fetched_at: np.datetime64) -> Bars:
        """Load from the source and record provenance; bars not yet ended are dropped."""
        bars = source.load(symbol, interval=interval, start=_ts(lo), end=_ts(hi))
        if bars.interval != interval:
            raise DataSourceError(f"source {source.key!r} returned {bars.interval} bars for "
                                  f"{symbol} when {interval} was asked")
        meta = {**bars.meta, "source_key": source.key, "fetched_at": _iso(fetched_at)}
        return bars.between(None, fetched_at).with_arrays(meta=meta)

    def _write(self, path: Path, source_key: str, bars: Bars, lo: np.datetime64 | None,
               hi: np.datetime64, *, fetched_at: np.datetime64) -> None:
        """Atomically replace the entry at ``path`` with ``bars`` and their provenance."""
        meta = {"format": FORMAT_VERSION, "symbol": bars.symbol, "interval": bars.interval,
                "source": bars.source, "source_key": source_key, "adjusted": bars.adjusted,
                "fetched_at": _iso(fetched_at), "fingerprint": bars.fingerprint(),
                "coverage": [None if lo is None else int(lo.astype(np.int64)),
                             int(hi.astype(np.int64))],
                "first": _iso(bars.time[0]) if len(bars) else None,
                "last": _iso(bars.time[-1]) if len(bars) else None,
                "bars_meta": _jsonable(bars.meta)}
        arrays = [pa.array(bars.time, type=pa.timestamp("ns")).cast(_SCHEMA.field("time").type),
                  *[pa.array(getattr(bars, c), type=pa.float64()) for c in BAR_COLUMNS]]
        table = pa.Table.from_arrays(arrays, schema=_SCHEMA.with_metadata(
            {_META_KEY: json.dumps(meta).encode()}))
        _atomic_write_table(path, table)

    def _read(self, path: Path) -> _Cached | None:
        """The entry at ``path``, or ``None`` if absent; a damaged file raises DataFormatError."""
        if not path.exists():
            return None
        meta = _metadata(path)
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            raise DataFormatError(f"cache file is unreadable ({exc}); delete it and fetch again",
                                  path=str(path)) from exc
        time = table.column("time").to_numpy().astype(_NS)
        bars = Bars.from_arrays(
            symbol=meta["symbol"], interval=meta["interval"], adjusted=meta["adjusted"],
            source=meta["source"], time=time,
            **{c: table.column(c).to_numpy() for c in BAR_COLUMNS},
            meta={**meta["bars_meta"], "source_key": meta["source_key"],
                  "fetched_at": meta["fetched_at"], "store_path": str(path)})
        lo, hi = meta["coverage"]
        return _Cached(bars=bars, lo=None if lo is None else np.datetime64(lo, "ns"),
                       hi=np.datetime64(hi, "ns"))

    def _files(self) -> Iterator[Path]:
        """Cache files in a stable order (temporary files of writes in flight are skipped)."""
        if not self.root.is_dir():
            return iter(())
        return iter(sorted(p for p in self.root.glob("*/*/*.parquet")
                           if not p.name.startswith(".")))

    def _entry(self, path: Path) -> StoreEntry:
        meta = _metadata(path)
        rows = pq.ParquetFile(path).metadata.num_rows
        return StoreEntry(source=meta["source_key"], symbol=meta["symbol"],
                          interval=meta["interval"], adjusted=meta["adjusted"], rows=rows,
                          first=_stamp_or_none(meta["first"]), last=_stamp_or_none(meta["last"]),
                          fingerprint=meta["fingerprint"], fetched_at=meta["fetched_at"],
                          path=path)


def _atomic_write_table(path: Path, table: pa.Table) -> None:
    """Write to a temp file beside ``path``, fsync, rename over ``path``, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # not every platform can fsync a directory
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _metadata(path: Path) -> dict:
    """The tradesim metadata of a cache file, validated enough to trust."""
    try:
        raw = (pq.read_schema(path).metadata or {}).get(_META_KEY)
    except (OSError, pa.ArrowException) as exc:
        raise DataFormatError(f"cache file is unreadable ({exc}); delete it and fetch again",
                              path=str(path)) from exc
    if raw is None:
        raise DataFormatError("not a tradesim cache file (no 'tradesim' metadata); move it out "
                              "of the cache folder", path=str(path))
    meta = json.loads(raw)
    if meta.get("format") != FORMAT_VERSION:
        raise DataFormatError(f"cache format {meta.get('format')} is not {FORMAT_VERSION}; "
                              "delete the file and fetch again", path=str(path))
    return meta


def _check_mode(stored: Bars, fetched: Bars, path: Path) -> None:
    """Refuse to mix adjusted and raw prices in one entry."""
    if stored.adjusted != fetched.adjusted:
        raise DataSourceError(
            f"{path}: the cache holds adjusted={stored.adjusted} bars but source "
            f"{fetched.meta.get('source_key')!r} now returns adjusted={fetched.adjusted}; a "
            "source's key must name its adjustment mode (delete the entry to start over)")


def _overlap_agrees(stored: Bars, piece: Bars) -> bool:
    """Whether ``piece`` prices equal the stored ones at the stamps both hold."""
    common, i, j = np.intersect1d(stored.time, piece.time, assume_unique=True,
                                  return_indices=True)
    if not len(common):
        return True
    return all(np.allclose(getattr(stored, c)[i], getattr(piece, c)[j], rtol=_PRICE_RTOL,
                           atol=0.0, equal_nan=True) for c in PRICE_COLUMNS)


def _merge(stored: Bars, pieces: list[Bars]) -> Bars:
    """Union by stamp, the newest fetch winning where stamps repeat (late volume corrections)."""
    parts = [stored, *pieces]
    time = np.concatenate([p.time for p in parts])
    # stable sort on the reversed order makes the last-fetched row come first per stamp
    rev = np.argsort(time[::-1], kind="stable")
    order = (len(time) - 1 - rev)
    t_sorted = time[order]
    first = np.r_[True, t_sorted[1:] != t_sorted[:-1]]
    pick = order[first]
    cols = {c: np.concatenate([getattr(p, c) for p in parts])[pick] for c in BAR_COLUMNS}
    meta = {**stored.meta, **pieces[-1].meta}
    return Bars.from_arrays(symbol=stored.symbol, interval=stored.interval,
                            adjusted=stored.adjusted, source=stored.source, time=time[pick],
                            meta=meta, **cols)


def _escape(name: str) -> str:
    """A file-system-safe, reversible name (``^GSPC`` -> ``%5EGSPC``)."""
    return quote(name, safe="-_.=+")


def _earliest(a: np.datetime64 | None, b: np.datetime64 | None) -> np.datetime64 | None:
    return None if a is None or b is None else min(a, b)


def _now() -> np.datetime64:
    return np.datetime64(pd.Timestamp.now("UTC").tz_localize(None).value, "ns")


def _ts(stamp: np.datetime64 | None) -> pd.Timestamp | None:
    return None if stamp is None else pd.Timestamp(stamp).tz_localize("UTC")


def _iso(stamp: np.datetime64) -> str:
    return pd.Timestamp(stamp).tz_localize("UTC").isoformat()


def _stamp_or_none(text: str | None) -> pd.Timestamp | None:
    return None if text is None else pd.Timestamp(text)


def _jsonable(meta: dict) -> dict:
    """The JSON-representable part of ``bars.meta`` (provenance notes, repairs)."""
    out = {}
    for key, value in meta.items():
        with contextlib.suppress(TypeError, ValueError):
            out[str(key)] = json.loads(json.dumps(value))
    return out
