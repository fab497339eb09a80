"""Real data for the team: one-ticker article files as point-in-time news beside file prices.

The FNSPID article file ``news/fnspid_AA_articles.csv`` (``Date,Url,Mark,New_text``) has no
symbol and no headline column: its ``New_text`` is an article summarised to ~580 characters.
:data:`ARTICLE_COLUMNS` maps it onto the news fields (the summary stands in for the headline,
the URL is kept as the source) and ``symbol=`` tags every item; the stamps are UTC publication
times, made available at once in trading hours, else at the next open
(:func:`tradesim.data.news.read_news`). Ticker-tagged files (Benzinga) need no mapping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from tradesim.data.bars import News
from tradesim.data.load import load_market
from tradesim.data.news import read_news
from tradesim.data.view import MarketData

ARTICLE_COLUMNS: Mapping[str, str] = {"published_at": "Date", "title": "New_text",
                                      "source": "Url"}


def read_articles(path: str | Path, *, symbol: str, exchange: str = "XNYS",
                  columns: Mapping[str, str] = ARTICLE_COLUMNS) -> News:
    """A one-ticker article file (FNSPID layout by default) as news tagged ``symbol``."""
    return read_news(path, columns=columns, symbol=symbol, exchange=exchange)


def market_with_news(*, prices: str | Path, symbols: Sequence[str], news: News,
                     start: object | None = None, end: object | None = None,
                     quality: str = "repair") -> MarketData:
    """Bars of ``symbols`` from the price folder ``prices`` (files source) plus ``news``.

    ``start``/``end`` trim the bars (keep history before a backtest's start for the
    indicators); the news is kept whole, since the point-in-time view shows each item only
    from its ``available_at`` on.
    """
    bars = load_market(symbols=list(symbols), source="files", start=start, end=end,
                       quality=quality, news=False, source_options={"root": str(prices)})
    return MarketData({s: bars.full(s) for s in bars.symbols},
                      news.for_symbols([s.upper() for s in symbols]))


__all__ = ["ARTICLE_COLUMNS", "market_with_news", "read_articles"]
