"""Market data: sources, local store, point-in-time views, calendars and quality checks."""

from tradesim.data.bars import Bars, News
from tradesim.data.files import FileSource, read_bars
from tradesim.data.load import load_market, open_source
from tradesim.data.news import read_news
from tradesim.data.store import Store
from tradesim.data.synthetic import SyntheticSource, load_sample
from tradesim.data.view import MarketData, PointInTimeView

__all__ = ["Bars", "News", "MarketData", "PointInTimeView", "FileSource", "read_bars", "read_news",
           "SyntheticSource", "load_sample", "Store", "load_market", "open_source"]
