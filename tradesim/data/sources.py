"""The one interface every market-data source implements, and lookup of sources by name."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from tradesim.data.bars import Bars


@runtime_checkable
class Source(Protocol):
    """A source of validated bars: files, yfinance, synthetic, replay.

    ``load`` returns :class:`Bars` with UTC bar-end stamps and an ``adjusted`` flag, or raises
    ``UnknownSymbolError`` / ``DataFormatError`` / ``DataSourceError`` naming what went wrong.
    ``key`` identifies the source for the store's cache (name plus adjustment mode and options
    that change the data).
    """

    name: str

    def load(self, symbol: str, *, interval: str = "1d", start: object | None = None,
             end: object | None = None) -> Bars: ...

    def symbols(self) -> list[str]: ...

    @property
    def key(self) -> str: ...
