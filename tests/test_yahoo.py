"""YahooSource against recorded Yahoo chart-API responses served over real HTTP on 127.0.0.1.

The real call path is kept (YahooSource -> yfinance -> curl_cffi -> HTTP); only two things are
redirected for the test: yfinance's base-URL constants point at the local server, and its
cookie/crumb handshake (which talks to fc.yahoo.com / guce.yahoo.com over TLS, unreachable
here) returns a fixed crumb. Hence the ``recorded_http`` in the test names.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pytest

from tradesim.data.yahoo import YahooSource
from tradesim.errors import RateLimitedError, SourceOfflineError, UnknownSymbolError

FIXTURES = Path(__file__).parent / "fixtures" / "yahoo"


class _Recorded:
    """What the fake Yahoo serves: recorded charts per (symbol, interval), plus failure modes."""

    def __init__(self) -> None:
        self.charts = {("AAPL", "1d"): json.loads((FIXTURES / "chart_AAPL_1d.json").read_text()),
                       ("AAPL", "1h"): json.loads((FIXTURES / "chart_AAPL_1h.json").read_text())}
        self.not_found = (FIXTURES / "chart_not_found.json").read_bytes()
        self.throttle: dict[str, int] = {}  # symbol -> how many more requests answer 429
        self.requests: list[tuple[str, dict[str, str]]] = []

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, str, bytes]:
        self.requests.append((path, query))
        parts = path.strip("/").split("/")
        symbol = parts[-1]
        if self.throttle.get(symbol, 0) > 0:
            self.throttle[symbol] -= 1
            return 429, "text/plain", b"Too Many Requests\r\n"
        chart = self.charts.get((symbol, query.get("interval", "")))
        if parts[:3] != ["v8", "finance", "chart"] or chart is None:
            return 404, "application/json", self.not_found
        return 200, "application/json", json.dumps(_window(chart, query)).encode()


def _window(chart: dict, query: dict[str, str]) -> dict:
    """Slice a recorded chart as Yahoo does: period1 <= t < period2, or the last bar (range=1d)."""
    result = json.loads(json.dumps(chart["chart"]["result"][0]))
    stamps = np.array(result["timestamp"])
    if "range" in query:
        keep = np.arange(len(stamps)) == len(stamps) - 1
    else:
        keep = (stamps >= int(query["period1"])) & (stamps < int(query["period2"]))
    result["timestamp"] = stamps[keep].tolist()
    for block in ("quote", "adjclose"):
        for series in result["indicators"].get(block, []):
            for name, values in series.items():
                series[name] = np.array(values, dtype=object)[keep].tolist()
    if not keep.any():
        result.pop("timestamp")
        result["indicators"] = {"quote": [{}]}
    return {"chart": {"result": [result], "error": None}}


class _Handler(BaseHTTPRequestHandler):

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        recorded: _Recorded = self.server.recorded  # type: ignore[attr-defined]
        status, ctype, body = recorded.answer(url.path, query)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _point_yfinance_at(monkeypatch: pytest.MonkeyPatch, base: str) -> None:
    """Redirect yfinance's Yahoo base URLs to ``base`` and fix its crumb (test only)."""
    import yfinance.base
    import yfinance.data
    import yfinance.scrapers.history
    import yfinance.scrapers.quote

    for module in (yfinance.base, yfinance.scrapers.history, yfinance.scrapers.quote):
        monkeypatch.setattr(module, "_BASE_URL_", base)
    monkeypatch.setattr(yfinance.base, "_QUERY1_URL_", base)
    monkeypatch.setattr(yfinance.scrapers.quote, "_QUERY1_URL_", base)
    monkeypatch.setattr(yfinance.scrapers.quote, "_QUOTE_SUMMARY_URL_",
                        f"{base}/v10/finance/quoteSummary")
    monkeypatch.setattr(yfinance.data.YfData, "_get_cookie_and_crumb",
                        lambda self, timeout=30: ("recorded-crumb", "basic"))
    yfinance.data.YfData.cache_get.cache_clear()


@pytest.fixture(scope="session")
def _yf_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep yfinance's time-zone/cookie caches out of the user's home during tests."""
    import yfinance

    yfinance.set_tz_cache_location(str(tmp_path_factory.mktemp("yfcache")))


@pytest.fixture
def recorded_yahoo(monkeypatch: pytest.MonkeyPatch, _yf_cache: None) -> Iterator[_Recorded]:
    """A local HTTP server replaying recorded Yahoo chart responses; yfinance pointed at it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.recorded = _Recorded()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    _point_yfinance_at(monkeypatch, f"http://127.0.0.1:{server.server_address[1]}")
    yield server.recorded  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def _utc(s: str) -> np.datetime64:
    return np.datetime64(pd.Timestamp(s).value, "ns")


def test_daily_adjusted_bars_from_recorded_http_chart_api(recorded_yahoo: _Recorded) -> None:
    bars = YahooSource(auto_adjust=True, backoff=0).load("AAPL", start="2024-01-02",
                                                         end="2024-02-15")
    assert (bars.symbol, bars.interval, bars.adjusted, bars.source) == ("AAPL", "1d", True,
                                                                         "yfinance")
    assert len(bars) == 31
    assert bars.time[0] == _utc("2024-01-02 21:00")  # 16:00 New York (EST) session close
    assert _utc("2024-01-15 21:00") not in bars.time  # Martin Luther King day: no session
    raw = recorded_yahoo.charts[("AAPL", "1d")]["chart"]["result"][0]["indicators"]
    np.testing.assert_allclose(bars.close, raw["adjclose"][0]["adjclose"])
    factor = bars.close[0] / raw["quote"][0]["close"][0]
    assert factor == pytest.approx(1 - 0.24 / 188.32)  # the 2024-02-09 dividend, back-adjusted
    np.testing.assert_allclose(bars.open[0], 187.15 * factor)
    chart_calls = [q for p, q in recorded_yahoo.requests if "range" not in q]
    assert chart_calls and all(q["interval"] == "1d" for q in chart_calls)


def test_raw_mode_keeps_recorded_prices_and_cache_key_recorded_http(
        recorded_yahoo: _Recorded) -> None:
    source = YahooSource(auto_adjust=False, backoff=0)
    bars = source.load("AAPL", start="2024-01-10", end="2024-01-12 23:00")
    assert source.key == "yfinance-raw" and YahooSource().key == "yfinance-adj"
    assert not bars.adjusted
    np.testing.assert_array_equal(bars.close, [186.19, 185.59, 185.92])
    assert bars.time[-1] == _utc("2024-01-12 21:00")


def test_window_bounds_are_bar_end_stamps_recorded_http(recorded_yahoo: _Recorded) -> None:
    source = YahooSource(backoff=0)
    assert len(source.load("AAPL", start="2024-01-02 21:00", end="2024-01-03 21:00")) == 2
    assert len(source.load("AAPL", start="2024-01-02 21:00:01", end="2024-01-03 20:59")) == 0
    history = source.load("AAPL", end="2024-01-31 23:00")  # no start: everything up to end
    assert len(history) == 21 and history.time[0] == _utc("2024-01-02 21:00")


def test_hourly_bars_are_stamped_at_their_end_recorded_http(recorded_yahoo: _Recorded) -> None:
    bars = YahooSource(backoff=0).load("AAPL", interval="1h", start="2024-01-02",
                                       end="2024-01-04")
    assert len(bars) == 14
    assert bars.time[0] == _utc("2024-01-02 15:30")  # the 09:30-10:30 New York bar ends 10:30
    assert bars.time[6] == _utc("2024-01-02 21:00")  # the 15:30 bar ends at the 16:00 close
    assert bars.open[0] == 187.15


def test_unknown_symbol_404_raises_unknown_symbol_recorded_http(recorded_yahoo: _Recorded) -> None:
    with pytest.raises(UnknownSymbolError, match="NOSUCH"):
        YahooSource(backoff=0).load("NOSUCH", start="2024-01-02", end="2024-01-31")


def test_rate_limit_429_retries_then_raises_recorded_http(recorded_yahoo: _Recorded) -> None:
    recorded_yahoo.throttle["AAPL"] = 10_000
    with pytest.raises(RateLimitedError, match="AAPL"):
        YahooSource(retries=2, backoff=0).load("AAPL", start="2024-01-02", end="2024-01-31")
    chart_calls = [p for p, _ in recorded_yahoo.requests if p.endswith("/AAPL")]
    assert len(chart_calls) >= 3  # one try and two retries (yfinance itself re-asks once on 4xx)


def test_transient_429_is_retried_to_success_recorded_http(recorded_yahoo: _Recorded) -> None:
    recorded_yahoo.throttle["AAPL"] = 2
    bars = YahooSource(retries=3, backoff=0).load("AAPL", start="2024-01-02", end="2024-02-01")
    assert len(bars) == 21


def test_connection_refused_raises_source_offline(monkeypatch: pytest.MonkeyPatch,
                                                  _yf_cache: None) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _point_yfinance_at(monkeypatch, f"http://127.0.0.1:{port}")
    with pytest.raises(SourceOfflineError, match="cannot reach Yahoo"):
        YahooSource(retries=1, backoff=0).load("MSFT", start="2024-01-02", end="2024-01-31")


def test_store_fetches_only_the_missing_days_from_yahoo_recorded_http(
        recorded_yahoo: _Recorded, tmp_path: Path) -> None:
    from tradesim.data.load import load_market
    from tradesim.data.store import Store

    store = Store(tmp_path)
    first = load_market(symbols=["AAPL"], source=YahooSource(backoff=0), start="2024-01-02",
                        end="2024-01-31", store=store, news=False)
    assert len(first.full("AAPL")) == 21
    seen = len(recorded_yahoo.requests)
    grown = store.get(YahooSource(backoff=0), "AAPL", start="2024-01-02", end="2024-02-14")
    assert len(grown) == 31
    extension = [q for _, q in recorded_yahoo.requests[seen:] if "period1" in q]
    assert extension and all(int(q["period1"]) >= pd.Timestamp("2024-01-29").timestamp()
                             for q in extension)  # from the last stored bar on, not January
    entry, = store.entries()
    assert (entry.source, entry.adjusted, entry.rows) == ("yfinance-adj", True, 31)
