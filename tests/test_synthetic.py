"""Synthetic market: stylised facts, OHLC/volume consistency, determinism, leak-free news."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tradesim.data import calendars, synthetic
from tradesim.data.bars import NEWS_COLUMNS, Bars
from tradesim.data.sources import Source
from tradesim.data.synthetic import (
    DEFAULT_SYMBOLS,
    SAMPLE_SEED,
    SyntheticParams,
    SyntheticSource,
    load_sample,
    sample_dir,
    write_sample,
)
from tradesim.errors import UnknownSymbolError

ARRAYS = ("time", "open", "high", "low", "close", "volume")


@pytest.fixture(scope="module")
def source() -> SyntheticSource:
    return SyntheticSource(seed=SAMPLE_SEED)


@pytest.fixture(scope="module")
def returns(source: SyntheticSource) -> np.ndarray:
    """Daily close-to-close log returns, one row per default symbol."""
    return np.array([np.diff(np.log(source.load(s).close)) for s in DEFAULT_SYMBOLS])


def _same(a: Bars, b: Bars) -> bool:
    return all(np.array_equal(getattr(a, c), getattr(b, c)) for c in ARRAYS)


def _acf(x: np.ndarray, lag: int) -> float:
    return float(np.corrcoef(x[:-lag], x[lag:])[0, 1])


def test_source_protocol_universe_and_key(source: SyntheticSource) -> None:
    assert isinstance(source, Source)
    assert source.symbols() == list(DEFAULT_SYMBOLS)
    assert f"s{SAMPLE_SEED}" in source.key and source.params.fingerprint() in source.key
    other = SyntheticSource(seed=SAMPLE_SEED, params=SyntheticParams(market_vol=0.01))
    assert other.key != source.key


def test_daily_bars_adjusted_and_stamped_at_xnys_close(source: SyntheticSource) -> None:
    bars = source.load("ALPHA")
    days = calendars.sessions("2010-01-04", "2019-12-31")
    assert bars.adjusted and bars.interval == "1d" and len(bars) == len(days)
    assert np.array_equal(bars.time, calendars.session_close_stamps(days))
    early = source.load("ALPHA", start="2019-11-29", end="2019-11-29")  # 13:00 ET close
    assert len(early) == 1 and pd.Timestamp(early.time[0]) == pd.Timestamp("2019-11-29 18:00")


def test_every_daily_bar_is_consistent(source: SyntheticSource) -> None:
    for s in DEFAULT_SYMBOLS:
        b = source.load(s)
        assert np.all(b.low <= np.minimum(b.open, b.close))
        assert np.all(np.maximum(b.open, b.close) <= b.high)
        assert np.all(b.low > 0) and np.all(b.volume > 0)
        assert np.all(b.volume == np.round(b.volume))


def test_fat_tails(returns: np.ndarray) -> None:
    kurt = [pd.Series(r).kurt() for r in returns]
    assert min(kurt) > 1.0 and np.median(kurt) > 3.0


def test_volatility_clusters_while_returns_stay_unpredictable(returns: np.ndarray) -> None:
    for lag in range(1, 6):
        abs_acf = np.mean([_acf(np.abs(r), lag) for r in returns])
        raw_acf = np.mean([_acf(r, lag) for r in returns])
        assert abs_acf > 0.08, f"|r| autocorrelation at lag {lag} is {abs_acf:.3f}"
        assert abs(raw_acf) < 0.08, f"r autocorrelation at lag {lag} is {raw_acf:.3f}"
        assert abs_acf > 2 * abs(raw_acf)


def test_cross_asset_correlation_positive_and_plausible(returns: np.ndarray) -> None:
    corr = np.corrcoef(returns)
    off = corr[~np.eye(len(corr), dtype=bool)]
    assert off.min() > 0.05 and off.max() < 0.9
    assert 0.2 < off.mean() < 0.7
    mkt = list(DEFAULT_SYMBOLS).index("MKT")
    assert np.delete(corr[mkt], mkt).mean() > off.mean()  # the index co-moves most with all


def test_regime_switches_present_and_crisis_is_volatile(source: SyntheticSource,
                                                        returns: np.ndarray) -> None:
    regime = source.regimes().to_numpy()
    assert set(regime) == set(synthetic.REGIMES)
    assert np.count_nonzero(regime[1:] != regime[:-1]) >= 4
    mkt = returns[list(DEFAULT_SYMBOLS).index("MKT")]
    day = regime[1:]
    assert mkt[day == "crisis"].std() > 1.5 * mkt[day == "bull"].std()


def test_same_seed_same_arrays_other_seed_differs(source: SyntheticSource) -> None:
    first = source.load("CHARLIE")
    synthetic._paths.cache_clear()
    synthetic._market.cache_clear()
    again = SyntheticSource(seed=SAMPLE_SEED).load("CHARLIE")
    assert _same(first, again) and first.fingerprint() == again.fingerprint()
    assert not np.array_equal(SyntheticSource(seed=SAMPLE_SEED + 1).load("CHARLIE").close,
                              first.close)


def test_symbol_path_independent_of_universe_and_horizon(source: SyntheticSource) -> None:
    full = source.load("BRAVO")
    small = SyntheticSource(seed=SAMPLE_SEED, symbols=["ZULU", "BRAVO"]).load("BRAVO")
    assert _same(full, small)
    longer = SyntheticSource(seed=SAMPLE_SEED, end="2021-06-30").load("BRAVO")
    assert _same(full, longer.head(len(full)))


@settings(max_examples=25, deadline=None)
@given(a=st.integers(0, 2515), n=st.integers(0, 300))
def test_requested_range_only_slices(source: SyntheticSource, a: int, n: int) -> None:
    full = source.load("DELTA")
    b = min(a + n, len(full) - 1)
    start, end = pd.Timestamp(full.time[a]).date(), pd.Timestamp(full.time[b]).date()
    assert _same(source.load("DELTA", start=start, end=end), full.slice(a, b + 1))


def test_unknown_symbol_names_the_universe(source: SyntheticSource) -> None:
    with pytest.raises(UnknownSymbolError, match="ZULU.*ALPHA"):
        source.load("ZULU")


def test_params_are_validated() -> None:
    with pytest.raises(ValidationError, match="regime_transition"):
        SyntheticParams(regime_transition=((0.5, 0.5, 0.5), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))
    with pytest.raises(ValidationError, match="garch"):
        SyntheticParams(garch_alpha=0.2, garch_beta=0.85)


@pytest.mark.parametrize("interval", ["1m", "5m", "1h"])
def test_intraday_regular_hours_and_aggregates_to_daily(source: SyntheticSource,
                                                        interval: str) -> None:
    start, end = "2019-11-25", "2019-12-03"  # includes the 2019-11-29 early close
    daily = source.load("ECHO", start=start, end=end)
    bars = source.load("ECHO", interval=interval, start=start, end=end)
    assert np.all(calendars.regular_hours_mask(bars.time))
    assert np.all(bars.low <= np.minimum(bars.open, bars.close))
    assert np.all(np.maximum(bars.open, bars.close) <= bars.high)
    assert np.all(np.diff(bars.time) > np.timedelta64(0))
    day = pd.Series(bars.time).dt.date
    agg = bars.frame().reset_index(drop=True).groupby(day.to_numpy()).agg(
        open=("open", "first"), high=("high", "max"), low=("low", "min"), close=("close", "last"),
        volume=("volume", "sum"), last=("close", "size"))
    assert len(agg) == len(daily)
    for c in ("open", "high", "low", "close", "volume"):
        assert np.array_equal(agg[c].to_numpy(), getattr(daily, c)), c
    last = pd.Series(bars.time).groupby(day.to_numpy()).max().to_numpy()
    assert np.array_equal(last, daily.time)  # each session's last bar ends at its close
    if interval == "1m":
        assert sorted(set(agg["last"])) == [210, 390]


def test_intraday_day_independent_of_requested_range(source: SyntheticSource) -> None:
    one = source.load("FOXTROT", interval="1m", start="2016-03-15", end="2016-03-15")
    year = source.load("FOXTROT", interval="1m", start="2016-01-01", end="2016-12-31")
    assert len(one) == 390 and _same(one, year.between("2016-03-15", "2016-03-16"))


def _news_returns(source: SyntheticSource) -> pd.DataFrame:
    """Each tone-bearing item with the return of the session it draws on and of the next one."""
    frame = source.news_frame()
    closes = source.load("ALPHA").time
    info = np.searchsorted(closes, frame["info_time"].dt.tz_localize(None).to_numpy())
    ret = {s: np.r_[np.nan, np.diff(np.log(source.load(s).close))] for s in DEFAULT_SYMBOLS}
    frame["past"] = [ret[s][i] for s, i in zip(frame["symbol"], info)]
    frame["future"] = [ret[s][i + 1] for s, i in zip(frame["symbol"], info)]
    return frame[(frame["tone"] != 0) & frame["past"].notna()]


def test_news_tone_tracks_past_returns_never_future_ones(source: SyntheticSource) -> None:
    items = _news_returns(source)
    assert len(items) > 2000
    past = np.corrcoef(items["tone"], items["past"])[0, 1]
    future = np.corrcoef(items["tone"], items["future"])[0, 1]
    assert past > 0.3, f"tone vs realised return correlation {past:.3f}"
    assert abs(future) < 0.06, f"tone vs next-session return correlation {future:.3f}"


def test_news_timing_is_point_in_time(source: SyntheticSource) -> None:
    frame = source.news_frame()
    pub = frame["published_at"].dt.tz_localize(None).to_numpy()
    avail = frame["available_at"].dt.tz_localize(None).to_numpy()
    assert np.all(frame["info_time"] < frame["published_at"])
    assert np.array_equal(avail, calendars.news_available_at(pub))
    assert np.all(np.diff(avail) >= np.timedelta64(0))
    hours = pd.DatetimeIndex(frame["published_at"]).tz_convert("America/New_York").hour
    assert len(set(hours)) == 24  # random publication times, not one fixed stamp


def test_news_mixes_signal_and_neutral_roundups(source: SyntheticSource) -> None:
    frame = source.news_frame()
    noise = (frame["tone"] == 0).mean()
    assert 0.2 < noise < 0.6
    assert set(frame["symbol"]) == set(DEFAULT_SYMBOLS)
    assert frame["title"].str.contains("surge|soars|rallies").any()
    assert frame["title"].str.contains("plunge|tumbles|sinks").any()
    up = frame[frame["title"].str.contains("surge|soars|rallies")]
    assert (up["tone"] > 0).all()


def test_news_filters_and_container(source: SyntheticSource) -> None:
    news = source.news(symbols=["GOLF"], start="2015-01-01", end="2015-12-31")
    assert len(news) > 50 and set(news.symbol) == {"GOLF"}
    assert news.available_at.min() >= np.datetime64("2015-01-01")
    assert news.available_at.max() < np.datetime64("2016-01-01")


def test_shipped_sample_equals_fresh_regeneration(source: SyntheticSource) -> None:
    folder = sample_dir()
    assert (folder / "manifest.json").is_file(), "the packaged sample should be found"
    assert sum(p.stat().st_size for p in folder.iterdir()) < 3 * 2**20
    sample = load_sample()
    assert sample.symbols == DEFAULT_SYMBOLS
    for s in DEFAULT_SYMBOLS:
        assert _same(sample.full(s), source.load(s)), s
        assert sample.full(s).fingerprint() == source.load(s).fingerprint()
    fresh = source.news()
    for c in NEWS_COLUMNS:
        assert np.array_equal(getattr(sample.news, c), getattr(fresh, c)), c


def test_write_and_load_sample_narrowed(tmp_path) -> None:
    files = write_sample(tmp_path / "sample")
    assert {p.name for p in files} >= {"ALPHA.parquet", "news.parquet", "manifest.json"}
    data = load_sample(symbols=["MKT", "ALPHA"], start="2018-01-01", end="2018-12-31",
                       directory=tmp_path / "sample")
    assert data.symbols == ("MKT", "ALPHA") and len(data.full("MKT")) == 251
    assert set(data.news.symbol) == {"MKT", "ALPHA"}
    with pytest.raises(UnknownSymbolError, match="ZULU"):
        load_sample(symbols=["ZULU"], directory=tmp_path / "sample")


def test_market_data_is_point_in_time(source: SyntheticSource) -> None:
    data = source.market_data(symbols=["ALPHA", "MKT"], start="2012-01-01", end="2012-03-31")
    view = data.as_of("2012-02-15 15:00")
    assert view.bars("ALPHA").time[-1] < np.datetime64("2012-02-15 15:00")
    assert np.all(view.news().available_at <= np.datetime64("2012-02-15 15:00"))
