"""Trading calendars: session closes for daily bars, regular hours, and when news becomes usable."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradesim.data import calendars
from tradesim.errors import ConfigError


def _ns(*stamps: str) -> np.ndarray:
    return np.array(stamps, dtype="datetime64[ns]")


def test_session_closes_honour_early_closes_and_dst() -> None:
    got = calendars.session_close_stamps(
        ["2017-11-24", "2017-11-27", "2011-03-11", "2011-03-14", "2017-07-03"])
    want = _ns("2017-11-24T18:00", "2017-11-27T21:00", "2011-03-11T21:00", "2011-03-14T20:00",
               "2017-07-03T17:00")
    np.testing.assert_array_equal(got, want)


def test_non_session_dates_get_four_pm_new_york() -> None:
    got = calendars.session_close_stamps(["2017-11-23", "2017-07-04", "2017-07-08"])
    np.testing.assert_array_equal(got, _ns("2017-11-23T21:00", "2017-07-04T20:00",
                                           "2017-07-08T20:00"))
    np.testing.assert_array_equal(calendars.is_session(["2017-11-23", "2017-11-24"]),
                                  [False, True])


def test_session_closes_accept_tz_aware_and_numpy_dates() -> None:
    aware = pd.DatetimeIndex(["2019-02-06"], tz="UTC")
    days = np.array(["2019-02-06"], dtype="datetime64[D]")
    want = _ns("2019-02-06T21:00")
    np.testing.assert_array_equal(calendars.session_close_stamps(aware), want)
    np.testing.assert_array_equal(calendars.session_close_stamps(days), want)


def test_sixty_years_of_dates_is_vectorised_and_reaches_1962() -> None:
    dates = pd.bdate_range("1962-01-02", "2022-12-30")
    calendars.session_close_stamps(dates[:2])  # build the cached calendar outside the timing
    started = time.perf_counter()
    closes = calendars.session_close_stamps(dates)
    assert time.perf_counter() - started < 0.5
    assert closes[0] == np.datetime64("1962-01-02T21:00", "ns")
    assert len(closes) == len(dates)


def test_sessions_skip_holidays_and_weekends() -> None:
    got = calendars.sessions("2017-11-20", "2017-11-27")
    assert [d.strftime("%Y-%m-%d") for d in got] == [
        "2017-11-20", "2017-11-21", "2017-11-22", "2017-11-24", "2017-11-27"]
    assert got.tz is None


def test_session_bounds_give_regular_hours_in_utc() -> None:
    days, opens, closes = calendars.session_bounds("2017-11-24", "2017-11-24")
    assert days.tolist() == [np.datetime64("2017-11-24", "D").item()]
    np.testing.assert_array_equal(opens, _ns("2017-11-24T14:30"))
    np.testing.assert_array_equal(closes, _ns("2017-11-24T18:00"))


def test_regular_hours_mask_uses_bar_end_stamps() -> None:
    ends = _ns("2011-01-03T14:30", "2011-01-03T14:31", "2011-01-03T21:00", "2011-01-03T21:01",
               "2011-01-08T15:00")
    np.testing.assert_array_equal(calendars.regular_hours_mask(ends),
                                  [False, True, True, False, False])


def test_news_in_session_is_immediate_otherwise_next_open() -> None:
    published = pd.to_datetime([
        "2020-06-10 11:33-04:00",  # in session
        "2020-06-10 16:00-04:00",  # at the close
        "2020-06-10 08:14-04:00",  # pre-market
        "2020-06-13 10:00-04:00",  # Saturday
        "2017-11-24 13:30-05:00",  # after an early close
    ], utc=True)
    got = calendars.news_available_at(published)
    want = _ns("2020-06-10T15:33", "2020-06-11T13:30", "2020-06-10T13:30", "2020-06-15T13:30",
               "2017-11-27T14:30")
    np.testing.assert_array_equal(got, want)


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=pd.Timestamp("1995-01-01").to_pydatetime(),
                    max_value=pd.Timestamp("2025-12-31").to_pydatetime()))
def test_news_becomes_available_at_the_earliest_tradable_moment(published: object) -> None:
    t = np.array([np.datetime64(published, "ns")])
    avail = calendars.news_available_at(t)[0]
    days, opens, closes = calendars.session_bounds(
        pd.Timestamp(t[0]) - pd.Timedelta(days=10), pd.Timestamp(t[0]) + pd.Timedelta(days=10))
    assert avail >= t[0]
    inside = (opens <= avail) & (avail < closes)
    assert inside.any()  # usable only while a session trades
    skipped = (opens > t[0]) & (opens < avail)
    assert not skipped.any()  # and no earlier session open was passed over


def test_unknown_exchange_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="NOPE"):
        calendars.session_close_stamps(["2020-01-02"], exchange="NOPE")


def test_other_exchanges_use_their_own_hours() -> None:
    got = calendars.session_close_stamps(["2020-01-02"], exchange="XLON")
    np.testing.assert_array_equal(got, _ns("2020-01-02T16:30"))


@pytest.mark.parametrize("name", ["24/7", "ALWAYS", "always"])
def test_round_the_clock_calendar_has_every_day_and_midnight_closes(name: str) -> None:
    days = pd.date_range("2021-01-01", "2021-01-10", freq="D")
    assert calendars.is_session(days, exchange=name).all()
    assert len(calendars.sessions("2021-01-01", "2021-12-31", exchange=name)) == 365
    np.testing.assert_array_equal(calendars.session_close_stamps(["2021-01-02"], exchange=name),
                                  _ns("2021-01-03T00:00"))
    assert calendars.regular_hours_mask(_ns("2021-01-02T03:17"), exchange=name).all()
    saturday_night = _ns("2021-01-02T23:30")
    np.testing.assert_array_equal(calendars.news_available_at(saturday_night, exchange=name),
                                  saturday_night)
    assert calendars.exchange_tz(name) == "UTC"


def test_unknown_exchange_names_the_24_7_calendar() -> None:
    with pytest.raises(ConfigError, match="24/7"):
        calendars.exchange_tz("NOPE")
