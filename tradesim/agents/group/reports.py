"""Fundamentals for the report role, visible only after their publication lag.

A report source is a CSV or Parquet file with one row per (symbol, fiscal period):
``symbol, period_end`` plus numeric metrics (``revenue``, ``eps``, ``net_income`` ... any
numeric column) and optionally ``filed_at`` (when the filing was published). The rule: a row
becomes visible at ``filed_at + lag_days`` when the file has ``filed_at``, else at
``period_end + fallback_days`` (45 days: the SEC 10-Q deadline of 40 days for large
accelerated filers, plus margin; annual 10-K rows would need 60-90, so give ``filed_at`` when
you have it). Nothing is visible before that, whatever the period it covers.

``ReportSource("yfinance")`` reads the same rows from Yahoo Finance instead (yfinance's
quarterly income statement and balance sheet, fetched per symbol on first use; see
:func:`yahoo_statements` and :data:`YAHOO_METRICS`). Yahoo gives no filing date, so every
period is visible at ``period_end + fallback_days``.
"""

from __future__ import annotations

import logging
import math
import time as _time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradesim.errors import ConfigError, DataSourceError

log = logging.getLogger("tradesim.agents.group")

YAHOO = "yfinance"  # the ``reports`` value that selects Yahoo statements instead of a file
# our metric column <- yfinance quarterly statement rows (un-prettified keys), first present wins
YAHOO_METRICS: dict[str, tuple[str, ...]] = {
    "revenue": ("TotalRevenue", "OperatingRevenue"),
    "eps": ("DilutedEPS", "BasicEPS"),
    "net_income": ("NetIncome", "NetIncomeCommonStockholders"),
    "gross_profit": ("GrossProfit",),
    "operating_income": ("OperatingIncome",),
    "total_assets": ("TotalAssets",),
    "total_liabilities": ("TotalLiabilitiesNetMinorityInterest",),
    "stockholders_equity": ("StockholdersEquity",),
    "total_debt": ("TotalDebt",),
    "cash": ("CashAndCashEquivalents",),
}
Statements = Callable[[str], pd.DataFrame]  # symbol -> rows as a report file would hold them


@dataclass(frozen=True, slots=True)
class Report:
    """One visible fiscal period of one symbol."""

    symbol: str
    period_end: np.datetime64
    visible_at: np.datetime64
    metrics: dict[str, float]


class ReportSource:
    """Reports read once from a file, or per symbol from Yahoo (``path="yfinance"``);
    :meth:`visible` answers point-in-time.

    Yahoo mode: ``statements`` (default :func:`yahoo_statements`) is called once per symbol on
    first use and again after ``refresh_s`` wall seconds (a long paper session sees new
    quarters; a failed refresh keeps the rows it had). Its rows carry no ``filed_at``, so the
    ``period_end + fallback_days`` rule applies to all of them.
    """

    def __init__(self, path: str | Path, *, lag_days: int = 1, fallback_days: int = 45,
                 statements: Statements | None = None, refresh_s: float = 6 * 3600) -> None:
        self.lag_days, self.fallback_days, self.refresh_s = lag_days, fallback_days, refresh_s
        self._by_symbol: dict[str, list[Report]] = {}
        self._fetched: dict[str, float] = {}  # Yahoo mode: symbol -> wall time of its fetch
        self._statements: Statements | None = None
        if str(path).strip().lower() == YAHOO:
            self.path: Path | None = None
            self._statements = statements or yahoo_statements
            return
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"report file {self.path} does not exist; pass a CSV or Parquet "
                              "file with symbol, period_end[, filed_at] and numeric columns, "
                              f"\"{YAHOO}\" for Yahoo statements, or leave reports unset")
        frame = (pd.read_parquet(self.path) if self.path.suffix == ".parquet"
                 else pd.read_csv(self.path))
        missing = [c for c in ("symbol", "period_end") if c not in frame.columns]
        if missing:
            raise ConfigError(f"report file {self.path} lacks column(s) {', '.join(missing)}; "
                              "it needs symbol, period_end and optionally filed_at")
        for rep in self._reports(frame):
            self._by_symbol.setdefault(rep.symbol, []).append(rep)
        for reps in self._by_symbol.values():
            reps.sort(key=lambda r: (r.visible_at, r.period_end))

    def _reports(self, frame: pd.DataFrame) -> list[Report]:
        """Rows (symbol, period_end[, filed_at], numeric columns) -> reports with their lag."""
        period = pd.to_datetime(frame["period_end"], utc=True).dt.tz_localize(None)
        if "filed_at" in frame.columns:
            filed = pd.to_datetime(frame["filed_at"], utc=True).dt.tz_localize(None)
            visible = filed + pd.Timedelta(days=self.lag_days)
            visible = visible.fillna(period + pd.Timedelta(days=self.fallback_days))
        else:
            visible = period + pd.Timedelta(days=self.fallback_days)
        numeric = [c for c in frame.columns if c not in ("symbol", "period_end", "filed_at")
                   and pd.api.types.is_numeric_dtype(frame[c])]
        return [Report(str(frame["symbol"].iat[i]).upper(),
                       period.iat[i].to_datetime64().astype("datetime64[ns]"),
                       visible.iat[i].to_datetime64().astype("datetime64[ns]"),
                       {c: float(frame[c].iat[i]) for c in numeric})
                for i in range(len(frame))]

    def _fetch(self, symbol: str) -> None:
        """Yahoo mode: (re)load ``symbol``'s statements when never fetched or stale."""
        assert self._statements is not None
        last = self._fetched.get(symbol)
        if last is not None and _time.time() - last < self.refresh_s:
            return
        try:
            frame = self._statements(symbol)
        except DataSourceError as exc:
            if last is None:
                raise
            log.warning("refreshing statements of %s failed (%s); keeping the earlier ones",
                        symbol, exc)
            self._fetched[symbol] = _time.time()
            return
        reps = self._reports(frame) if len(frame) else []
        self._by_symbol[symbol] = sorted(reps, key=lambda r: (r.visible_at, r.period_end))
        self._fetched[symbol] = _time.time()

    def visible(self, symbol: str, t: np.datetime64, n: int = 5) -> list[Report]:
        """The latest ``n`` reports of ``symbol`` visible at ``t`` (oldest first)."""
        if self._statements is not None:
            self._fetch(symbol)
        reps = [r for r in self._by_symbol.get(symbol, []) if r.visible_at <= t]
        return reps[-n:]


def statement_rows(symbol: str, *statements: pd.DataFrame) -> pd.DataFrame:
    """yfinance statements (rows: un-prettified keys, columns: period ends) -> report rows.

    One row per period end, ``symbol, period_end`` + the :data:`YAHOO_METRICS` columns (NaN
    where Yahoo has no value); periods without any of those values are dropped.
    """
    ends = sorted({pd.Timestamp(c) for st in statements for c in st.columns})
    rows: dict[str, list[float]] = {m: [] for m in YAHOO_METRICS}
    for end in ends:
        for metric, keys in YAHOO_METRICS.items():
            value = math.nan
            for st in statements:
                hit = next((k for k in keys if k in st.index and end in st.columns
                            and pd.notna(st.at[k, end])), None)
                if hit is not None:
                    value = float(st.at[hit, end])
                    break
            rows[metric].append(value)
    frame = pd.DataFrame({"symbol": [symbol.upper()] * len(ends),
                          "period_end": pd.DatetimeIndex(ends), **rows})
    return frame[frame[list(YAHOO_METRICS)].notna().any(axis=1)].reset_index(drop=True)


def yahoo_statements(symbol: str) -> pd.DataFrame:
    """``symbol``'s quarterly income statement and balance sheet from yfinance, as report rows.

    ``Ticker.get_income_stmt(freq="quarterly")`` / ``get_balance_sheet(freq="quarterly")``
    (Yahoo's fundamentals-timeseries API: about the last five quarters, latest restated
    values). A symbol without statements gives no rows; failures raise our source errors.
    """
    import yfinance as yf

    from tradesim.data.yahoo import _classify, _config_lock

    yf.data.YfData.cache_get.cache_clear()  # a refresh must reach Yahoo again
    ticker = yf.Ticker(symbol)
    with _config_lock, warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"yfinance(\.|$)")
        hide = yf.config.debug.hide_exceptions
        yf.config.debug.hide_exceptions = False  # failures reach the caller as our errors
        logger = logging.getLogger("yfinance")
        level = logger.level
        logger.setLevel(logging.CRITICAL)
        try:
            income = ticker.get_income_stmt(freq="quarterly")
            balance = ticker.get_balance_sheet(freq="quarterly")
        except yf.exceptions.YFException as exc:
            if "empty fundamentals-timeseries" in str(exc).lower():
                log.warning("Yahoo Finance has no statements for %s", symbol)
                return statement_rows(symbol)
            verdict = _classify(exc, symbol, "quarterly statements")
            raise (verdict[0] if verdict else DataSourceError(str(exc))) from exc
        except Exception as exc:
            verdict = _classify(exc, symbol, "quarterly statements")
            if verdict is None:
                raise
            raise verdict[0] from exc
        finally:
            yf.config.debug.hide_exceptions = hide
            logger.setLevel(level)
    return statement_rows(symbol, income, balance)


def report_score(reports: list[Report]) -> tuple[float, str]:
    """(score in [-1, 1], one-line summary) from growth of the latest visible period.

    Growth of revenue and EPS (or net income) against the period a year earlier when present
    (4 quarters back), else the previous period; squashed with tanh(growth / 0.2).
    """
    if not reports:
        return 0.0, "no fundamentals visible at decision time"
    last = reports[-1]
    base = reports[-5] if len(reports) >= 5 else reports[-2] if len(reports) >= 2 else None
    parts, scores = [], []
    for key in ("revenue", "eps", "net_income"):
        now = last.metrics.get(key, math.nan)
        then = base.metrics.get(key, math.nan) if base is not None else math.nan
        if math.isfinite(now) and math.isfinite(then) and then != 0:
            g = (now - then) / abs(then)
            scores.append(math.tanh(g / 0.2))
            parts.append(f"{key} {g:+.1%}")
    day = str(last.period_end.astype("datetime64[D]"))
    if not scores:
        return 0.0, f"report for period ending {day}; no comparable earlier period"
    return float(np.mean(scores)), f"period ending {day}: " + ", ".join(parts)


def describe(reports: list[Report]) -> list[dict[str, Any]]:
    """Reports as prompt-ready dicts."""
    return [{"period_end": str(r.period_end.astype("datetime64[D]")),
             **{k: round(v, 4) for k, v in r.metrics.items()}} for r in reports]
