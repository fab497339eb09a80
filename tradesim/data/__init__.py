"""Market data: sources, local store, point-in-time views, calendars and quality checks."""

from tradesim.data.bars import Bars, News
from tradesim.data.view import MarketData, PointInTimeView

__all__ = ["Bars", "News", "MarketData", "PointInTimeView"]
