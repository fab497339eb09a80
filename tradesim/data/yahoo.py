"""Yahoo Finance bars through yfinance: explicit adjustment, retries, and errors that say why.

yfinance changed its ``auto_adjust`` default in 0.2.51, so it is always passed. Daily rows are
session dates and get the exchange's session close as their (UTC, bar-end) stamp; intraday rows
are bar starts and get start + interval, cut at the session close (Yahoo's last hourly bar of a
day lasts only 30 minutes). Bars that have not ended yet (today's live bar) are never returned.
"""

from __future__ import annotations

import logging
import threading
import time as _time
import warnings

import numpy as np
import pandas as pd

from tradesim.data.bars import Bars, interval_nanos, to_utc_stamp
from tradesim.data.calendars import session_close_stamps
from tradesim.errors import (
    DataSourceError,
    RateLimitedError,
    SourceOfflineError,
    UnknownSymbolError,
)

# Yahoo reports each instrument's exchange time zone; these map onto exchange_calendars codes.
_TZ_CALENDARS: dict[str, str] = {
    "America/New_York": "XNYS", "America/Chicago": "XNYS", "America/Toronto": "XTSE",
    "Europe/London": "XLON", "Europe/Berlin": "XETR", "Europe/Paris": "XPAR",
    "Europe/Amsterdam": "XAMS", "Europe/Zurich": "XSWX", "Asia/Tokyo": "XTKS",
    "Asia/Hong_Kong": "XHKG", "Asia/Shanghai": "XSHG", "Asia/Kolkata": "XBOM",
    "Australia/Sydney": "XASX",
}
_OFFLINE_ERRORS = frozenset({"ConnectionError", "DNSError", "Timeout", "ConnectTimeout",
                             "ReadTimeout", "ProxyError", "SSLError", "gaierror",
                             "ConnectionRefusedError", "TimeoutError"})
_NO_DATA_REASONS = ("no data found", "delisted", "not found")
_config_lock = threading.Lock()  # yfinance's exception switch is process-global


class _Transient(Exception):
    """A failure worth retrying (rate limit, network, server error); wraps the final error."""

    def __init__(self, error: DataSourceError) -> None:
        super().__init__(str(error))
        self.error = error


class YahooSource:
    """Bars from Yahoo Finance via yfinance (network), adjusted or raw as asked."""

    name = "yfinance"

    def __init__(self, *, auto_adjust: bool = True, retries: int = 3, backoff: float = 1.0,
                 timeout: float = 30) -> None:
        if retries < 0 or backoff < 0 or timeout <= 0:
            raise ValueError("retries and backoff must be >= 0 and timeout > 0")
        self.auto_adjust, self.retries, self.backoff, self.timeout = (
            bool(auto_adjust), int(retries), float(backoff), float(timeout))

    @property
    def key(self) -> str:
        """Cache key: the adjustment mode changes every price, so it is part of the key."""
        return f"yfinance-{'adj' if self.auto_adjust else 'raw'}"

    def symbols(self) -> list[str]:
        """Yahoo's universe cannot be listed; any ticker Yahoo knows may be loaded."""
        return []

    def load(self, symbol: str, *, interval: str = "1d", start: object | None = None,
             end: object | None = None) -> Bars:
        """Bars of ``symbol`` whose end lies in ``[start, end]``, retrying transient failures."""
        step = interval_nanos(interval)
        lo = None if start is None else to_utc_stamp(start)
        hi = to_utc_stamp(end) if end is not None else None
        for attempt in range(self.retries + 1):
            try:
                frame, tz = self._download(symbol, interval, lo, hi)
                break
            except _Transient as exc:
                if attempt == self.retries:
                    raise exc.error from exc.__cause__
                _time.sleep(self.backoff * 2 ** attempt)
        ends = self._bar_ends(frame.index, interval, step, tz)
        now = np.datetime64(pd.Timestamp.now("UTC").tz_localize(None).value, "ns")
        keep = ends <= now  # a bar still forming is not data yet
        if lo is not None:
            keep &= ends >= lo
        if hi is not None:
            keep &= ends <= hi
        frame = frame[keep]
        return Bars.from_arrays(
            symbol=symbol, interval=interval, adjusted=self.auto_adjust, source=self.name,
            time=ends[keep], open=frame["Open"], high=frame["High"], low=frame["Low"],
            close=frame["Close"], volume=frame["Volume"],
            meta={"source_key": self.key, "exchange_tz": tz,
                  "calendar": _TZ_CALENDARS.get(tz), "auto_adjust": self.auto_adjust})

    def _download(self, symbol: str, interval: str, lo: np.datetime64 | None,
                  hi: np.datetime64 | None) -> tuple[pd.DataFrame, str]:
        """One yfinance call over a day-padded window; returns the frame and the exchange tz."""
        import yfinance as yf

        kwargs: dict = {"interval": interval, "auto_adjust": self.auto_adjust, "actions": False,
                        "repair": False, "prepost": False, "timeout": self.timeout}
        day = pd.Timedelta(days=1)
        if hi is not None:  # yfinance's end is an exclusive exchange-local date
            kwargs["end"] = (pd.Timestamp(hi).normalize() + 2 * day).date()
        if lo is None:
            kwargs["period"] = "max"
        else:
            kwargs["start"] = (pd.Timestamp(lo).normalize() - day).date()
        # yfinance memoises past-range responses in-process; our store is the cache, and a
        # refresh or a retry must reach Yahoo again
        yf.data.YfData.cache_get.cache_clear()
        ticker = yf.Ticker(symbol)
        with _config_lock, warnings.catch_warnings():
            # yfinance trips pandas deprecation warnings the user can do nothing about
            warnings.filterwarnings("ignore", module=r"yfinance(\.|$)")
            hide = yf.config.debug.hide_exceptions
            yf.config.debug.hide_exceptions = False
            logger = logging.getLogger("yfinance")
            level = logger.level
            logger.setLevel(logging.CRITICAL)  # its failures reach the caller as our errors
            try:
                frame = ticker.history(**kwargs)
            except yf.exceptions.YFPricesMissingError as exc:
                if exc.yahoo_reason is not None:
                    missing = _classify(exc, symbol, interval)
                    assert missing is not None  # a YFPricesMissingError is always classified
                    raise missing[0] from exc
                # the symbol exists (its time zone resolved): the window is just empty
                return _empty_frame(), _exchange_tz(ticker)
            except Exception as exc:
                verdict = _classify(exc, symbol, interval)
                if verdict is None:
                    raise  # not a data-source failure: a bug that should surface as is
                error, transient = verdict
                if transient:
                    raise _Transient(error) from exc
                raise error from exc
            finally:
                yf.config.debug.hide_exceptions = hide
                logger.setLevel(level)
        tz = str(frame.index.tz) if isinstance(frame.index, pd.DatetimeIndex) and \
            frame.index.tz is not None else _exchange_tz(ticker)
        return frame, tz

    def _bar_ends(self, index: pd.Index, interval: str, step: int, tz: str) -> np.ndarray:
        """UTC bar ends: session closes for daily rows, start + interval (cut at close) intraday."""
        if len(index) == 0:
            return np.empty(0, dtype="datetime64[ns]")
        idx = pd.DatetimeIndex(index)
        local = idx if idx.tz is not None else idx.tz_localize(tz)
        calendar = _TZ_CALENDARS.get(tz)
        dates = local.tz_localize(None).normalize()
        if interval == "1d":
            if calendar is not None:
                return session_close_stamps(dates, exchange=calendar)
            # 24h markets (crypto, FX): the day ends at the next local midnight
            return (dates + pd.Timedelta(days=1)).tz_localize(tz).tz_convert("UTC") \
                .tz_localize(None).to_numpy(dtype="datetime64[ns]")
        starts = local.tz_convert("UTC").tz_localize(None).to_numpy(dtype="datetime64[ns]")
        ends = starts + np.timedelta64(step, "ns")
        if calendar is not None:
            closes = session_close_stamps(dates, exchange=calendar)
            ends = np.where((starts < closes) & (ends > closes), closes, ends)
        return ends


def _empty_frame() -> pd.DataFrame:
    """No rows, the columns yfinance returns."""
    return pd.DataFrame({c: pd.Series(dtype=float)
                         for c in ("Open", "High", "Low", "Close", "Volume")},
                        index=pd.DatetimeIndex([], tz="UTC"))


def _exchange_tz(ticker: object) -> str:
    """The exchange time zone yfinance resolved for ``ticker`` (UTC if it never got one)."""
    tz = getattr(ticker, "_tz", None)
    return str(tz) if tz else "UTC"


def _classify(exc: BaseException, symbol: str,
              interval: str) -> tuple[DataSourceError, bool] | None:
    """Map a yfinance/HTTP failure to ``(our error, worth retrying)``; ``None`` if unrelated."""
    from yfinance import exceptions as yfe

    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, yfe.YFRateLimitError) or status == 429:
        return RateLimitedError(f"Yahoo Finance rate-limited the request for {symbol} (HTTP 429); "
                                "wait a few minutes, fetch fewer symbols at once, or raise "
                                "retries/backoff"), True
    if isinstance(exc, yfe.YFTzMissingError) or status == 404:
        return UnknownSymbolError(f"Yahoo Finance does not know symbol {symbol!r} (no data or "
                                  "time zone: misspelt or delisted); check the ticker on "
                                  "finance.yahoo.com (e.g. BRK-B, ^GSPC, EURUSD=X)"), False
    if isinstance(exc, yfe.YFPricesMissingError):
        reason = exc.yahoo_reason or "no price data"
        if any(r in reason.lower() for r in _NO_DATA_REASONS):
            return UnknownSymbolError(f"Yahoo Finance has no data for {symbol!r}: {reason}; check "
                                      "the ticker (delisted or misspelt)"), False
        return DataSourceError(f"Yahoo Finance refused {symbol} {interval}: {reason} (Yahoo keeps "
                               "1m bars ~30 days, other minute bars ~60 days, 1h ~730 days; "
                               "narrow the start or use interval 1d)"), False
    if status is not None and status >= 500:
        return DataSourceError(f"Yahoo Finance failed with HTTP {status} for {symbol}; "
                               "retry later"), True
    if any(cls.__name__ in _OFFLINE_ERRORS for cls in type(exc).__mro__):
        return SourceOfflineError(f"cannot reach Yahoo Finance for {symbol} "
                                  f"({type(exc).__name__}: {exc}); check the network, or work "
                                  "offline with source 'sample' or 'files'"), True
    if isinstance(exc, yfe.YFException):
        return DataSourceError(f"yfinance failed for {symbol}: {exc}"), False
    return None
