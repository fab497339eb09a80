"""Open a source by name and load a market from it: the one call the engine and the CLI use.

``load_market`` picks the source, reads bars through the local store for remote sources,
applies the data-quality policy, attaches news, and returns a :class:`MarketData`.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from tradesim.data.bars import NEWS_COLUMNS, Bars, News, to_utc_stamp
from tradesim.data.sources import Source
from tradesim.data.store import Store, end_bound
from tradesim.data.view import MarketData
from tradesim.errors import ConfigError, DataQualityWarning

SOURCES: tuple[str, ...] = ("sample", "synthetic", "files", "yfinance")
_REMOTE = ("yfinance",)  # sources read through the store by default


class SampleSource:
    """The embedded sample (``data/sample``) behind the Source protocol; daily bars only."""

    name = "sample"

    def __init__(self) -> None:
        from tradesim.data.synthetic import load_sample

        self._market = load_sample()

    @property
    def key(self) -> str:
        """Cache key: the sample's content (its fingerprints), adjusted prices."""
        prints = self._market.fingerprints()
        digest = hashlib.sha256("|".join(prints[s] for s in self._market.symbols).encode())
        return f"sample-{digest.hexdigest()[:12]}-adj"

    def symbols(self) -> list[str]:
        return list(self._market.symbols)

    def load(self, symbol: str, *, interval: str = "1d", start: object | None = None,
             end: object | None = None) -> Bars:
        """Sample bars of ``symbol`` ending in ``[start, end]``."""
        if interval != "1d":
            raise ConfigError(f"the embedded sample holds daily bars only, not {interval!r}; use "
                              "source 'synthetic' for intraday bars")
        return self._market.full(symbol).between(start, end)

    def news(self, *, symbols: Sequence[str] | None = None, start: object | None = None,
             end: object | None = None) -> News:
        """The sample's headlines for ``symbols`` (all when None) available in ``[start, end]``."""
        news = self._market.news
        if symbols is not None:
            news = news.for_symbols(list(symbols))
        return _window(news, start, end)


_SOURCES = {"sample": "tradesim.data.load:SampleSource",
            "synthetic": "tradesim.data.synthetic:SyntheticSource",
            "files": "tradesim.data.files:FileSource",
            "yfinance": "tradesim.data.yahoo:YahooSource",
            "yahoo": "tradesim.data.yahoo:YahooSource"}


def open_source(name: str, **options: object) -> Source:
    """A source by built-in name (sample, synthetic, files, yfinance), ``module:Class``, or a
    package's ``tradesim.sources`` entry point (:mod:`tradesim.plugins`).

    ``options`` go to the source's constructor, e.g. ``open_source("files", root="data/")``
    or ``open_source("yfinance", auto_adjust=False)``.
    """
    from tradesim.plugins import resolve

    cls = resolve("source", name, _SOURCES)
    try:
        source = cls(**options)
    except TypeError as exc:
        raise ConfigError(f"bad options for data source {name!r}: {exc}") from None
    if not isinstance(source, Source):
        raise ConfigError(f"data source {name!r} does not implement the Source protocol (name, key, load, "
                          "symbols)")
    return source


def load_market(*, symbols: Sequence[str] | None, source: str | Source = "sample",
                start: object | None = None, end: object | None = None, interval: str = "1d",
                quality: str = "raise", news: bool | str | Path = True,
                store: Store | None = None, allow: Collection[str] = (),
                source_options: Mapping[str, object] | None = None,
                exchange: str | None = None) -> MarketData:
    """Bars of ``symbols`` (None: the source's universe) plus news, quality-checked.

    A bare-date ``end`` includes that day. Remote sources read through ``store`` (the default
    cache when None); local ones load directly unless a store is given. ``news``: True for the
    source's own headlines (sample, synthetic), a path for a news file, False for none.
    ``quality`` is raise | warn | repair (see :func:`tradesim.data.quality.enforce`), ``allow``
    names checks to skip; ``source_options`` go to :func:`open_source` (``{"root": ...}`` for
    files). ``exchange`` is the trading calendar (an exchange_calendars code such as XNYS, or
    ``24/7`` for markets that never close): it stamps date-only files, drives the calendar
    checks and times news; None keeps each source's own (XNYS for files). Repairs made under
    ``quality='repair'`` (and sorting under ``warn``) are listed by ``MarketData.repairs``.
    """
    from tradesim.data import quality as dq

    if quality not in dq.POLICIES:
        raise ConfigError(f"quality policy {quality!r} is unknown; use one of "
                          f"{', '.join(dq.POLICIES)} (--quality, quality=)")
    options = dict(source_options or {})
    if exchange is not None:
        from tradesim.data.calendars import exchange_tz

        exchange_tz(exchange)  # an unknown calendar is a ConfigError naming it, before any load
    if source == "files":
        options.setdefault("quality", quality)
        options.setdefault("allow", tuple(allow))
        if exchange is not None:
            options.setdefault("exchange", exchange)
    src = open_source(source, **options) if isinstance(source, str) else source
    chosen = list(symbols) if symbols is not None else src.symbols()
    if not chosen:
        where = f" in {options['root']}" if "root" in options else ""
        raise ConfigError(f"source {src.name!r} has no symbols to list{where}; name the "
                          "symbols to load, or point the files source at a folder of "
                          "CSV/Parquet bar files (--data PATH)")
    hi = end_bound(end)
    if store is None and src.name in _REMOTE:
        store = Store()
    bars: dict[str, Bars] = {}
    for symbol in chosen:
        if store is not None:
            b = store.get(src, symbol, interval=interval, start=start, end=hi)
        else:
            b = src.load(symbol, interval=interval, start=start, end=hi)
        if src.name != "files":  # the file source applies the policy itself on load
            b = dq.enforce(b, policy=quality, allow=allow,
                           exchange=exchange or b.meta.get("calendar", "XNYS"))
        bars[symbol] = b
    calendar = exchange or getattr(src, "exchange", None) or "XNYS"
    return MarketData(bars, _news(src, news, chosen, start, hi, exchange=calendar))


def verify_source(source: str | Source, *, symbols: Sequence[str] | None = None,
                  interval: str | None = None, allow: Collection[str] = (),
                  exchange: str | None = None, **options: object) -> list:
    """Quality findings (``quality.Finding``) of every symbol of a source, loaded as is.

    ``interval`` None loads each symbol at the source's own interval (a file's, for example).
    ``exchange`` (e.g. XNYS, or ``24/7``) overrides the source's calendar, for a files source
    also the one its dates are stamped with.
    """
    from tradesim.data.calendars import exchange_tz
    from tradesim.data.quality import check_bars

    if exchange is not None:
        exchange_tz(exchange)  # an unknown calendar is a ConfigError naming it
    if isinstance(source, str):
        if source == "files":
            options.setdefault("quality", "warn")
            if exchange is not None:
                options.setdefault("exchange", exchange)
        source = open_source(source, **options)
    findings = []
    default = exchange or getattr(source, "exchange", "XNYS")
    for symbol in (list(symbols) if symbols is not None else source.symbols()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataQualityWarning)  # reported below, once
            bars = (source.load(symbol) if interval is None
                    else source.load(symbol, interval=interval))
        calendar = exchange or bars.meta.get("calendar", default)
        findings.extend(check_bars(bars, exchange=calendar, allow=allow))
    return findings


def _news(src: Source, news: bool | str | Path, symbols: list[str], start: object | None,
          end: object | None, *, exchange: str = "XNYS") -> News:
    """The headlines ``load_market`` attaches: the source's own, a file's, or none.

    A news file is read with :func:`tradesim.data.news.read_news`, timed on ``exchange``.
    """
    if news is False:
        return News.empty()
    if news is True:
        own = getattr(src, "news", None)
        return own(symbols=symbols, start=start, end=end) if callable(own) else News.empty()
    from tradesim.data.news import read_news

    return _window(read_news(Path(news), symbols=symbols, exchange=exchange), start, end)


def _window(news: News, start: object | None, end: object | None) -> News:
    """Items available in ``[start, end]`` (news is sorted by availability: views, no copy)."""
    i = 0 if start is None else int(np.searchsorted(news.available_at, to_utc_stamp(start),
                                                     "left"))
    j = len(news) if end is None else int(np.searchsorted(news.available_at, to_utc_stamp(end),
                                                          "right"))
    return News(*(getattr(news, c)[i:j] for c in NEWS_COLUMNS))
