"""Bars from local CSV/Parquet files: Yahoo, FNSPID, stooq and minute-export layouts auto-detected.

Every stamp becomes a UTC bar *end*: daily rows stamped with a date get that session's close from
the exchange calendar (early closes honoured); intraday stamps are taken as bar ends. Malformed
files raise :class:`DataFormatError` naming the file, the 1-based line and the column; nothing
partial is returned.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from tradesim.data import calendars
from tradesim.data import quality as quality_checks
from tradesim.data.bars import INTERVALS, Bars, interval_nanos
from tradesim.errors import ConfigError, DataFormatError, DataSourceError, UnknownSymbolError

LAYOUTS: tuple[str, ...] = ("auto", "yahoo", "stooq", "minute", "columns")
BAR_FIELDS: tuple[str, ...] = ("time", "open", "high", "low", "close", "volume", "adj_close")
SUFFIXES: tuple[str, ...] = (".csv", ".txt", ".parquet", ".pq", ".csv.gz", ".txt.gz")

_ALIASES: dict[str, tuple[str, ...]] = {
    "time": ("date", "datetime", "time", "timestamp", "date_time", "dt"),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c", "last"),
    "volume": ("volume", "vol", "v"),
    "adj_close": ("adj close", "adj_close", "adjclose", "adjusted close", "adjusted_close"),
}
_HEADER = {"time": "Date", "open": "Open", "high": "High", "low": "Low", "close": "Close",
           "volume": "Volume", "adj_close": "Adj Close"}  # the header names a file may use
_PRICE_FIELDS = ("open", "high", "low", "close", "volume", "adj_close")
_MISSING = frozenset({"", "null", "nan", "na", "n/a", "none"})
_DELIMITERS = (",", ";", "\t", "|")
_DELIM_NAMES = {",": "','", ";": "';'", "\t": "tab", "|": "'|'"}
_MINUTE_LINE = re.compile(r"^\d{8} \d{6}([;,\t|])")
_ZONE = r"(?:Z|[+-]\d{2}:?\d{2})$"
_DATE_ONLY = r"^\d{4}-\d{2}-\d{2}(?:[ T]00:00(?::00(?:\.0+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?$"
_BARE_DATE = r"^\d{4}-\d{2}-\d{2}$"
_NS_DTYPE = np.dtype("datetime64[ns]")
_MARKET_SUFFIX = re.compile(r"\.(us|uk|jp|hk|de|hu|pl)$", re.IGNORECASE)  # stooq market codes


def read_bars(path: Path | str, *, symbol: str | None = None, layout: str = "auto",
              columns: Mapping[str, str] | None = None, adjusted: bool | None = None,
              interval: str | None = None, exchange: str = "XNYS",
              tz: str | None = None) -> Bars:
    """Read one file of OHLCV bars into validated :class:`Bars` (no quality checks applied).

    ``columns`` maps tradesim fields (time, open, high, low, close, volume, adj_close) to the
    file's column names; unmapped fields are matched case-insensitively by common names.
    ``adjusted``: None takes the layout's meaning (stooq: adjusted; ``Adj Close`` present: OHLC
    scaled by Adj Close/Close; otherwise prices as in the file, taken as unadjusted); True/False
    asks for that explicitly. ``tz`` is the zone of stamps that carry none (minute exports: UTC).
    """
    path = Path(path)
    _check_options(layout=layout, columns=columns, interval=interval)
    if not path.is_file():
        raise DataSourceError(f"no bar file at {path}; check the path (--data PATH)")
    if _is_parquet(path):
        if layout not in ("auto", "columns", "yahoo"):
            raise ConfigError(f"layout={layout!r} describes a text file but {path} is Parquet; "
                              "use layout='auto' or 'columns'")
        frame, first_row, found = _read_parquet(path), 1, "parquet"
    else:
        found = _detect_layout(path, layout)
        frame, first_row = _read_text(path, found)
    name = symbol or symbol_from_path(path)
    return _to_bars(frame, path=path, first_row=first_row, layout=found, symbol=name,
                    columns=columns or {}, adjusted=adjusted, interval=interval,
                    exchange=exchange, tz=tz)


def symbol_from_path(path: Path | str) -> str:
    """The ticker a file name implies: ``spy.us.txt`` -> SPY, ``GOOG.csv`` -> GOOG."""
    name = Path(path).name
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return _MARKET_SUFFIX.sub("", name).upper()


class FileSource:
    """A folder (or one file) of bar files as a :class:`~tradesim.data.sources.Source`.

    Each file holds one symbol, named by the file (see :func:`symbol_from_path`); ``load``
    reads it with :func:`read_bars` and applies the data-quality checks under ``quality``.
    """

    name = "files"

    def __init__(self, root: Path | str, *, layout: str = "auto",
                 columns: Mapping[str, str] | None = None, adjusted: bool | None = None,
                 interval: str | None = None, exchange: str = "XNYS", tz: str | None = None,
                 quality: str = "raise", allow: Collection[str] = ()) -> None:
        _check_options(layout=layout, columns=columns, interval=interval)
        if quality not in quality_checks.POLICIES:
            raise ConfigError(f"quality policy {quality!r} is unknown; use one of "
                              f"{', '.join(quality_checks.POLICIES)} (--quality, quality=)")
        self.root = Path(root)
        if not self.root.exists():
            raise DataSourceError(f"file source root {self.root} does not exist; pass a folder "
                                  "of CSV/Parquet bar files")
        self.layout, self.columns, self.adjusted = layout, dict(columns or {}), adjusted
        self.interval, self.exchange, self.tz = interval, exchange, tz
        self.quality, self.allow = quality, tuple(allow)

    @property
    def key(self) -> str:
        """Cache key: root, layout, adjustment mode and every option that changes the bars."""
        cols = ",".join(f"{k}={v}" for k, v in sorted(self.columns.items()))
        adj = "layout" if self.adjusted is None else ("adj" if self.adjusted else "raw")
        return (f"files:{self.root.resolve()}:{self.layout}:adjusted={adj}:{self.exchange}"
                f":tz={self.tz}:cols={cols}:quality={self.quality}")

    def _files(self) -> dict[str, list[Path]]:
        paths = [self.root] if self.root.is_file() else sorted(
            p for p in self.root.iterdir()
            if p.is_file() and p.name.lower().endswith(SUFFIXES))
        found: dict[str, list[Path]] = {}
        for p in paths:
            found.setdefault(symbol_from_path(p), []).append(p)
        return found

    def symbols(self) -> list[str]:
        """Symbols with a file in the root, sorted."""
        return sorted(self._files())

    def path(self, symbol: str) -> Path:
        """The file holding ``symbol`` (matched case-insensitively)."""
        files = self._files()
        paths = files.get(symbol.upper())
        if not paths:
            raise UnknownSymbolError(f"no file for symbol {symbol!r} in {self.root}; "
                                     f"found: {', '.join(sorted(files)) or 'no bar files'}")
        if len(paths) > 1:
            raise DataSourceError(f"symbol {symbol!r} matches several files in {self.root}: "
                                  f"{', '.join(p.name for p in paths)}; keep one or point the "
                                  "source at one file")
        return paths[0]

    def load(self, symbol: str, *, interval: str | None = None, start: object | None = None,
             end: object | None = None) -> Bars:
        """Bars of ``symbol`` from its file, quality-checked, limited to ``[start, end]``."""
        bars = read_bars(self.path(symbol), symbol=symbol.upper(), layout=self.layout,
                         columns=self.columns, adjusted=self.adjusted,
                         interval=interval or self.interval, exchange=self.exchange, tz=self.tz)
        bars = quality_checks.enforce(bars, policy=self.quality, allow=self.allow,
                               exchange=self.exchange)
        return bars if start is None and end is None else bars.between(start, end)

    def __repr__(self) -> str:
        return f"FileSource({str(self.root)!r}, layout={self.layout!r}, quality={self.quality!r})"


def _check_options(*, layout: str, columns: Mapping[str, str] | None,
                   interval: str | None) -> None:
    if layout not in LAYOUTS:
        raise ConfigError(f"layout={layout!r}; use one of {', '.join(LAYOUTS)}")
    unknown = sorted(set(columns or {}) - set(BAR_FIELDS))
    if unknown:
        raise ConfigError(f"columns= has unknown field(s) {', '.join(unknown)}; keys are tradesim "
                          f"fields ({', '.join(BAR_FIELDS)}) and values the file's column names")
    if interval is not None and interval not in INTERVALS:
        raise ConfigError(f"interval {interval!r} is unknown; use one of {', '.join(INTERVALS)} "
                          "(the interval setting: --interval, interval=)")


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def _first_line(path: Path) -> str:
    """The first non-blank line of a text file (DataFormatError if there is none)."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
            for line in fh:
                if line.strip():
                    return line.rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"not UTF-8 text ({exc.reason}); is this a CSV file?",
                              path=str(path), row=1) from None
    raise DataFormatError("file is empty; expected a header line and rows of bars",
                          path=str(path), row=1)


def _delimiter(line: str) -> str | None:
    counts = {d: line.count(d) for d in _DELIMITERS}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else None


def _detect_layout(path: Path, layout: str) -> str:
    """Resolve ``auto`` from the first line; check an explicit layout's delimiter fits the file."""
    line = _first_line(path)
    delim = _delimiter(line)
    minute = _MINUTE_LINE.match(line)
    if layout == "auto":
        if minute:
            return "minute"
        if delim is None:
            raise DataFormatError("no delimiter found in the first line (expected ',' or ';'); "
                                  "separate the fields with ',' or ';' (from Python, layout= and "
                                  "columns= describe other files)", path=str(path), row=1)
        header = {h.strip().lower() for h in line.split(delim)}
        if header & set(_ALIASES["adj_close"]):
            return "yahoo"
        if "openint" in header or path.name.lower().endswith((".us.txt", ".us.txt.gz")):
            return "stooq"
        return "columns"
    if layout == "minute":
        if minute and minute.group(1) == ";":
            return layout
        found = f"found {_DELIM_NAMES[delim]}" if delim else "found no delimiter"
        shape = "rows start" if minute else "the first line is not"
        raise DataFormatError(f"layout='minute' expects headerless ';'-separated rows "
                              f"'YYYYMMDD HHMMSS;O;H;L;C;V' but {shape} like that ({found}); "
                              "pass layout='auto' or the right delimiter", path=str(path), row=1)
    if layout in ("yahoo", "stooq") and delim != ",":
        found = f"{_DELIM_NAMES[delim]}-separated" if delim else "not delimited"
        raise DataFormatError(f"layout={layout!r} expects a ','-separated header but the first "
                              f"line is {found}: {line[:60]!r}; pass layout='auto'"
                              f"{' (a minute export)' if minute else ''}", path=str(path), row=1)
    return layout


def _read_text(path: Path, layout: str) -> tuple[pd.DataFrame, int]:
    """Read every cell as text; returns the frame and the file line of its first data row."""
    line = _first_line(path)
    minute = layout == "minute"
    delim = ";" if minute else (_delimiter(line) or ",")
    try:
        frame = pd.read_csv(path, sep=delim, header=None if minute else 0, dtype=str,
                            keep_default_na=False, na_filter=False, skip_blank_lines=False,
                            encoding="utf-8-sig", engine="c",
                            names=["time", "open", "high", "low", "close", "volume"]
                            if minute else None)
    except pd.errors.ParserError as exc:
        row = re.search(r"line (\d+)", str(exc))
        raise DataFormatError(f"wrong number of fields ({exc}); is the delimiter "
                              f"{_DELIM_NAMES[delim]} used on every line?", path=str(path),
                              row=int(row.group(1)) if row else None) from None
    except pd.errors.EmptyDataError:
        raise DataFormatError("file is empty", path=str(path), row=1) from None
    first_row = 1 if minute else 2
    if frame.empty:
        raise DataFormatError("file has a header but no rows of bars", path=str(path),
                              row=first_row)
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame, first_row


def read_parquet_file(path: Path) -> pd.DataFrame:
    """A Parquet file as a frame, or a DataFormatError naming it when it is not readable Parquet."""
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataFormatError(f"not a readable Parquet file ({type(exc).__name__}: {exc}); "
                              "re-export it, or use .csv if it is text", path=str(path)) from None


def _read_parquet(path: Path) -> pd.DataFrame:
    frame = read_parquet_file(path)
    if isinstance(frame.index, pd.DatetimeIndex) or frame.index.name:
        frame = frame.reset_index()
    if frame.empty:
        raise DataFormatError("Parquet file has no rows", path=str(path), row=1)
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _resolve_columns(frame: pd.DataFrame, *, columns: Mapping[str, str], path: Path,
                     first_row: int) -> dict[str, str]:
    """Map tradesim fields to the frame's column names (explicit mapping first, then aliases)."""
    lower = {c.lower(): c for c in frame.columns}
    out: dict[str, str] = {}
    header_row = max(first_row - 1, 1)
    for field in BAR_FIELDS:
        if field in columns:
            if columns[field] not in frame.columns:
                raise DataFormatError(f"columns= maps {field!r} to {columns[field]!r}, which is "
                                      f"not in the file; found: {', '.join(frame.columns)}",
                                      path=str(path), row=header_row, column=columns[field])
            out[field] = columns[field]
            continue
        match = next((lower[a] for a in _ALIASES[field] if a in lower), None)
        if match is not None:
            out[field] = match
        elif field != "adj_close":
            raise DataFormatError(f"missing column for {field!r} (looked for "
                                  f"{', '.join(_ALIASES[field][:3])}); found: "
                                  f"{', '.join(frame.columns)}; rename the file's column to "
                                  f"{_HEADER[field]!r}, or map it when loading from Python "
                                  f"(columns={{{field!r}: '<name in file>'}})",
                                  path=str(path), row=header_row,
                                  column=field.capitalize() if field != "time" else "Date")
    return out


def _numbers(values: pd.Series, *, path: Path, first_row: int, column: str) -> np.ndarray:
    """Float64 column; blanks and null/NaN become NaN, any other text is an error naming the row."""
    if values.dtype.kind in "fiub":
        return values.to_numpy(dtype=np.float64)
    try:  # fast path: a clean column casts in C; anything else gets the diagnosis below
        return values.astype(np.float64).to_numpy(dtype=np.float64)
    except (ValueError, TypeError):
        pass
    text = values.astype(str).str.strip()
    missing = text.str.lower().isin(_MISSING).to_numpy()
    out = pd.to_numeric(text.where(~missing, None), errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(out) & ~missing
    if bad.any():
        i = int(np.argmax(bad))
        raise DataFormatError(f"non-numeric value {text.iat[i]!r}; expected a number (blank or "
                              "'null' for a missing value)", path=str(path), row=first_row + i,
                              column=column)
    return out


def parse_stamps(values: pd.Series, *, path: Path | str, first_row: int, column: str,
                 tz: str | None, fmt: str | None = None,
                 midnight_is_date: bool = True) -> tuple[np.ndarray, bool]:
    """Parse a stamp column: ``(stamps, is_dates)``; errors name the file, row and column.

    Date-only values (and midnight stamps such as ``2019-02-06 00:00:00+00:00``) come back as
    naive ``datetime64[ns]`` wall dates with ``is_dates`` True; other values as UTC ns. A stamp
    without zone needs ``tz``; a column mixing zoned and zone-less stamps is an error.
    ``midnight_is_date=False`` keeps midnight stamps as instants (only bare dates are dates).
    """
    path = str(path)
    if values.dtype.kind == "M":  # Parquet: typed already
        idx = pd.DatetimeIndex(values)
        _first_nat(idx, values.astype(str), path=path, first_row=first_row, column=column)
        if idx.tz is None and midnight_is_date and (idx == idx.normalize()).all():
            return idx.to_numpy(dtype="datetime64[ns]"), True
        if idx.tz is None:
            if tz is None:
                raise DataFormatError("timestamps have no time zone; store them with their "
                                      "zone, or give it when loading (tz='UTC' or "
                                      "tz='America/New_York' in Python)", path=path,
                                      row=first_row, column=column)
            idx = _localize(idx, tz, path=path, first_row=first_row, column=column)
        return idx.tz_convert("UTC").tz_localize(None).to_numpy(dtype="datetime64[ns]"), False
    text = values.astype(str).str.strip()
    zoned = text.str.contains(_ZONE, regex=True).to_numpy()
    if fmt is None and text.str.fullmatch(
            _DATE_ONLY if midnight_is_date else _BARE_DATE).all():  # dates: zones do not matter
        parsed = pd.to_datetime(text.str[:10], format="%Y-%m-%d", errors="coerce")
        _first_nat(parsed, text, path=path, first_row=first_row, column=column)
        return parsed.to_numpy(dtype="datetime64[ns]"), True
    if zoned.any() and not zoned.all():
        if tz is None:
            a, b = int(np.argmax(zoned)), int(np.argmax(~zoned))
            raise DataFormatError(
                f"mixed time zones: row {first_row + a} ({text.iat[a]!r}) has a zone but row "
                f"{first_row + b} ({text.iat[b]!r}) has none; write every stamp with its UTC "
                f"offset (e.g. '{text.iat[b]}+00:00'), or give the zone of the stamps without "
                "one when loading (tz='UTC' or tz='America/New_York' in Python)",
                path=path, row=first_row + b, column=column)
        naive = pd.to_datetime(text.where(~zoned), format=fmt, errors="coerce")
        _first_nat(naive[~zoned], text[~zoned], path=path, first_row=first_row, column=column,
                   rows=np.flatnonzero(~zoned))
        local = _localize(pd.DatetimeIndex(naive), tz, path=path, first_row=first_row,
                          column=column, skip=zoned)
        aware = pd.to_datetime(text.where(zoned), format=fmt, errors="coerce", utc=True)
        _first_nat(aware[zoned], text[zoned], path=path, first_row=first_row, column=column,
                   rows=np.flatnonzero(zoned))
        merged = np.where(zoned, pd.DatetimeIndex(aware).tz_localize(None).to_numpy(_NS_DTYPE),
                          local.tz_convert("UTC").tz_localize(None).to_numpy(_NS_DTYPE))
        return merged.astype(_NS_DTYPE), False
    parsed = pd.to_datetime(text, format=fmt, errors="coerce", utc=bool(zoned.all()))
    _first_nat(parsed, text, path=path, first_row=first_row, column=column)
    idx = pd.DatetimeIndex(parsed)
    if idx.tz is None:
        if tz is None:
            raise DataFormatError(f"timestamp {text.iat[0]!r} has no time zone; write the stamps "
                                  "with their UTC offset (e.g. +00:00), or give their zone when "
                                  "loading (tz='UTC' or tz='America/New_York' in Python)",
                                  path=path, row=first_row, column=column)
        idx = _localize(idx, tz, path=path, first_row=first_row, column=column)
    return idx.tz_convert("UTC").tz_localize(None).to_numpy(dtype="datetime64[ns]"), False


def _localize(idx: pd.DatetimeIndex, tz: str, *, path: str, first_row: int,
              column: str, skip: np.ndarray | None = None) -> pd.DatetimeIndex:
    """Attach ``tz`` to naive stamps; a stamp that DST makes ambiguous or skipped is an error.

    Rows in ``skip`` (stamps that carry their own zone) are not checked.
    """
    out = idx.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    bad = np.asarray(out.isna() & ~idx.isna())
    if skip is not None:
        bad &= ~skip
    if bad.any():
        i = int(np.argmax(bad))
        raise DataFormatError(f"stamp {idx[i]} is ambiguous or does not exist in {tz} (DST "
                              "switch); write stamps in UTC or with an offset", path=path,
                              row=first_row + i, column=column)
    return out


def _first_nat(parsed: object, text: pd.Series, *, path: str, first_row: int,
               column: str, rows: np.ndarray | None = None) -> None:
    """DataFormatError at the first unparsable stamp; ``rows`` maps positions to frame rows."""
    bad = np.asarray(pd.isna(parsed))
    if bad.any():
        i = int(np.argmax(bad))
        value = text.iat[i]
        other = next((d for d in _DELIMITERS if d in value), None)
        hint = (f"; the row is {_DELIM_NAMES[other]}-separated, not like the header"
                if other else "")
        row = first_row + (i if rows is None else int(rows[i]))
        raise DataFormatError(f"unparsable date {value!r}{hint}", path=path, row=row,
                              column=column)


def _infer_interval(time: np.ndarray, *, path: Path) -> str:
    """The bar interval from the most common positive spacing of intraday stamps."""
    steps = np.diff(time.astype(np.int64))
    steps = steps[steps > 0]
    if not len(steps):
        raise DataFormatError("cannot infer the bar interval from a single stamp; give it "
                              "(the interval setting: --interval, interval=)", path=str(path))
    values, counts = np.unique(steps, return_counts=True)
    step = int(values[np.argmax(counts)])
    for name in INTERVALS:
        if interval_nanos(name) == step:
            return name
    raise DataFormatError(f"stamps are mostly {step / 6e10:g} minutes apart, which is no known "
                          f"interval ({', '.join(INTERVALS)}); resample the file to one of "
                          "them", path=str(path))


def _to_bars(frame: pd.DataFrame, *, path: Path, first_row: int, layout: str, symbol: str,
             columns: Mapping[str, str], adjusted: bool | None, interval: str | None,
             exchange: str, tz: str | None) -> Bars:
    names = _resolve_columns(frame, columns=columns, path=path, first_row=first_row)
    blank = (frame.astype(str).apply(lambda c: c.str.strip()) == "").all(axis=1).to_numpy()
    if blank.all():
        raise DataFormatError("file has no rows of bars", path=str(path), row=first_row)
    frame = frame.iloc[: len(blank) - int(np.argmax(~blank[::-1]))]  # trailing blank lines
    blank = blank[: len(frame)]
    if blank.any():
        raise DataFormatError("blank line inside the data; delete it", path=str(path),
                              row=first_row + int(np.argmax(blank)))
    minute = layout == "minute"
    stamps, is_dates = parse_stamps(
        frame[names["time"]], path=path, first_row=first_row, column=names["time"],
        tz=tz or ("UTC" if minute else None), fmt="%Y%m%d %H%M%S" if minute else None)
    prices = {f: _numbers(frame[c], path=path, first_row=first_row, column=c)
              for f, c in names.items() if f in _PRICE_FIELDS}
    meta: dict = {"path": str(path), "layout": layout}
    if len(stamps) > 1 and (np.diff(stamps.astype(np.int64)) < 0).all():
        order = slice(None, None, -1)  # newest-first export: flip to oldest-first
        stamps, prices = stamps[order], {f: v[order] for f, v in prices.items()}
        meta["reversed"] = True
    if is_dates:
        time, found = calendars.session_close_stamps(stamps, exchange=exchange), "1d"
        meta["stamped"] = f"{exchange} session close (dates in file)"
    else:
        time, found = stamps, "1m" if minute else _infer_interval(stamps, path=path)
        meta["stamped"] = "bar end as in file"
    if interval is not None and interval != found:
        raise DataSourceError(f"{path} holds {found} bars but {interval} bars were asked for; "
                              f"load it at {found} (the interval setting: --interval {found}, "
                              f"interval={found!r}); bars are not resampled on load")
    is_adjusted = _adjust(prices, layout=layout, adjusted=adjusted, path=path, meta=meta)
    extra = [c for c in frame.columns if c not in names.values()]
    if extra:
        meta["extra_columns"] = extra
    return Bars.from_arrays(symbol=symbol, interval=found, adjusted=is_adjusted, source="files",
                            time=time, open=prices["open"], high=prices["high"],
                            low=prices["low"], close=prices["close"], volume=prices["volume"],
                            meta=meta)


def _adjust(prices: dict[str, np.ndarray], *, layout: str, adjusted: bool | None, path: Path,
            meta: dict) -> bool:
    """Apply the adjustment mode to ``prices`` in place; returns the resulting ``adjusted`` flag."""
    adj = prices.pop("adj_close", None)
    if adj is not None:
        if adjusted is False:
            meta["adjustment"] = "Close as in file (split-adjusted only); Adj Close ignored"
            return False
        raw = prices["close"].copy()
        raw.flags.writeable = False
        factor = adj / raw
        for f in ("open", "high", "low", "close"):
            prices[f] = prices[f] * factor
        meta["adjustment"] = "OHLC scaled by Adj Close / Close (split and dividend adjusted)"
        meta["raw_close"] = raw  # the file's Close, for the adjustment-factor check
        return True
    if layout == "stooq":
        if adjusted is False:
            raise ConfigError(f"{path} is a stooq file, which holds only split- and dividend-"
                              "adjusted prices; leave adjusted unset or True")
        meta["adjustment"] = "split and dividend adjusted by the vendor (stooq)"
        return True
    if adjusted is None:
        meta["adjustment"] = "as in file, taken as unadjusted (pass adjusted=True if it is)"
        return False
    meta["adjustment"] = f"as in file, declared {'adjusted' if adjusted else 'unadjusted'}"
    return adjusted
