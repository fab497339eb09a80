"""The report role's Yahoo statements source against a fake Yahoo fundamentals-timeseries API.

A local HTTP server on 127.0.0.1 answers yfinance's real request
(``/ws/fundamentals-timeseries/v1/finance/timeseries/SYM?type=quarterlyTotalRevenue,...``) in
Yahoo's format as yfinance 1.7's parser (``scrapers/fundamentals.py``) reads it:
``{"timeseries": {"result": [{"meta", "timestamp", "<type>": [{"asOfDate", "reportedValue":
{"raw"}}]}]}}``, a type without data as ``meta`` only. The numbers are Apple's 10-Q figures
(USD), written by hand, not a recording; hence ``fake_yahoo`` in the test names. The real path
is kept (yfinance -> curl_cffi -> HTTP); only its query2 host is rewritten and its crumb fixed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pytest

from tradesim.agents.group.reports import ReportSource, report_score, yahoo_statements

M = 1e6
QUARTERS = ["2023-06-30", "2023-09-30", "2023-12-31", "2024-03-31", "2024-06-30"]
SERIES = {  # Yahoo type (without the quarterly prefix) -> values per quarter (None: no value)
    "TotalRevenue": [81_797 * M, 89_498 * M, 119_575 * M, 90_753 * M, 85_777 * M],
    "NetIncome": [19_881 * M, 22_956 * M, 33_916 * M, 23_636 * M, 21_448 * M],
    "DilutedEPS": [1.26, 1.46, 2.18, 1.53, 1.40],
    "BasicEPS": [1.27, 1.47, 2.19, 1.53, 1.40],
    "TotalAssets": [335_038 * M, 352_583 * M, 353_514 * M, 337_411 * M, 331_612 * M],
    "StockholdersEquity": [60_274 * M, 62_146 * M, 74_100 * M, 74_194 * M, 66_708 * M],
    "GrossProfit": [36_413 * M, 40_427 * M, 54_855 * M, 42_271 * M, None],
}
OLD_BALANCE = ("2023-03-31", "TotalAssets", 332_160 * M)  # balance sheet only: Yahoo's 6th column


class _FakeYahoo:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []

    def answer(self, path: str, query: dict[str, str]) -> dict:
        self.requests.append((path, query))
        symbol = path.rstrip("/").split("/")[-1]
        if not path.startswith("/ws/fundamentals-timeseries/v1/finance/timeseries/") \
                or symbol != "AAPL":
            return {"timeseries": {"result": [], "error": None}}
        result = []
        for typ in query["type"].split(","):
            entry: dict = {"meta": {"symbol": [symbol], "type": [typ]}}
            key = typ.removeprefix("quarterly")
            points = [(d, v) for d, v in zip(QUARTERS, SERIES.get(key, [])) if v is not None]
            if typ.startswith("quarterly") and key == OLD_BALANCE[1]:
                points = [OLD_BALANCE[:1] + OLD_BALANCE[2:], *points]
            if typ.startswith("quarterly") and points:
                entry["timestamp"] = [int(pd.Timestamp(d, tz="UTC").timestamp()) for d, _ in points]
                entry[typ] = [{"dataId": 20100, "asOfDate": d, "periodType": "3M",
                               "currencyCode": "USD", "reportedValue": {"raw": v, "fmt": f"{v}"}}
                              for d, v in points]
            result.append(entry)
        return {"timeseries": {"result": result, "error": None}}


class _Handler(BaseHTTPRequestHandler):

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        body = json.dumps(self.server.fake.answer(url.path, query)).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_yahoo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[_FakeYahoo]:
    import yfinance
    import yfinance.data

    yfinance.set_tz_cache_location(str(tmp_path / "yfcache"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.fake = _FakeYahoo()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    real = yfinance.data.YfData._make_request

    def redirected(self: object, url: str, *args: object, **kwargs: object) -> object:
        return real(self, url.replace("https://query2.finance.yahoo.com", base), *args, **kwargs)

    monkeypatch.setattr(yfinance.data.YfData, "_make_request", redirected)
    monkeypatch.setattr(yfinance.data.YfData, "_get_cookie_and_crumb",
                        lambda self, timeout=30: ("fake-crumb", "basic"))
    yfinance.data.YfData.cache_get.cache_clear()
    yield server.fake  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def _t(s: str) -> np.datetime64:
    return np.datetime64(pd.Timestamp(s).value, "ns")


def test_statements_become_report_rows_fake_yahoo(fake_yahoo: _FakeYahoo) -> None:
    rows = yahoo_statements("AAPL")
    assert list(rows.columns[:2]) == ["symbol", "period_end"]
    assert [str(d.date()) for d in rows.period_end] == [OLD_BALANCE[0], *QUARTERS]
    q1 = rows.iloc[4]  # 2024-03-31
    assert (q1.symbol, q1.revenue, q1.eps, q1.net_income) == ("AAPL", 90_753 * M, 1.53, 23_636 * M)
    assert (q1.total_assets, q1.stockholders_equity, q1.gross_profit) == (
        337_411 * M, 74_194 * M, 42_271 * M)
    assert np.isnan(rows.iloc[0].revenue) and rows.iloc[0].total_assets == OLD_BALANCE[2]
    assert np.isnan(rows.iloc[5].gross_profit) and np.isnan(q1.total_debt)  # no value: NaN
    types = {t for _, q in fake_yahoo.requests for t in q["type"].split(",")}
    assert {"quarterlyTotalRevenue", "quarterlyDilutedEPS", "quarterlyTotalAssets"} <= types
    assert yahoo_statements("NOSUCH").empty  # no statements: no rows, no error


def test_no_period_is_visible_before_period_end_plus_lag_fake_yahoo(
        fake_yahoo: _FakeYahoo) -> None:
    source = ReportSource("yfinance", fallback_days=45)
    lag = np.timedelta64(45, "D")
    for q in QUARTERS:
        due = _t(q) + lag
        before = source.visible("AAPL", due - np.timedelta64(1, "ns"), n=10)
        at = source.visible("AAPL", due, n=10)
        assert all(r.period_end + lag < due for r in before)  # the quarter itself not yet
        assert at[-1].period_end == _t(q) and at[-1].visible_at == due
    for t in pd.date_range("2023-01-01", "2024-12-31", freq="3D"):
        for r in source.visible("AAPL", _t(str(t)), n=10):
            assert r.period_end + lag <= r.visible_at <= _t(str(t))
    assert source.visible("AAPL", _t("2023-05-14")) == []  # 2023-03-31 + 45 days is 05-15
    assert source.visible("NOSUCH", _t("2025-01-01")) == []
    longer = ReportSource("yfinance", fallback_days=90)
    assert longer.visible("AAPL", _t("2024-08-20"))[-1].period_end == _t("2024-03-31")

    latest = source.visible("AAPL", _t("2024-08-20"))  # 2024-06-30 is visible from 08-14
    assert [r.metrics["revenue"] for r in latest] == SERIES["TotalRevenue"]
    score, summary = report_score(latest)  # against the quarter a year earlier (2023-06-30)
    assert summary.startswith("period ending 2024-06-30: revenue +4.9%") and score > 0
    calls = len(fake_yahoo.requests)
    source.visible("AAPL", _t("2024-09-01"))
    assert len(fake_yahoo.requests) == calls  # fetched once per symbol, not per decision


def test_team_param_selects_yahoo_statements_fake_yahoo(fake_yahoo: _FakeYahoo) -> None:
    from tradesim.agents.group.agent import TradingGroup

    team = TradingGroup(reports="yfinance", report_fallback_days=60)
    source = team._reports
    assert isinstance(source, ReportSource) and source.path is None
    assert source.visible("AAPL", _t("2024-08-20"))[-1].period_end == _t("2024-03-31")
