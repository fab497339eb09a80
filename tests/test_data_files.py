"""File source: every shared file loads with exact bar-end stamps; malformed files are named."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradesim.data import calendars
from tradesim.data.files import FileSource, read_bars, symbol_from_path
from tradesim.data.sources import Source
from tradesim.errors import (
    ConfigError,
    DataFormatError,
    DataQualityError,
    DataQualityWarning,
    DataSourceError,
    UnknownSymbolError,
)

DAILY_QUIRKS = ("zero_volume", "missing_session", "non_session")
MINUTE_QUIRKS = ("extended_hours", "intraday_gap", "missing_session")
YAHOO = "Date,Open,High,Low,Close,Adj Close,Volume\n"


def _stamp(s: str) -> np.datetime64:
    return np.datetime64(s, "ns")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def daily(shared_data: Path) -> dict:
    src = FileSource(shared_data / "daily", allow=DAILY_QUIRKS)
    return {s: src.load(s) for s in src.symbols()}


def test_every_daily_file_loads_adjusted_at_session_closes(daily: dict) -> None:
    assert len(daily) == 25
    for symbol, bars in daily.items():
        assert bars.interval == "1d" and bars.adjusted and bars.source == "files"
        assert bars.meta["layout"] == "stooq"
        assert (np.diff(bars.time.astype(np.int64)) > 0).all(), symbol
        days = bars.time.astype("datetime64[D]")
        on = calendars.is_session(days)
        np.testing.assert_array_equal(bars.time[on], calendars.session_close_stamps(days[on]))
        assert (~on).sum() <= 2, symbol  # only the vendor's stray rows (e.g. 1985-09-27)
    assert daily["GE"].time[0] == _stamp("1962-01-02T21:00")


def test_daily_stamps_at_early_close_and_dst_switch(daily: dict) -> None:
    spy = daily["SPY"]
    got = spy.between("2016-11-24", "2016-11-29").time
    np.testing.assert_array_equal(got, [_stamp("2016-11-25T18:00"), _stamp("2016-11-28T21:00")])
    got = spy.between("2011-03-11", "2011-03-15").time
    np.testing.assert_array_equal(got, [_stamp("2011-03-11T21:00"), _stamp("2011-03-14T20:00")])


def test_yahoo_file_scales_by_adj_close_unless_raw_asked(shared_data: Path) -> None:
    path = shared_data / "yahoo" / "aapl.csv"
    adj = FileSource(path.parent, allow=("zero_volume",)).load("aapl")
    raw = read_bars(path, adjusted=False)
    assert adj.symbol == raw.symbol == "AAPL"
    assert adj.adjusted and not raw.adjusted and adj.meta["layout"] == "yahoo"
    first = pd.read_csv(path, nrows=1).iloc[0]
    assert adj.close[0] == pytest.approx(first["Adj Close"])
    assert raw.close[0] == pytest.approx(first["Close"])
    assert adj.open[0] / raw.open[0] == pytest.approx(first["Adj Close"] / first["Close"])
    np.testing.assert_array_equal(adj.between("2017-11-24", "2017-11-28").time,
                                  [_stamp("2017-11-24T18:00"), _stamp("2017-11-27T21:00")])
    assert adj.time[-1] == _stamp("2024-02-02T21:00")


def test_fnspid_midnight_utc_dates_become_session_closes(shared_data: Path) -> None:
    src = FileSource(shared_data / "fnspid", quality="warn")
    with pytest.warns(DataQualityWarning, match="2020-07-06"):  # the splice is reported, not hidden
        goog = src.load("GOOG")
    assert goog.interval == "1d" and goog.adjusted
    assert goog.time[0] == _stamp("2019-02-06T21:00")
    np.testing.assert_array_equal(goog.between("2019-11-29", "2019-11-30").time,
                                  [_stamp("2019-11-29T18:00")])
    assert "Sentiment_gpt" in goog.meta["extra_columns"]
    with pytest.raises(DataQualityError, match="2020-07-06"):
        FileSource(shared_data / "fnspid").load("GOOG")


def test_minute_export_is_utc_bar_end(shared_data: Path) -> None:
    src = FileSource(shared_data / "intraday", allow=MINUTE_QUIRKS)
    (symbol,) = src.symbols()
    bars = src.load(symbol.lower())
    assert bars.interval == "1m" and not bars.adjusted and len(bars) == 14180
    assert bars.time[0] == _stamp("2011-01-03T09:01")
    assert bars.time[-1] == _stamp("2011-02-01T01:00")
    assert bars.open[0] == 126.35 and bars.volume[0] == 1579
    regular = calendars.regular_hours_mask(bars.time)
    assert 0 < regular.sum() < len(bars)  # pre/after-market bars are kept and recognisable


def test_symbol_from_file_names() -> None:
    assert symbol_from_path("data/spy.us.txt") == "SPY"
    assert symbol_from_path("GOOG.csv") == "GOOG"
    assert symbol_from_path("aapl.csv") == "AAPL"
    assert symbol_from_path("brk.b.parquet") == "BRK.B"


def test_source_lists_finds_case_insensitively_and_names_missing(tmp_path: Path) -> None:
    _write(tmp_path, "aapl.csv", YAHOO + "2020-01-02,1,2,0.5,1.5,1.5,10\n")
    _write(tmp_path, "notes.md", "not data")
    src = FileSource(tmp_path)
    assert isinstance(src, Source)
    assert src.symbols() == ["AAPL"]
    assert src.load("Aapl").symbol == "AAPL"
    with pytest.raises(UnknownSymbolError, match="AAPL"):
        src.load("MSFT")
    _write(tmp_path, "AAPL.parquet", "")
    with pytest.raises(DataSourceError, match="several files"):
        src.load("AAPL")


def test_source_key_names_root_layout_and_adjustment(tmp_path: Path) -> None:
    keys = {FileSource(tmp_path).key, FileSource(tmp_path, adjusted=False).key,
            FileSource(tmp_path, layout="stooq").key, FileSource(tmp_path / "..").key}
    assert len(keys) == 4
    assert str(tmp_path.resolve()) in FileSource(tmp_path).key


def test_load_applies_quality_policy_and_window(tmp_path: Path) -> None:
    _write(tmp_path, "x.csv", YAHOO + "2020-01-02,1,2,0.5,1.5,1.5,10\n"
                                      "2020-01-03,1,2,0.5,1.5,1.5,0\n"
                                      "2020-01-06,1,2,0.5,1.5,1.5,10\n")
    with pytest.raises(DataQualityError, match="2020-01-03"):
        FileSource(tmp_path).load("X")
    src = FileSource(tmp_path, allow=("zero_volume",))
    assert len(src.load("X")) == 3
    assert src.load("X", start="2020-01-03", end="2020-01-03T23:00").time.tolist() == [
        _stamp("2020-01-03T21:00").item()]


def test_stooq_cannot_be_loaded_raw_and_interval_must_match(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.us.txt", "Date,Open,High,Low,Close,Volume,OpenInt\n"
                                        "2020-01-02,1,2,0.5,1.5,10,0\n")
    with pytest.raises(ConfigError, match="adjusted"):
        read_bars(path, adjusted=False)
    with pytest.raises(DataSourceError, match="1d bars"):
        read_bars(path, interval="1m")


def test_newest_first_export_is_flipped(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.csv", YAHOO + "2020-01-03,2,3,1,2.5,2.5,10\n"
                                             "2020-01-02,1,2,0.5,1.5,1.5,10\n")
    bars = read_bars(path)
    assert bars.meta["reversed"] and bars.close.tolist() == [1.5, 2.5]


def test_explicit_columns_and_parquet_with_zoned_intraday_stamps(tmp_path: Path) -> None:
    stamps = pd.date_range("2020-01-02 09:35", periods=3, freq="5min", tz="America/New_York")
    frame = pd.DataFrame({"ts": stamps, "o": [1.0, 2, 3], "h": [2.0, 3, 4], "lo": [0.5, 1, 2],
                          "px": [1.5, 2.5, 3.5], "qty": [10, 20, 30]})
    path = tmp_path / "msft.parquet"
    frame.to_parquet(path)
    bars = read_bars(path, columns={"time": "ts", "open": "o", "high": "h", "low": "lo",
                                    "close": "px", "volume": "qty"})
    assert bars.symbol == "MSFT" and bars.interval == "5m" and not bars.adjusted
    assert bars.time[0] == _stamp("2020-01-02T14:35")
    csv = _write(tmp_path, "m.csv", "time,open,high,low,close,volume\n"
                                    "2020-01-02 09:35,1,2,0.5,1.5,10\n"
                                    "2020-01-02 09:40,1,2,0.5,1.5,10\n")
    assert read_bars(csv, tz="America/New_York").time[0] == _stamp("2020-01-02T14:35")
    with pytest.raises(ConfigError, match="bogus"):
        read_bars(csv, columns={"bogus": "x"})


MALFORMED = {
    "missing column": ("x.csv", "Date,Open,High,Low,Volume\n2020-01-02,1,2,0.5,10\n",
                       "auto", 1, "Close", "missing column"),
    "unparsable date": ("x.csv", YAHOO + "2020-01-02,1,2,0.5,1.5,1.5,10\n"
                                         "2020-13-45,1,2,0.5,1.5,1.5,10\n",
                        "auto", 3, "Date", "unparsable date"),
    "mixed zones": ("x.csv", "Date,Open,High,Low,Close,Volume\n"
                             "2020-01-02 10:00:00+00:00,1,2,0.5,1.5,10\n"
                             "2020-01-02 10:01:00+00:00,1,2,0.5,1.5,10\n"
                             "2020-01-02 10:02:00,1,2,0.5,1.5,10\n",
                    "auto", 4, "Date", "mixed time zones"),
    "naive stamps": ("x.csv", "Date,Open,High,Low,Close,Volume\n"
                              "2020-01-02 10:00:00,1,2,0.5,1.5,10\n",
                     "auto", 2, "Date", "no time zone"),
    "non-numeric price": ("x.csv", YAHOO + "2020-01-02,1,2,0.5,1.5,1.5,10\n"
                                           "2020-01-03,1,2,abc,1.5,1.5,10\n",
                          "auto", 3, "Low", "non-numeric value 'abc'"),
    "semicolon file read as stooq": ("x.us.txt", "Date;Open;High;Low;Close;Volume;OpenInt\n"
                                                 "2020-01-02;1;2;0.5;1.5;10;0\n",
                                     "stooq", 1, None, "';'-separated"),
    "comma minute file read as minute": ("m.csv", "20110103 090100,126.35,126.39,126.35,"
                                                  "126.39,1579\n",
                                         "minute", 1, None, "found ','"),
    "row with other delimiter": ("x.csv", YAHOO + "2020-01-02,1,2,0.5,1.5,1.5,10\n"
                                                  "2020-01-03;1;2;0.5;1.5;1.5;10\n",
                                 "auto", 3, "Date", "';'-separated"),
    "row with extra fields": ("x.csv", YAHOO + "2020-01-02,1,2,0.5,1.5,1.5,10\n"
                                               "2020-01-03,1,2,0.5,1.5,1.5,10,7\n",
                              "auto", 3, None, "wrong number of fields"),
    "blank line inside": ("x.csv", YAHOO + "2020-01-02,1,2,0.5,1.5,1.5,10\n\n"
                                           "2020-01-06,1,2,0.5,1.5,1.5,10\n",
                          "auto", 3, None, "blank line"),
    "empty file": ("x.csv", "", "auto", 1, None, "empty"),
    "header only": ("x.csv", YAHOO, "auto", 2, None, "no rows"),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_file_names_file_row_and_column(tmp_path: Path, case: str) -> None:
    name, text, layout, row, column, message = MALFORMED[case]
    path = _write(tmp_path, name, text)
    with pytest.raises(DataFormatError, match=message) as caught:
        read_bars(path, layout=layout)
    err = caught.value
    assert (err.path, err.row, err.column) == (str(path), row, column)
    assert str(path) in str(err) and f"row {row}" in str(err)


def test_trailing_blank_lines_and_null_cells_are_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.csv", YAHOO + "2020-01-02,1,2,0.5,1.5,1.5,10\n"
                                             "2020-01-03,null,null,null,null,null,null\n\n\n")
    bars = read_bars(path)
    assert len(bars) == 2 and np.isnan(bars.close[1])


def test_auto_layout_reads_semicolon_headers_and_gzip(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.csv", "Date;Open;High;Low;Close;Volume\n2020-01-02;1;2;0.5;1.5;10\n")
    assert read_bars(path).close.tolist() == [1.5]
    packed = tmp_path / "y.csv.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    bars = read_bars(packed)
    assert bars.symbol == "Y" and bars.time[0] == _stamp("2020-01-02T21:00")


def test_a_file_that_is_not_parquet_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "prices.parquet"
    bad.write_text("Date,Open\n2020-01-02,1\n")
    with pytest.raises(DataFormatError, match="not a readable Parquet file") as info:
        read_bars(bad)
    assert info.value.path == str(bad)


def test_mixed_zone_message_names_both_rows_and_its_fix_works(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.csv", "Date,Open,High,Low,Close,Volume\n"
                                     "2020-01-02 15:00:00+00:00,1,2,0.5,1.5,10\n"
                                     "2020-01-02 15:01:00+00:00,1,2,0.5,1.5,10\n"
                                     "2020-01-02 10:02:00,1,2,0.5,1.5,10\n")
    with pytest.raises(DataFormatError) as err:
        read_bars(path)
    assert "row 2 ('2020-01-02 15:00:00+00:00') has a zone" in str(err.value)
    assert "row 4 ('2020-01-02 10:02:00') has none" in str(err.value)
    bars = read_bars(path, tz="America/New_York")  # the fix the message names
    np.testing.assert_array_equal(bars.time, [_stamp("2020-01-02T15:00"),
                                              _stamp("2020-01-02T15:01"),
                                              _stamp("2020-01-02T15:02")])
    fixed = _write(tmp_path, "y.csv", path.read_text().replace("10:02:00,", "15:02:00+00:00,"))
    np.testing.assert_array_equal(read_bars(fixed).time, bars.time)  # the other fix it names


def test_date_rows_with_and_without_a_zone_are_dates(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.csv", YAHOO + "2020-01-02 00:00:00+00:00,1,2,0.5,1.5,1.5,10\n"
                                             "2020-01-03,1,2,0.5,1.5,1.5,10\n")
    np.testing.assert_array_equal(read_bars(path).time, [_stamp("2020-01-02T21:00"),
                                                         _stamp("2020-01-03T21:00")])


def test_interval_messages_name_the_setting_in_both_worlds(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.csv", YAHOO + "2020-01-02,1,2,0.5,1.5,1.5,10\n")
    with pytest.raises(DataSourceError) as err:
        read_bars(path, interval="1m")
    assert "--interval 1d" in str(err.value) and "interval='1d'" in str(err.value)
    with pytest.raises(ConfigError) as bad:
        read_bars(path, interval="1x")
    assert "--interval" in str(bad.value)
    with pytest.raises(DataFormatError) as missing:
        read_bars(_write(tmp_path, "y.csv", "Date,Open,High,Low,Volume\n2020-01-02,1,2,0.5,1\n"))
    assert "rename the file's column to 'Close'" in str(missing.value)


def test_unsorted_file_under_warn_reaches_the_caller_sorted(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.csv", YAHOO + "2020-01-03,1,2,0.5,1.5,1.5,10\n"
                                             "2020-01-02,1,2,0.5,1.4,1.4,10\n"
                                             "2020-01-06,1,2,0.5,1.6,1.6,10\n")
    with pytest.warns(DataQualityWarning):
        bars = FileSource(path, quality="warn").load("x")
    assert bars.close.tolist() == [1.4, 1.5, 1.6]
    assert [r["check"] for r in bars.meta["repairs"]] == ["unsorted"]
