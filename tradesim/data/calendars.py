"""Trading calendars (exchange_calendars): session closes for daily bars, opens for news timing.

Calendars are built once per exchange, from 1950 (exchange_calendars defaults to 20 years back,
too short for 1960s daily data) to a year ahead, and every lookup is a vectorised
``searchsorted`` over their NumPy open/close arrays.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tradesim.data.bars import to_utc_ns
from tradesim.errors import ConfigError

if TYPE_CHECKING:
    import exchange_calendars as xcals

CALENDAR_START = "1950-01-01"
_NS = np.dtype("datetime64[ns]")
_DAY = np.dtype("datetime64[D]")
_FALLBACK_CLOSE_HOUR = 16  # local close used for a date that is not a session
ROUND_THE_CLOCK: tuple[str, ...] = ("24/7", "ALWAYS")  # names of the every-day calendar
_ROUND_THE_CLOCK_ALIASES = frozenset({"24/7", "ALWAYS", "24X7", "24/7/365", "CRYPTO"})


@dataclass(frozen=True, slots=True)
class _Schedule:
    """One exchange's sessions as NumPy arrays (naive session dates, UTC ns opens and closes)."""

    name: str
    tz: str
    days: np.ndarray
    opens: np.ndarray
    closes: np.ndarray


@lru_cache(maxsize=16)
def _schedule(exchange: str) -> _Schedule:
    """Build (once) the schedule of ``exchange`` from :data:`CALENDAR_START` to a year ahead."""
    if is_round_the_clock(exchange):
        return _round_the_clock()
    import exchange_calendars as xcals  # 50 ms of import: paid by runs that use a calendar

    try:
        name = xcals.resolve_alias(exchange)
        with warnings.catch_warnings():  # exchange_calendars uses an API pandas 3.1 deprecates
            warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
            cal = xcals.get_calendar(name, start=CALENDAR_START)
    except (xcals.errors.InvalidCalendarName, KeyError):
        raise ConfigError(f"unknown exchange calendar {exchange!r}; use an exchange_calendars "
                          "code such as XNYS, XNAS, XLON, XTKS (exchange_calendars."
                          "get_calendar_names() lists them), or 24/7 for markets that never "
                          "close (the exchange setting: --exchange NAME, exchange=)") from None
    sched = _drop_listed_holidays(cal)
    days = sched.index.to_numpy(dtype=_NS).astype(_DAY)
    opens = sched["open"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype=_NS)
    closes = sched["close"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype=_NS)
    for arr in (days, opens, closes):
        arr.flags.writeable = False
    return _Schedule(name=name, tz=str(cal.tz), days=days, opens=opens, closes=closes)


def is_round_the_clock(exchange: str | None) -> bool:
    """Whether ``exchange`` names the 24/7 calendar (crypto, FX-like feeds): every day a session."""
    return exchange is not None and str(exchange).strip().upper() in _ROUND_THE_CLOCK_ALIASES


def _round_the_clock() -> _Schedule:
    """Every UTC day from :data:`CALENDAR_START` to a year ahead, open 00:00, closing 24:00 UTC.

    A daily bar of date D thus ends at D+1 00:00 UTC; no day is a non-session, nothing is
    extended hours.
    """
    last = (pd.Timestamp.now(tz="UTC").tz_localize(None) + pd.DateOffset(years=1)).normalize()
    days = np.arange(np.datetime64(CALENDAR_START, "D"), last.to_numpy().astype(_DAY) + 1)
    opens = days.astype(_NS)
    closes = (days + 1).astype(_NS)
    for arr in (days, opens, closes):
        arr.flags.writeable = False
    return _Schedule(name="24/7", tz="UTC", days=days, opens=opens, closes=closes)


def bar_days(bar_end: np.ndarray, *, exchange: str | None) -> np.ndarray:
    """The session day each daily bar (by UTC end stamp) belongs to.

    On exchange calendars that is the UTC date of the close; on 24/7 a bar ends at the next
    midnight, so it belongs to the day before its stamp.
    """
    t = bar_end.astype(_NS)
    if is_round_the_clock(exchange):
        t = t - np.timedelta64(1, "ns")
    return t.astype(_DAY)


def _drop_listed_holidays(cal: xcals.ExchangeCalendar) -> pd.DataFrame:
    """The calendar's schedule without the days its own holiday lists name.

    exchange_calendars 4.13 under pandas 3 keeps some listed holidays (e.g. 1962-12-25) as
    sessions; the holiday lists themselves are right, so they win.
    """
    sched = cal.schedule
    first, last = sched.index[0], sched.index[-1]
    listed = cal.regular_holidays.holidays(first, last) if cal.regular_holidays is not None else []
    listed = pd.DatetimeIndex(listed).append(pd.DatetimeIndex(cal.adhoc_holidays))
    listed = listed.tz_localize(None) if listed.tz is not None else listed
    keep = ~sched.index.tz_localize(None).normalize().isin(listed.normalize()) \
        if sched.index.tz is not None else ~sched.index.normalize().isin(listed.normalize())
    return sched[keep]


def exchange_tz(exchange: str = "XNYS") -> str:
    """The IANA time zone of ``exchange`` (e.g. ``America/New_York`` for XNYS)."""
    return _schedule(exchange).tz


def _as_days(dates: object) -> np.ndarray:
    """Calendar dates (str, datetime-like, tz-aware or not) as ``datetime64[D]`` wall dates."""
    if isinstance(dates, np.ndarray) and dates.dtype.kind == "M":
        return dates.astype(_DAY)
    idx = pd.DatetimeIndex(pd.to_datetime(dates))
    if idx.tz is not None:
        idx = idx.tz_localize(None)
    return idx.to_numpy(dtype=_NS).astype(_DAY)


def session_close_stamps(dates: object, *, exchange: str = "XNYS") -> np.ndarray:
    """UTC close stamps (``datetime64[ns]``) of the sessions on ``dates``; early closes honoured.

    A date that is not a session of ``exchange`` gets 16:00 exchange-local time that day, so a
    stray row still has a sensible bar end; the quality checks report it as off-calendar.
    """
    days = _as_days(dates)
    s = _schedule(exchange)
    pos = np.searchsorted(s.days, days).clip(0, max(len(s.days) - 1, 0))
    hit = s.days[pos] == days
    out = np.empty(days.shape, dtype=_NS)
    out[hit] = s.closes[pos[hit]]
    if not hit.all():
        local = pd.DatetimeIndex(days[~hit].astype(_NS)) + pd.Timedelta(hours=_FALLBACK_CLOSE_HOUR)
        out[~hit] = (local.tz_localize(s.tz, nonexistent="shift_forward", ambiguous=False)
                     .tz_convert("UTC").tz_localize(None).to_numpy(dtype=_NS))
    return out


def is_session(dates: object, *, exchange: str = "XNYS") -> np.ndarray:
    """Boolean mask: which of ``dates`` (wall dates) are sessions of ``exchange``."""
    days = _as_days(dates)
    s = _schedule(exchange)
    pos = np.searchsorted(s.days, days).clip(0, max(len(s.days) - 1, 0))
    return s.days[pos] == days


def sessions(start: object, end: object, *, exchange: str = "XNYS") -> pd.DatetimeIndex:
    """Session dates in ``[start, end]`` as naive midnight stamps."""
    s = _schedule(exchange)
    lo, hi = _as_days([start, end])
    days = s.days[np.searchsorted(s.days, lo, "left"):np.searchsorted(s.days, hi, "right")]
    return pd.DatetimeIndex(days.astype(_NS), name="session")


def session_bounds(start: object, end: object, *,
                   exchange: str = "XNYS") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(session dates, UTC opens, UTC closes)`` of the sessions in ``[start, end]``.

    Dates are ``datetime64[D]``; opens and closes ``datetime64[ns]`` UTC (regular hours only).
    """
    s = _schedule(exchange)
    lo, hi = _as_days([start, end])
    i, j = np.searchsorted(s.days, lo, "left"), np.searchsorted(s.days, hi, "right")
    return s.days[i:j], s.opens[i:j], s.closes[i:j]


def regular_hours_mask(bar_end: object, *, exchange: str = "XNYS") -> np.ndarray:
    """Which intraday bars (by UTC end stamp) lie in regular hours: ``open < end <= close``.

    The rest are pre-market, after-hours or off-session bars.
    """
    t = _stamps(bar_end)
    s = _schedule(exchange)
    i = np.searchsorted(s.closes, t, "left").clip(0, max(len(s.closes) - 1, 0))
    return (s.opens[i] < t) & (t <= s.closes[i])


def news_available_at(published: object, *, exchange: str = "XNYS") -> np.ndarray:
    """When a headline stamped ``published`` may first be traded on (UTC ``datetime64[ns]``).

    Published in regular hours (``open <= t < close``): at once. Before the open, at or after the
    close, or on a day without a session: at the next session's open.
    """
    t = _stamps(published)
    s = _schedule(exchange)
    i = np.searchsorted(s.closes, t, "right")  # first session closing after t
    if len(t) and i.max() >= len(s.closes):
        late = pd.Timestamp(t[int(np.argmax(i >= len(s.closes)))])
        raise ConfigError(f"news stamp {late} UTC lies after the last {s.name} session known "
                          f"to exchange_calendars ({pd.Timestamp(s.days[-1])}); upgrade it or "
                          "drop the item")
    if len(t) and t.min() < s.opens[0]:
        early = pd.Timestamp(t.min())
        raise ConfigError(f"news stamp {early} UTC lies before the {s.name} calendar starts "
                          f"({CALENDAR_START}); drop the item or correct its date")
    opens = s.opens[i]
    return np.where(t >= opens, t, opens)


def _stamps(values: object) -> np.ndarray:
    """UTC ns stamps from an ndarray (taken as UTC) or anything :func:`to_utc_ns` accepts."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "M":
        return values.astype(_NS)
    return to_utc_ns(values)
