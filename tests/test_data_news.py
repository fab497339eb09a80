"""News files: headlines become available point-in-time (after-close items at the next open)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradesim.data import MarketData
from tradesim.data.bars import Bars
from tradesim.data.files import FileSource
from tradesim.data.news import read_news
from tradesim.errors import DataFormatError

BENZINGA = "benzinga_analyst_ratings_processed_filtered_AAPL_AMZN_GOOG_NVDA_TSLA.csv"
HEADER = "Unnamed: 0,title,date,stock,converted_date\n"


def _write(tmp_path: Path, text: str, name: str = "news.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def benzinga(shared_data: Path) -> Path:
    return shared_data / "news" / BENZINGA


def test_benzinga_file_maps_itself_and_drops_exact_duplicates(benzinga: Path) -> None:
    news = read_news(benzinga)
    assert len(news) == 7071 - 7
    assert len(read_news(benzinga, dedupe=False)) == 7071
    assert set(news.symbol) == {"AAPL", "AMZN", "GOOG", "NVDA", "TSLA"}
    assert (news.available_at >= news.published_at).all()
    assert (np.diff(news.available_at.astype(np.int64)) >= 0).all()
    frame = news.frame()
    row = frame[frame.title == "10 Biggest Price Target Changes For Wednesday"]
    row = row[row.published_at == pd.Timestamp("2020-06-10 12:14", tz="UTC")]
    assert row.available_at.tolist() == [pd.Timestamp("2020-06-10 13:30", tz="UTC")]


def test_headlines_join_prices_point_in_time(shared_data: Path, benzinga: Path) -> None:
    goog = FileSource(shared_data / "fnspid", quality="repair").load("GOOG")
    news = read_news(benzinga, symbols=["goog"])
    assert set(news.symbol) == {"GOOG"} and len(news) > 1000
    market = MarketData({"GOOG": goog}, news)
    for t in goog.time:
        seen = market.as_of(t).news(["GOOG"])
        assert len(seen) == int((news.available_at <= t).sum())
        assert not len(seen) or seen.available_at.max() <= t


def test_after_close_headline_waits_for_next_open(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER
                  + "1,In-session news,2020-06-10 11:33:00-04:00,AAPL,10-06-2020\n"
                  + "2,After-close news,2020-06-10 16:30:00-04:00,AAPL,10-06-2020\n"
                  + "3,Friday-night news,2020-06-12 20:00:00-04:00,AAPL,12-06-2020\n")
    news = read_news(path)
    bars_time = pd.DatetimeIndex(["2020-06-10 20:00", "2020-06-11 20:00"], tz="UTC")
    bars = pd.DataFrame({"open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0},
                        index=bars_time)
    market = MarketData({"AAPL": Bars.from_frame(bars, symbol="AAPL", interval="1d",
                                                 adjusted=True, source="test")}, news)

    def titles(t: str) -> list[str]:
        return list(market.as_of(t).news().title)

    assert titles("2020-06-10 15:32Z") == []
    assert titles("2020-06-10 15:33Z") == ["In-session news"]
    assert titles("2020-06-10 20:00Z") == ["In-session news"]  # that day's close: not yet
    assert titles("2020-06-11 13:29:59Z") == ["In-session news"]
    assert titles("2020-06-11 13:30Z") == ["In-session news", "After-close news"]
    assert titles("2020-06-14 23:00Z") == ["In-session news", "After-close news"]
    assert titles("2020-06-15 13:30Z")[-1] == "Friday-night news"


def test_naive_stamps_need_a_zone(tmp_path: Path) -> None:
    path = _write(tmp_path, "time,symbol,headline,body,source\n"
                            "2020-06-10 11:33:00,aapl,Hello,Some text,wire\n")
    with pytest.raises(DataFormatError, match="no time zone") as caught:
        read_news(path)
    assert (caught.value.path, caught.value.row, caught.value.column) == (str(path), 2, "time")
    news = read_news(path, tz="America/New_York")
    assert news.published_at[0] == np.datetime64("2020-06-10T15:33", "ns")
    assert (news.symbol[0], news.body[0], news.source[0]) == ("AAPL", "Some text", "wire")


def test_date_only_items_wait_until_after_that_day(tmp_path: Path) -> None:
    path = _write(tmp_path, "date,symbol,title\n2020-06-10,AAPL,Dated only\n")
    news = read_news(path, tz="America/New_York")
    assert news.available_at[0] == np.datetime64("2020-06-11T13:30", "ns")


def test_parquet_with_column_mapping(tmp_path: Path) -> None:
    frame = pd.DataFrame({"when": pd.to_datetime(["2020-06-10 14:00"], utc=True),
                          "tick": ["TSLA"], "head": ["Parquet item"]})
    path = tmp_path / "n.parquet"
    frame.to_parquet(path)
    news = read_news(path, columns={"published_at": "when", "symbol": "tick", "title": "head"})
    assert list(news.title) == ["Parquet item"]
    assert news.available_at[0] == np.datetime64("2020-06-10T14:00", "ns")


MALFORMED = {
    "mixed zones": (HEADER + "1,A,2020-06-10 11:33:00-04:00,AAPL,x\n"
                             "2,B,2020-06-10 11:34:00,AAPL,x\n", 3, "date", "mixed time zones"),
    "unparsable date": (HEADER + "1,A,2020-06-10 11:33:00-04:00,AAPL,x\n"
                                 "2,B,yesterday-04:00,AAPL,x\n", 3, "date", "unparsable"),
    "missing title": ("date,stock\n2020-06-10 11:33:00-04:00,AAPL\n", 1, "title", "missing"),
    "empty title": (HEADER + "1,,2020-06-10 11:33:00-04:00,AAPL,x\n", 2, "title", "empty"),
    "empty file": ("", 1, None, "empty"),
    "header only": (HEADER, 2, None, "no headlines"),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_news_names_file_row_and_column(tmp_path: Path, case: str) -> None:
    text, row, column, message = MALFORMED[case]
    path = _write(tmp_path, text)
    with pytest.raises(DataFormatError, match=message) as caught:
        read_news(path)
    assert (caught.value.path, caught.value.row, caught.value.column) == (str(path), row, column)


def test_load_market_reads_a_news_file_path(tmp_path: Path) -> None:
    from tradesim.data.load import load_market

    prices = tmp_path / "prices"
    prices.mkdir()
    (prices / "aapl.csv").write_text("Date,Open,High,Low,Close,Volume\n"
                                     "2020-06-10,1,2,0.5,1.5,10\n2020-06-11,1,2,0.5,1.5,10\n")
    path = _write(tmp_path, HEADER
                  + "1,After-close news,2020-06-10 16:30:00-04:00,AAPL,10-06-2020\n"
                  + "2,Other ticker,2020-06-10 16:30:00-04:00,MSFT,10-06-2020\n")
    market = load_market(symbols=["AAPL"], source="files", news=path,
                         source_options={"root": prices})
    assert market.news.title.tolist() == ["After-close news"]
    assert market.news.available_at[0] == np.datetime64("2020-06-11T13:30", "ns")
    always = load_market(symbols=["AAPL"], source="files", news=path, exchange="24/7",
                         source_options={"root": prices}, allow=("non_session",))
    assert always.news.available_at[0] == np.datetime64("2020-06-10T20:30", "ns")
