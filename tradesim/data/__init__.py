"""Market data: sources, local store, point-in-time views, calendars and quality checks."""

from __future__ import annotations

import importlib
from typing import Any

from tradesim.data.bars import Bars, News
from tradesim.data.view import MarketData, PointInTimeView

# Loaded on first use: sources pull in calendars, pyarrow and scipy, which cost seconds to import.
_LAZY = {"FileSource": "files", "read_bars": "files", "read_news": "news",
         "SyntheticSource": "synthetic", "load_sample": "synthetic", "Store": "store",
         "load_market": "load", "open_source": "load"}

__all__ = ["Bars", "News", "MarketData", "PointInTimeView", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"tradesim.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tradesim.data' has no attribute {name!r}")
