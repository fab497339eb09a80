"""Point-in-time views: no bar or headline later than ``t``, zero-copy and read-only slices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradesim.data.bars import BAR_COLUMNS, NEWS_COLUMNS, Bars, News
from tradesim.data.view import MarketData
from tradesim.errors import LookAheadError

_BASE = np.datetime64("2021-01-04T00:00", "ns")
_MIN = np.timedelta64(60, "s")


def _bars(symbol: str, minutes: list[int]) -> Bars:
    """Bars stamped ``_BASE + minutes`` (unique, sorted) with prices encoding their stamp."""
    offs = np.unique(np.asarray(minutes, dtype=np.int64))
    px = 100.0 + offs.astype(float)
    return Bars.from_arrays(symbol=symbol, interval="1m", adjusted=True, source="test",
                            time=_BASE + offs * _MIN, open=px, high=px + 1, low=px - 1,
                            close=px, volume=np.ones(len(offs)))


def _news(minutes: list[int]) -> News:
    avail = pd.DatetimeIndex(_BASE + np.asarray(minutes, dtype=np.int64) * _MIN, tz="UTC")
    return News.from_frame(pd.DataFrame({
        "published_at": avail, "available_at": avail,
        "symbol": ["AAA" if i % 2 else "BBB" for i in range(len(minutes))],
        "title": [f"item {m}" for m in minutes]}))


stamps = st.lists(st.integers(0, 500), min_size=1, max_size=40)
query = st.integers(-10, 510)


@settings(max_examples=60, deadline=None)
@given(a=stamps, b=stamps, news=st.lists(st.integers(0, 500), max_size=30), t=query)
def test_view_never_shows_a_later_bar_or_headline(a: list[int], b: list[int], news: list[int],
                                                  t: int) -> None:
    data = MarketData({"AAA": _bars("AAA", a), "BBB": _bars("BBB", b)}, news=_news(news))
    now = _BASE + t * _MIN
    view = data.as_of(now)
    for symbol, minutes in (("AAA", a), ("BBB", b)):
        visible = view.bars(symbol)
        expected = sorted(m for m in set(minutes) if m <= t)  # each symbol's own calendar
        assert list((visible.time - _BASE) // _MIN) == expected
        assert view.count(symbol) == len(expected)
        assert (visible.time <= now).all()
        last = view.last_close(symbol)
        assert last == 100.0 + expected[-1] if expected else np.isnan(last)
        assert (view.bars(symbol, lookback=3).time == visible.time[-3:]).all()
    items = view.news()
    assert sorted((items.available_at - _BASE) // _MIN) == sorted(m for m in news if m <= t)
    assert (view.news(["AAA"]).available_at <= now).all()


@settings(max_examples=40, deadline=None)
@given(a=stamps, t=query, ahead=st.integers(1, 1000))
def test_asking_past_the_decision_time_raises(a: list[int], t: int, ahead: int) -> None:
    view = MarketData({"AAA": _bars("AAA", a)}, news=_news([0, 250, 500])).as_of(_BASE + t * _MIN)
    later = pd.Timestamp(_BASE + (t + ahead) * _MIN, tz="UTC")
    with pytest.raises(LookAheadError):
        view.bars("AAA", end=later)
    with pytest.raises(LookAheadError):
        view.news(end=later)
    assert (view.bars("AAA", end=pd.Timestamp(view.time, tz="UTC")).time <= view.time).all()


def _reachable_rows(arr: np.ndarray) -> int:
    """Rows of ``arr``'s dtype reachable through its ``.base`` chain (what a peeker could read)."""
    owner = arr
    while getattr(owner, "base", None) is not None:
        owner = owner.base
    nbytes = owner.nbytes if isinstance(owner, np.ndarray) else memoryview(owner).nbytes
    return nbytes // arr.itemsize


@pytest.mark.parametrize("t", [-1, 0, 7, 250, 500, 501])
def test_views_are_read_only_and_reach_no_later_row(t: int) -> None:
    """Before the first bar, exactly on stamps, between them and after the last one."""
    full = _bars("AAA", list(range(0, 501, 7)))
    news = _news(list(range(0, 501, 50)))
    view = MarketData({"AAA": full}, news=news).as_of(_BASE + t * _MIN)
    visible = view["AAA"]
    for column in ("time", *BAR_COLUMNS):
        arr = getattr(visible, column)
        assert not arr.flags.writeable
        assert _reachable_rows(arr) == len(visible)  # not the full history via .base
        with pytest.raises(ValueError):
            arr[:1] = arr[:1]
    items = view.news()
    for column in ("published_at", "available_at"):
        arr = getattr(items, column)
        assert not arr.flags.writeable
        assert _reachable_rows(arr) == len(items)


def test_long_windows_are_zero_copy_yet_sealed_at_the_decision_time() -> None:
    full = _bars("AAA", list(range(0, 50_000, 7)))
    view = MarketData({"AAA": full}).as_of(_BASE + 30_000 * _MIN)
    visible = view["AAA"]
    assert len(visible) > 2048  # above the copy threshold
    for column in ("time", *BAR_COLUMNS):
        arr = getattr(visible, column)
        assert np.shares_memory(arr, getattr(full, column))  # no copy of the history
        assert _reachable_rows(arr) == len(visible)
    assert visible.time[-1] <= view.time


def test_exactly_on_a_stamp_includes_that_bar_and_headline() -> None:
    view = MarketData({"AAA": _bars("AAA", [5, 10])}, news=_news([10])).as_of(_BASE + 10 * _MIN)
    assert view.count("AAA") == 2
    assert len(view.news()) == 1
    assert view.time == _BASE + 10 * _MIN


def test_a_long_window_outlives_the_market_data_it_came_from() -> None:
    import gc

    full = _bars("AAA", list(range(0, 50_000, 7)))
    market = MarketData({"AAA": full})
    window = market.as_of(_BASE + 21_000 * _MIN)["AAA"]
    assert len(window) > 2048  # a zero-copy window, not a copy
    expected = full.close[:len(window)].copy()
    del market, full
    gc.collect()
    _ = [np.random.default_rng(i).random(10_000) for i in range(20)]  # reuse freed memory
    assert np.array_equal(window.close, expected)
