"""The Parquet store: read-through, incremental, start-independent, idempotent, atomic."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradesim.data.bars import BAR_COLUMNS, Bars, to_utc_stamp
from tradesim.data.calendars import session_close_stamps, sessions
from tradesim.data.store import Store, end_bound
from tradesim.errors import DataSourceError

_FIRST_SESSION = "2000-01-03"


class LedgerSource:
    """A deterministic in-memory source on XNYS sessions that records every load it serves.

    Each bar's prices depend only on its date (never on the requested window), like a real
    archive; ``scale`` re-bases the whole history as a new dividend adjustment would.
    """

    name = "ledger"

    def __init__(self, *, key: str = "ledger-adj", adjusted: bool = True) -> None:
        self._key, self.adjusted, self.scale = key, adjusted, 1.0
        self.calls: list[tuple[pd.Timestamp | None, pd.Timestamp | None]] = []

    @property
    def key(self) -> str:
        return self._key

    def symbols(self) -> list[str]:
        return ["ACME", "^GSPC"]

    def load(self, symbol: str, *, interval: str = "1d", start: object | None = None,
             end: object | None = None) -> Bars:
        self.calls.append((None if start is None else pd.Timestamp(start),
                           None if end is None else pd.Timestamp(end)))
        days = sessions(_FIRST_SESSION, "2024-12-31")
        t = session_close_stamps(days)
        n = (days.to_numpy().astype("datetime64[D]").astype(np.int64)).astype(float)
        close = self.scale * 100 * np.exp(0.0003 * (n - n[0]) + 0.05 * np.sin(n / 9.0))
        bars = Bars.from_arrays(symbol=symbol, interval=interval, adjusted=self.adjusted,
                                source=self.name, time=t, open=close * 0.995, high=close * 1.01,
                                low=close * 0.99, close=close, volume=1e6 + (n % 97) * 1e4)
        return bars.between(start, end)


def _same_data(a: Bars, b: Bars) -> None:
    np.testing.assert_array_equal(a.time, b.time)
    for c in BAR_COLUMNS:
        np.testing.assert_array_equal(getattr(a, c), getattr(b, c))
    assert a.fingerprint() == b.fingerprint()


def test_get_is_read_through_and_returns_the_requested_window(tmp_path: Path) -> None:
    store, source = Store(tmp_path), LedgerSource()
    bars = store.get(source, "ACME", start="2015-01-01", end="2015-12-31")
    assert len(bars) == 252 and bars.time[-1] == to_utc_stamp("2015-12-31 21:00")
    assert bars.meta["source_key"] == "ledger-adj" and "fetched_at" in bars.meta
    again = store.get(source, "ACME", start="2015-03-01", end="2015-06-30")
    assert len(source.calls) == 1  # the second window lies inside the cached one
    _same_data(again, bars.between("2015-03-01", "2015-06-30 23:59"))


def test_earlier_start_fetches_only_the_missing_range_and_equals_direct(tmp_path: Path) -> None:
    source = LedgerSource()
    late_first = Store(tmp_path / "a")
    late_first.get(source, "ACME", start="2015-01-01", end="2020-12-31")
    late_first.get(source, "ACME", start="2010-01-01", end="2020-12-31")
    left_start, left_end = source.calls[-1]
    assert left_start == pd.Timestamp("2010-01-01", tz="UTC")
    assert left_end == pd.Timestamp("2015-01-02 21:00", tz="UTC")  # overlaps one stored bar
    direct = Store(tmp_path / "b")
    direct.get(LedgerSource(), "ACME", start="2010-01-01", end="2020-12-31")
    _same_data(late_first.read(source_key="ledger-adj", symbol="ACME"),
               direct.read(source_key="ledger-adj", symbol="ACME"))


def test_later_end_fetches_from_the_last_stored_bar(tmp_path: Path) -> None:
    store, source = Store(tmp_path), LedgerSource()
    store.get(source, "ACME", start="2019-01-01", end="2019-06-30")
    bars = store.get(source, "ACME", start="2019-01-01", end="2019-12-31")
    assert source.calls[-1] == (pd.Timestamp("2019-06-28 20:00", tz="UTC"),
                                pd.Timestamp(end_bound("2019-12-31")).tz_localize("UTC"))
    _same_data(bars, LedgerSource().load("ACME", start="2019-01-01", end="2019-12-31 23:00"))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(2001, 2023), st.integers(0, 3)), min_size=1, max_size=4))
def test_any_request_order_stores_what_one_fetch_of_the_hull_stores(
        windows: list[tuple[int, int]]) -> None:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        stepwise = Store(Path(a))
        for year, span in windows:
            stepwise.get(LedgerSource(), "ACME", start=f"{year}-01-01",
                         end=f"{min(year + span, 2024)}-06-30")
        lo = min(y for y, _ in windows)
        hi = max(min(y + s, 2024) for y, s in windows)
        direct = Store(Path(b))
        direct.get(LedgerSource(), "ACME", start=f"{lo}-01-01", end=f"{hi}-06-30")
        _same_data(stepwise.read(source_key="ledger-adj", symbol="ACME"),
                   direct.read(source_key="ledger-adj", symbol="ACME"))


def test_repeated_get_is_idempotent(tmp_path: Path) -> None:
    store, source = Store(tmp_path), LedgerSource()
    first = store.get(source, "ACME", start="2018-01-01", end="2018-12-31")
    path = store.path(source_key=source.key, symbol="ACME", interval="1d")
    before = path.read_bytes()
    second = store.get(source, "ACME", start="2018-01-01", end="2018-12-31")
    _same_data(first, second)
    assert path.read_bytes() == before and len(source.calls) == 1


def test_rebased_history_is_fetched_again_not_spliced(tmp_path: Path) -> None:
    store, source = Store(tmp_path), LedgerSource()
    store.get(source, "ACME", start="2018-01-01", end="2018-12-31")
    source.scale = 0.98  # a new dividend re-based every adjusted price
    bars = store.get(source, "ACME", start="2018-01-01", end="2019-12-31")
    assert source.calls[-1][0] == pd.Timestamp("2018-01-01", tz="UTC")  # whole window again
    _same_data(bars, source.load("ACME", start="2018-01-01", end="2019-12-31 23:00"))
    assert "rebased_at" in bars.meta


def test_refresh_fetches_the_covered_window_again(tmp_path: Path) -> None:
    store, source = Store(tmp_path), LedgerSource()
    store.get(source, "ACME", start="2018-01-01", end="2018-12-31")
    source.scale = 2.0
    bars = store.get(source, "ACME", start="2018-06-01", end="2018-06-30", refresh=True)
    assert source.calls[-1][0] == pd.Timestamp("2018-01-01", tz="UTC")
    stored = store.read(source_key="ledger-adj", symbol="ACME")
    assert len(stored) == 251 and bars.close[0] == stored.between("2018-06-01").close[0]


def test_failed_write_leaves_the_old_file_intact(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    store, source = Store(tmp_path), LedgerSource()
    old = store.get(source, "ACME", start="2018-01-01", end="2018-12-31")
    path = store.path(source_key=source.key, symbol="ACME", interval="1d")
    before = path.read_bytes()
    real_write = pq.write_table

    def crash_halfway(table: object, where: object, **kwargs: object) -> None:
        with tempfile.TemporaryFile() as scratch:  # the real bytes, then die half-way through
            real_write(table, scratch, **kwargs)
            scratch.seek(0)
            data = scratch.read()
        where.write(data[: len(data) // 2])  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", crash_halfway)
    with pytest.raises(OSError, match="No space left"):
        store.get(source, "ACME", start="2010-01-01", end="2018-12-31")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left
    _same_data(store.read(source_key=source.key, symbol="ACME"), old)


def test_entries_list_provenance_from_parquet_metadata(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.get(LedgerSource(), "ACME", start="2018-01-01", end="2018-12-31")
    store.get(LedgerSource(key="ledger-raw", adjusted=False), "^GSPC", start="2018-01-01",
              end="2018-01-31")
    entries = store.entries()
    assert [(e.source, e.symbol, e.interval, e.adjusted, e.rows) for e in entries] == [
        ("ledger-adj", "ACME", "1d", True, 251), ("ledger-raw", "^GSPC", "1d", False, 21)]
    assert entries[1].path.name == "%5EGSPC.parquet"
    assert entries[0].first == pd.Timestamp("2018-01-02 21:00", tz="UTC")
    stored = store.read(source_key="ledger-adj", symbol="ACME")
    assert entries[0].fingerprint == stored.fingerprint()
    meta = pq.read_schema(entries[1].path).metadata[b"tradesim"].decode()
    assert '"adjusted": false' in meta and '"source": "ledger"' in meta and "fetched_at" in meta


def test_adjustment_mode_is_part_of_the_key(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.get(LedgerSource(), "ACME", start="2018-01-01", end="2018-01-31")
    with pytest.raises(DataSourceError, match="adjustment mode"):
        store.get(LedgerSource(adjusted=False), "ACME", start="2018-01-01", end="2018-03-31")


def test_verify_is_clean_then_reports_damage_and_tampering(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.get(LedgerSource(), "ACME", start="2018-01-01", end="2018-12-31")
    store.get(LedgerSource(), "^GSPC", start="2018-01-01", end="2018-12-31")
    assert store.verify() == []
    acme = store.path(source_key="ledger-adj", symbol="ACME", interval="1d")
    table = pq.read_table(acme)
    pq.write_table(table.set_column(4, "close", table.column("high")), acme)  # keeps metadata
    gspc = store.path(source_key="ledger-adj", symbol="^GSPC", interval="1d")
    gspc.write_bytes(b"PAR1 not really parquet")
    checks = {(f.symbol, f.check) for f in store.verify()}
    assert ("ACME", "fingerprint") in checks and ("^GSPC", "unreadable") in checks


def test_end_bound_makes_a_bare_date_inclusive() -> None:
    assert end_bound("2020-12-31") == to_utc_stamp("2020-12-31 23:59:59.999999999")
    assert end_bound("2020-12-31 16:00") == to_utc_stamp("2020-12-31 16:00")
    assert end_bound(None) is None


def test_default_root_follows_tradesim_cache(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADESIM_CACHE", str(tmp_path / "cache"))
    assert Store().root == tmp_path / "cache"


def test_load_market_sample_window_includes_the_end_day_and_its_news() -> None:
    from tradesim.data.load import load_market

    market = load_market(symbols=["ALPHA", "MKT"], source="sample", start="2015-01-01",
                         end="2015-12-31")
    assert market.symbols == ("ALPHA", "MKT")
    assert market.full("ALPHA").time[-1] == to_utc_stamp("2015-12-31 21:00")
    news = market.news
    assert len(news) and set(news.symbol) <= {"ALPHA", "MKT"}
    assert news.available_at.max() <= end_bound("2015-12-31")


def test_load_market_reads_local_sources_through_a_given_store(tmp_path: Path) -> None:
    from tradesim.data.load import load_market

    store = Store(tmp_path)
    market = load_market(symbols=["ALPHA"], source="synthetic", start="2012-01-01",
                         end="2012-03-31", news=False, store=store)
    assert len(market.news) == 0
    entry, = store.entries()
    assert entry.symbol == "ALPHA" and entry.fingerprint == market.full("ALPHA").fingerprint()


def test_load_market_files_applies_the_quality_policy(tmp_path: Path) -> None:
    from tradesim.data.load import load_market
    from tradesim.errors import DataQualityError, DataQualityWarning

    (tmp_path / "acme.us.txt").write_text(
        "Date,Open,High,Low,Close,Volume,OpenInt\n2010-04-23,10.5,11,10,10.8,1200,0\n"
        "2010-04-26,10.8,11.2,10.6,11,0,0\n2010-04-27,11,11.5,10.9,11.2,900,0\n")
    options = {"root": tmp_path}
    with pytest.raises(DataQualityError, match="2010-04-26"):
        load_market(symbols=["ACME"], source="files", source_options=options, news=False)
    with pytest.warns(DataQualityWarning):
        market = load_market(symbols=["ACME"], source="files", source_options=options,
                             quality="warn", news=False)
    assert len(market.full("ACME")) == 3


def test_open_source_names_and_specs() -> None:
    from tradesim.data.load import open_source
    from tradesim.errors import ConfigError

    assert open_source("yfinance", auto_adjust=False).key == "yfinance-raw"
    spec = open_source("tradesim.data.synthetic:SyntheticSource", seed=3)
    assert spec.name == "synthetic" and open_source("sample").symbols()
    with pytest.raises(ConfigError, match="unknown data source 'nope'"):
        open_source("nope")
    with pytest.raises(ConfigError, match="bad options"):
        open_source("yfinance", colour="red")


def test_start_after_end_is_a_config_error(tmp_path: Path) -> None:
    from tradesim.errors import ConfigError

    with pytest.raises(ConfigError, match="swap them"):
        Store(tmp_path).get(LedgerSource(), "ACME", start="2019-01-01", end="2018-01-01")
