"""Live clock on the exchange calendar; polling feed outages (backoff, degraded) and stale quotes;
the yfinance adapter against recorded Yahoo chart responses served on 127.0.0.1."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_yahoo import _Handler, _point_yfinance_at, _Recorded  # the recorded chart server

from tradesim.data.bars import Bars
from tradesim.data.load import load_market
from tradesim.errors import SourceOfflineError
from tradesim.live.config import PaperConfig
from tradesim.live.daemon import PaperDaemon
from tradesim.live.feeds import PollingFeed, next_bar_closes, yahoo_fetch
from tradesim.live.store import SessionStore


def _t(s: str) -> np.datetime64:
    return np.datetime64(pd.Timestamp(s).tz_convert("UTC").tz_localize(None).value, "ns")


def test_daily_closes_follow_holidays_early_closes_and_dst() -> None:
    got = next_bar_closes(_t("2024-07-02T21:00Z"), exchange="XNYS", interval="1d", count=2)
    assert list(got) == [_t("2024-07-03T17:00Z"), _t("2024-07-05T20:00Z")]  # early close, holiday
    dst = next_bar_closes(_t("2024-03-07T22:00Z"), exchange="XNYS", interval="1d", count=2)
    assert list(dst) == [_t("2024-03-08T21:00Z"), _t("2024-03-11T20:00Z")]  # EST -> EDT
    crypto = next_bar_closes(_t("2024-03-09T12:00Z"), exchange="24/7", interval="1d", count=2)
    assert list(crypto) == [_t("2024-03-10T00:00Z"), _t("2024-03-11T00:00Z")]  # weekends too


def test_intraday_bars_end_each_interval_and_at_the_close() -> None:
    got = next_bar_closes(_t("2024-11-29T14:30Z"), exchange="XNYS", interval="1h", count=6)
    assert list(got) == [_t(f"2024-11-29T{h}Z") for h in
                         ("15:30", "16:30", "17:30", "18:00")] + [
        _t("2024-12-02T15:30Z"), _t("2024-12-02T16:30Z")]  # Black Friday closes at 13:00 ET


class _Clock:
    def __init__(self, now: float) -> None:
        self.now, self.sleeps = now, []

    def time(self) -> float:
        return self.now

    def sleep(self, s: float) -> bool:
        self.sleeps.append(round(s, 3))
        self.now += s
        return False


def _bars(symbol: str, upto: np.datetime64, *, src: Bars) -> Bars:
    k = int(np.searchsorted(src.time, upto, "right"))
    return Bars.from_arrays(symbol=symbol, interval="1d", adjusted=True, source="test",
                            time=src.time[:k], open=src.open[:k], high=src.high[:k],
                            low=src.low[:k], close=src.close[:k], volume=src.volume[:k])


def test_outage_retries_with_backoff_and_shows_degraded() -> None:
    market = load_market(symbols=["ALPHA"], source="sample")
    src = market.full("ALPHA")
    start = src.time[100]
    clock = _Clock(float(src.time[200].astype("int64")) / 1e9)  # long after: no waiting
    calls = {"n": 0}
    seen: list[str] = []

    def fetch(symbol: str, lo: np.datetime64, hi: np.datetime64) -> Bars:
        calls["n"] += 1
        if calls["n"] <= 3:
            raise SourceOfflineError("connection refused (test)")
        return _bars(symbol, hi, src=src)

    feed = PollingFeed(universe=("ALPHA",), interval="1d", exchange="XNYS", fetch=fetch,
                       after=start, now=clock.time, sleep=lambda s: (
                           seen.append(feed.degraded), clock.sleep(s))[1],
                       backoff_s=1.0, backoff_max_s=3.0, max_ticks=2)
    ticks = list(feed)
    assert [t.time for t in ticks] == list(src.time[101:103])
    assert feed.outages == 3 and clock.sleeps[:3] == [1.0, 2.0, 3.0]  # doubling, capped
    assert all(s.startswith("feed outage") for s in seen[:3])
    assert feed.degraded == ""  # recovered
    assert ticks[0].close[0] == src.close[101]


def test_stale_quote_halts_the_symbol_and_it_resumes(tmp_path: Path) -> None:
    market = load_market(symbols=["ALPHA", "BRAVO"], source="sample")
    full = {s: market.full(s) for s in ("ALPHA", "BRAVO")}
    start = full["ALPHA"].time[1000]
    stale = set(full["BRAVO"].time[1004:1007].tolist())  # BRAVO's bars arrive late three times

    def fetch(symbol: str, lo: np.datetime64, hi: np.datetime64) -> Bars:
        upto = hi
        if symbol == "BRAVO" and hi.astype("int64").item() in stale:
            upto = hi - np.timedelta64(1, "ns")  # Yahoo still shows yesterday's bar
        return _bars(symbol, upto, src=full[symbol])

    cfg = PaperConfig.build({"name": "st", "agent": "equal_weight", "symbols": ["ALPHA", "BRAVO"],
                             "feed": {"kind": "yfinance", "max_wait_s": 1, "poll_s": 1}})
    daemon = PaperDaemon(cfg, home=tmp_path, fetch=fetch, handle_signals=False)
    clock = _Clock(float(full["ALPHA"].time[1100].astype("int64")) / 1e9)
    orig_setup = daemon._setup

    def setup(store: SessionStore) -> None:
        orig_setup(store)
        assert isinstance(daemon.feed, PollingFeed)
        daemon.feed.after, daemon.feed.now, daemon.feed._sleep = start, clock.time, clock.sleep
        daemon.feed.max_ticks = 10

    daemon._setup = setup  # type: ignore[method-assign]
    assert daemon.run() == "finished"  # max_ticks ends the feed
    store = SessionStore(tmp_path / "st" / "session.db", readonly=True)
    ticks = pd.DataFrame(store.table("ticks"))
    halted = [json.loads(h) for h in ticks.halted]
    assert halted[3:6] == [["BRAVO"]] * 3 and halted[6] == [] and halted[2] == []
    marks = [json.loads(m) for m in ticks.marks]
    assert marks[3][1] == marks[4][1] == marks[5][1] == marks[2][1]  # the mark stays, no new price
    assert marks[6][1] == full["BRAVO"].close[1007]
    fills = pd.DataFrame(store.table("fills"))
    assert not ((fills.symbol == "BRAVO") & fills.step.isin([3, 4, 5])).any()


# --- the yfinance adapter against a local server replaying recorded Yahoo chart responses ------

@pytest.fixture
def feed_yahoo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[_Recorded]:
    """test_yahoo's recorded chart server, plus LATE: AAPL's chart with the 2024-01-05 bar
    missing (Yahoo never showed it) and a second symbol for the halt."""
    import yfinance

    yfinance.set_tz_cache_location(str(tmp_path / "yfcache"))
    recorded = _Recorded()
    late = copy.deepcopy(recorded.charts[("AAPL", "1d")])
    result = late["chart"]["result"][0]
    result["meta"]["symbol"] = "LATE"
    drop = result["timestamp"].index(int(pd.Timestamp("2024-01-05 14:30Z").timestamp()))
    del result["timestamp"][drop]
    for block in ("quote", "adjclose"):
        for series in result["indicators"][block]:
            for values in series.values():
                del values[drop]
    recorded.charts[("LATE", "1d")] = late
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.recorded = recorded  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    _point_yfinance_at(monkeypatch, f"http://127.0.0.1:{server.server_address[1]}")
    yield recorded
    server.shutdown()
    server.server_close()


def test_yahoo_fetch_delivers_bar_end_stamps_and_halts_the_stale_symbol_local_yahoo_server(
        feed_yahoo: _Recorded) -> None:
    after = _t("2024-01-03T21:00Z")
    clock = _Clock(float(after.astype("int64")) / 1e9)  # live: each tick is waited for
    feed = PollingFeed(universe=("AAPL", "LATE"), interval="1d", exchange="XNYS",
                       fetch=yahoo_fetch(interval="1d"), after=after, now=clock.time,
                       sleep=clock.sleep, delay_s=5, poll_s=30, max_wait_s=120, max_ticks=4)
    ticks = list(feed)
    stamps = ["2024-01-04", "2024-01-05", "2024-01-08", "2024-01-09"]  # a weekend in between
    assert [t.time for t in ticks] == [_t(f"{d}T21:00Z") for d in stamps]  # 16:00 NY closes

    raw = feed_yahoo.charts[("AAPL", "1d")]["chart"]["result"][0]
    quote, adj = raw["indicators"]["quote"][0], raw["indicators"]["adjclose"][0]["adjclose"]
    days = [str(pd.Timestamp(s, unit="s").date()) for s in raw["timestamp"]]
    for tick, day in zip(ticks, stamps):
        k = days.index(day)
        f = adj[k] / quote["close"][k]  # auto_adjust: OHLC scaled by the adjustment factor
        got = [tick.open[0], tick.high[0], tick.low[0], tick.close[0]]
        np.testing.assert_allclose(got, [quote[c][k] * f for c in ("open", "high", "low", "close")])
        assert tick.volume[0] == quote["volume"][k]
        assert tick.view.time == tick.time
    # LATE has no 2024-01-05 bar: re-polled every poll_s until max_wait_s, then NaN (no stale
    # price substituted), and it resumes with the next bar
    assert all(np.isnan(x) for x in (ticks[1].open[1], ticks[1].close[1], ticks[1].volume[1]))
    assert ticks[1].close[0] == pytest.approx(adj[days.index("2024-01-05")])
    assert ticks[2].close[1] == ticks[2].close[0] and ticks[0].close[1] == ticks[0].close[0]
    late_polls = [q for p, q in feed_yahoo.requests if p.endswith("/LATE") and "period2" in q]
    assert len(late_polls) >= 4 + 120 // 30  # one poll per tick + the re-polls of 01-05
    assert feed.outages == 0 and feed.degraded == ""


def test_yahoo_fetch_unknown_symbol_is_halted_not_an_endless_outage_local_yahoo_server(
        feed_yahoo: _Recorded) -> None:
    after = _t("2024-01-03T21:00Z")
    clock = _Clock(float(after.astype("int64")) / 1e9)

    def sleep(s: float) -> bool:  # an outage would retry forever: stop the feed instead
        return feed.outages > 0 or clock.sleep(s)

    feed = PollingFeed(universe=("AAPL", "NOSUCH"), interval="1d", exchange="XNYS",
                       fetch=yahoo_fetch(interval="1d"), after=after, now=clock.time,
                       sleep=sleep, delay_s=5, poll_s=30, max_wait_s=60, max_ticks=2)
    ticks = list(feed)
    assert feed.outages == 0 and [t.time for t in ticks] == [_t("2024-01-04T21:00Z"),
                                                            _t("2024-01-05T21:00Z")]
    assert all(np.isnan(t.close[1]) and np.isfinite(t.close[0]) for t in ticks)
    assert len(ticks[0].view["NOSUCH"]) == 0 and len(ticks[0].view["AAPL"]) > 0
