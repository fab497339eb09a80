"""Dated headlines from CSV/Parquet files, made point-in-time by the exchange calendar.

Each item keeps its feed stamp (``published_at``) and gets ``available_at``: at once when
published in regular trading hours, otherwise at the next session's open. Date-only stamps could
have been published any time that day, so they become available at the first open after it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from tradesim.data import calendars
from tradesim.data.bars import News
from tradesim.data.files import parse_stamps, read_parquet_file
from tradesim.errors import ConfigError, DataFormatError

NEWS_FIELDS: tuple[str, ...] = ("published_at", "symbol", "title", "body", "source")

_ALIASES: dict[str, tuple[str, ...]] = {
    "published_at": ("published_at", "published", "datetime", "date", "timestamp", "time"),
    "symbol": ("symbol", "stock", "ticker", "symbols", "tickers"),
    "title": ("title", "headline"),
    "body": ("body", "text", "content", "summary", "description"),
    "source": ("source", "publisher", "provider"),
}
_REQUIRED = ("published_at", "title")
_DAY = pd.Timedelta(days=1)


def read_news(path: Path | str, *, columns: Mapping[str, str] | None = None,
              exchange: str = "XNYS", tz: str | None = None, dedupe: bool = True,
              symbols: Collection[str] | None = None, symbol: str | None = None) -> News:
    """Read dated headlines (CSV or Parquet) into :class:`News` sorted by ``available_at``.

    ``columns`` maps fields (published_at, symbol, title, body, source) to the file's column
    names; unmapped fields are matched by common names (the Benzinga layout ``title, date,
    stock`` maps itself). Stamps need a zone unless ``tz`` is given. ``dedupe`` drops exact
    duplicate items; ``symbols`` keeps only items tagged with one of them. ``symbol`` tags every
    item of a one-ticker file that has no symbol column (the FNSPID ``AA.csv`` articles).
    """
    path = Path(path)
    unknown = sorted(set(columns or {}) - set(NEWS_FIELDS))
    if unknown:
        raise ConfigError(f"columns= has unknown field(s) {', '.join(unknown)}; keys are "
                          f"{', '.join(NEWS_FIELDS)} and values the file's column names")
    frame, first_row = _read(path)
    names = _resolve(frame, columns=columns or {}, path=path)
    if symbol is not None:
        if "symbol" in names:
            raise ConfigError(f"symbol={symbol!r} tags a file without a symbol column, but "
                              f"{path} has one ({names['symbol']!r}); drop symbol=")
        frame = frame.assign(_symbol=symbol)
        names["symbol"] = "_symbol"
    stamps, is_dates = parse_stamps(frame[names["published_at"]], path=path, first_row=first_row,
                                    column=names["published_at"], tz=tz,
                                    midnight_is_date=False)
    title = _text(frame, names.get("title"))
    empty = (title == "").to_numpy()
    if empty.any():
        raise DataFormatError("empty headline; every item needs a title", path=str(path),
                              row=first_row + int(np.argmax(empty)), column=names["title"])
    if is_dates:
        if tz is None:
            raise DataFormatError(f"date-only stamp {frame[names['published_at']].iat[0]!r} has "
                                  "no time zone; store the stamps with their zone, or give the "
                                  "feed's zone when loading (tz= in Python)", path=str(path),
                                  row=first_row, column=names["published_at"])
        local = pd.DatetimeIndex(stamps).tz_localize(tz)
        published = local.tz_convert("UTC").tz_localize(None).to_numpy(dtype="datetime64[ns]")
        day_end = (local + _DAY).tz_convert("UTC").tz_localize(None).to_numpy(
            dtype="datetime64[ns]")
        available = calendars.news_available_at(day_end, exchange=exchange)
    else:
        published = stamps
        available = calendars.news_available_at(published, exchange=exchange)
    items = pd.DataFrame({
        "published_at": published, "available_at": available,
        "symbol": _text(frame, names.get("symbol")).str.upper().to_numpy(dtype=object),
        "title": title.to_numpy(dtype=object),
        "body": _text(frame, names.get("body")).to_numpy(dtype=object),
        "source": _text(frame, names.get("source")).to_numpy(dtype=object),
    })
    if dedupe:
        items = items.drop_duplicates(keep="first", ignore_index=True)
    if symbols is not None:
        items = items[items["symbol"].isin({s.upper() for s in symbols})]
    for col in ("published_at", "available_at"):
        items[col] = pd.DatetimeIndex(items[col]).tz_localize("UTC")
    return News.from_frame(items.reset_index(drop=True))


def _read(path: Path) -> tuple[pd.DataFrame, int]:
    """All cells as text (CSV) or typed (Parquet), plus the file row of the first item."""
    if not path.is_file():
        raise ConfigError(f"no news file at {path}; check the path (--news PATH, news=)")
    if path.suffix.lower() in (".parquet", ".pq"):
        frame, first_row = read_parquet_file(path), 1
    else:
        if path.stat().st_size == 0:
            raise DataFormatError("file is empty; expected a header line and headlines",
                                  path=str(path), row=1)
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False,
                                encoding="utf-8-sig")
        except pd.errors.ParserError as exc:
            raise DataFormatError(f"malformed CSV ({exc}); quote titles that contain commas",
                                  path=str(path)) from None
        except pd.errors.EmptyDataError:
            raise DataFormatError("file is empty", path=str(path), row=1) from None
        first_row = 2
    if frame.empty:
        raise DataFormatError("file has no headlines", path=str(path), row=first_row)
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame, first_row


def _resolve(frame: pd.DataFrame, *, columns: Mapping[str, str], path: Path) -> dict[str, str]:
    lower = {c.lower(): c for c in frame.columns}
    out: dict[str, str] = {}
    for field in NEWS_FIELDS:
        if field in columns:
            if columns[field] not in frame.columns:
                raise DataFormatError(f"columns= maps {field!r} to {columns[field]!r}, which is "
                                      f"not in the file; found: {', '.join(frame.columns)}",
                                      path=str(path), row=1, column=columns[field])
            out[field] = columns[field]
            continue
        match = next((lower[a] for a in _ALIASES[field] if a in lower), None)
        if match is not None:
            out[field] = match
        elif field in _REQUIRED:
            raise DataFormatError(f"missing column for {field!r} (looked for "
                                  f"{', '.join(_ALIASES[field][:4])}); found: "
                                  f"{', '.join(frame.columns)}; rename the file's column to "
                                  f"{field!r}, or map it when loading from Python "
                                  f"(columns={{{field!r}: '<name in file>'}})", path=str(path),
                                  row=1, column=field)
    return out


def _text(frame: pd.DataFrame, column: str | None) -> pd.Series:
    """A stripped text column ('' where absent or missing)."""
    if column is None:
        return pd.Series([""] * len(frame), dtype=object)
    return frame[column].fillna("").astype(str).str.strip().reset_index(drop=True)
