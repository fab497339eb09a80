"""Data-quality checks on loaded bars, and the raise / warn / repair policy applied on load.

:func:`check_bars` finds what makes a backtest silently wrong (disorder, duplicates, non-finite
values, impossible OHLC, zero volume, unadjusted splits and splices, calendar gaps, extended
hours) and reports one :class:`Finding` per symbol, day and check, each naming its fix.
:func:`enforce` applies a policy: stop (default), warn, or repair and record every repair.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tradesim.data import calendars
from tradesim.data.bars import PRICE_COLUMNS, Bars, interval_nanos
from tradesim.errors import ConfigError, DataQualityError, DataQualityWarning

CHECKS: tuple[str, ...] = (
    "unsorted", "duplicate", "non_finite", "negative_price", "bad_high", "bad_low",
    "high_below_low", "zero_volume", "split_jump", "splice", "missing_session", "non_session",
    "extended_hours", "intraday_gap",
)
POLICIES: tuple[str, ...] = ("raise", "warn", "repair")

# Common split and reverse-split ratios (new price / old price).
_SPLIT_FACTORS = np.array([f for k in (1.5, 2, 3, 4, 5, 7, 8, 10, 15, 20, 25, 30, 50)
                           for f in (k, 1 / k)])
_LOG_FACTORS = np.log(_SPLIT_FACTORS)
_MIN_JUMP = 0.3        # |log return| below this is never split-like (3:2 is 0.405)
_SPLIT_TOL = 0.03      # close-to-close and open gap must both sit this near log(factor)
_MIN_TICKS = 10        # a jump of fewer price increments is rounding of tiny prices
_TICK_WINDOW = 20      # bars either side used to estimate the price increment
_REVERT_BARS = 10      # a jump undone within this many bars is a bad print, not a split
_MAX_PER_CHECK = 20    # findings per check before the rest are summarised in one line

_DAY = np.dtype("datetime64[D]")
_NS = np.dtype("datetime64[ns]")
_FIX = {
    "unsorted": "sort the file by time, or pass --quality repair (sorts it)",
    "duplicate": "remove the repeated rows, or pass --quality repair (keeps the last)",
    "non_finite": "fill or drop those rows, or pass --quality repair (drops them)",
    "negative_price": "correct the prices in the file or pass --allow negative_price",
    "bad_high": "fix the row, or pass --quality repair (widens high to contain open and close)",
    "bad_low": "fix the row, or pass --quality repair (widens low to contain open and close)",
    "high_below_low": "fix the row, or pass --quality repair (widens high and low)",
    "zero_volume": "pass --allow zero_volume or clean the file",
    "split_jump": "load split-adjusted prices, or pass --quality repair (back-adjusts the "
                  "earlier bars by the split factor)",
    "splice": "re-download one consistently adjusted series, or pass --quality repair "
              "(back-adjusts the earlier bars by the factor)",
    "missing_session": "fill the sessions from another source or pass --allow missing_session",
    "non_session": "drop the row or pick the right --exchange, or pass --quality repair (drops it)",
    "extended_hours": "pass --allow extended_hours to keep pre/after-market bars, or filter them",
    "intraday_gap": "pass --allow intraday_gap (minutes without trades) or load a complete file",
}


@dataclass(frozen=True)
class Finding:
    """One problem in one symbol's bars on one day: what, where, and how to fix it."""

    symbol: str
    time: np.datetime64 | None
    check: str
    message: str
    fix: str

    def __str__(self) -> str:
        where = self.symbol if self.time is None else f"{self.symbol} {self.time}"
        return f"{where}: {self.message} ({self.check}). Fix: {self.fix}"


def check_bars(bars: Bars, *, exchange: str | None = "XNYS",
               allow: Collection[str] = ()) -> list[Finding]:
    """Every quality finding in ``bars`` except the checks named in ``allow``.

    ``exchange`` (an exchange_calendars code) enables the calendar checks; ``None`` skips them.
    """
    skip = _validated_allow(allow)
    out = _Collector(bars.symbol, skip)
    if not len(bars):
        return []
    t = bars.time
    days = _bar_days(t, bars.interval, exchange)
    back = np.flatnonzero(t[1:] < t[:-1]) + 1
    out.per_day("unsorted", back, days, "{n} stamp(s) earlier than the bar before")
    order = np.argsort(t, kind="stable")
    ts, ds = t[order], days[order]
    cols = {c: getattr(bars, c)[order] for c in (*PRICE_COLUMNS, "volume")}
    dup = np.flatnonzero(ts[1:] == ts[:-1]) + 1
    out.per_day("duplicate", dup, ds, "{n} repeated stamp(s)")
    _check_values(out, ds, cols)
    keep = _clean_rows(ts, cols)
    cols, kept_days = {c: a[keep] for c, a in cols.items()}, ds[keep]
    kind = "splice" if bars.adjusted else "split_jump"
    for i, factor in _split_events(cols):
        lo, hi = cols["close"][i - 1], cols["close"][i]
        what = ("level shifts as if split-adjusted on one side only" if bars.adjusted
                else "looks like an unadjusted split")
        out.add(kind, kept_days[i], f"close {lo:.6g} -> {hi:.6g} (x{hi / lo:.4f}), {what} "
                             f"(factor {_ratio(factor)}), not reverted")
    if exchange is not None:
        if bars.interval == "1d":
            _check_daily_calendar(out, ds, exchange)
        else:
            _check_intraday_calendar(out, ts, ds, bars.interval, exchange)
    return out.findings()


def enforce(bars: Bars, *, policy: str = "raise", allow: Collection[str] = (),
            exchange: str | None = "XNYS") -> Bars:
    """Apply a quality policy: ``raise`` DataQualityError, ``warn`` and pass, or ``repair``.

    ``repair`` sorts, drops duplicates (keeping the last), non-finite rows and off-calendar
    daily bars, widens high/low to contain open/close and back-adjusts splices and unadjusted
    splits; each repair is listed in ``meta["repairs"]``, zero-volume days in
    ``meta["zero_volume"]``; findings it cannot repair are warned about, never hidden.
    """
    if policy not in POLICIES:
        raise ConfigError(f"quality policy {policy!r} is unknown; use one of {', '.join(POLICIES)}")
    if policy == "repair":
        bars = _repair(bars, exchange=exchange, allow=allow)
    findings = check_bars(bars, exchange=exchange, allow=allow)
    if findings and policy == "raise":
        raise DataQualityError(findings)
    if findings:
        warnings.warn(DataQualityWarning(findings), stacklevel=2)
    return bars


class _Collector:
    """Accumulates findings of one symbol, skipping allowed checks and capping each check."""

    def __init__(self, symbol: str, skip: frozenset[str]) -> None:
        self.symbol, self.skip = symbol, skip
        self._by_check: dict[str, list[Finding]] = {}

    def wants(self, check: str) -> bool:
        return check not in self.skip

    def add(self, check: str, day: np.datetime64 | None, message: str) -> None:
        if self.wants(check):
            self._by_check.setdefault(check, []).append(
                Finding(self.symbol, day, check, message, _FIX[check]))

    def per_day(self, check: str, rows: np.ndarray, days: np.ndarray, message: str) -> None:
        """One finding per day among ``rows`` (indices into ``days``), with the day's count."""
        if not self.wants(check) or not len(rows):
            return
        uniq, counts = np.unique(days[rows], return_counts=True)
        for day, n in zip(uniq, counts):
            self.add(check, day, message.format(n=int(n)))

    def findings(self) -> list[Finding]:
        out: list[Finding] = []
        for check in CHECKS:
            found = self._by_check.get(check, [])
            out.extend(found[:_MAX_PER_CHECK])
            if len(found) > _MAX_PER_CHECK:
                rest = found[_MAX_PER_CHECK:]
                out.append(Finding(self.symbol, rest[0].time, check,
                                   f"... and {len(rest)} more day(s) like this up to "
                                   f"{rest[-1].time}", _FIX[check]))
        return out


def _validated_allow(allow: Collection[str]) -> frozenset[str]:
    if isinstance(allow, str):
        allow = (allow,)
    unknown = sorted(set(allow) - set(CHECKS))
    if unknown:
        raise ConfigError(f"unknown quality check(s) to allow: {', '.join(unknown)}; "
                          f"use any of {', '.join(CHECKS)}")
    return frozenset(allow)


def _bar_days(t: np.ndarray, interval: str, exchange: str | None) -> np.ndarray:
    """The day each bar belongs to: its UTC date for daily bars, exchange-local date intraday."""
    if interval == "1d" or exchange is None:
        return t.astype(_DAY)
    local = pd.DatetimeIndex(t).tz_localize("UTC").tz_convert(calendars.exchange_tz(exchange))
    return local.tz_localize(None).to_numpy(dtype=_NS).astype(_DAY)


def _check_values(out: _Collector, days: np.ndarray, cols: dict[str, np.ndarray]) -> None:
    """Non-finite values, non-positive prices, impossible OHLC and zero volume, per day."""
    o, h, lo, c, v = (cols[k] for k in ("open", "high", "low", "close", "volume"))
    bad = {k: ~np.isfinite(a) for k, a in cols.items()}
    rows = np.flatnonzero(np.logical_or.reduce(list(bad.values())))
    if out.wants("non_finite") and len(rows):
        uniq, first, counts = np.unique(days[rows], return_index=True, return_counts=True)
        for day, start, n in zip(uniq, first, counts):
            sel = rows[start:start + n]
            names = [k for k, m in bad.items() if m[sel].any()]
            out.add("non_finite", day, f"NaN/inf in {', '.join(names)} on {n} bar(s)")
    prices = np.stack([o, h, lo, c])
    out.per_day("negative_price", np.flatnonzero((prices <= 0).any(axis=0)), days,
                "price <= 0 on {n} bar(s)")
    out.per_day("bad_high", np.flatnonzero(h < np.maximum(o, c)), days,
                "high below open or close on {n} bar(s)")
    out.per_day("bad_low", np.flatnonzero(lo > np.minimum(o, c)), days,
                "low above open or close on {n} bar(s)")
    out.per_day("high_below_low", np.flatnonzero(h < lo), days, "high below low on {n} bar(s)")
    zero = np.flatnonzero(v == 0)
    if out.wants("zero_volume") and len(zero):
        uniq, counts = np.unique(days[zero], return_counts=True)
        for day, n in zip(uniq, counts):
            out.add("zero_volume", day, "Volume 0" if n == 1 else f"Volume 0 on {n} bars")


def _clean_rows(t: np.ndarray, cols: dict[str, np.ndarray]) -> np.ndarray:
    """Mask of sorted rows kept for the jump and calendar checks: finite, last of duplicates."""
    keep = np.logical_and.reduce([np.isfinite(a) for a in cols.values()])
    keep[:-1] &= t[1:] != t[:-1]
    return keep


def _split_events(cols: dict[str, np.ndarray]) -> list[tuple[int, float]]:
    """``(index of first bar at the new level, factor)`` of split-like, lasting level shifts.

    Close-to-close and prior-close-to-open both match a common split ratio, the move spans many
    price increments (not rounding of tiny adjusted prices) and it neither is undone soon after
    nor undoes a jump just before.
    """
    c, o = cols["close"], cols["open"]
    if len(c) < 2:
        return []
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.log(c[1:] / c[:-1])
        g = np.log(o[1:] / c[:-1])
    cand = np.flatnonzero(np.isfinite(r) & np.isfinite(g) & (np.abs(r) > _MIN_JUMP))
    if not len(cand):
        return []
    k = np.abs(r[cand, None] - _LOG_FACTORS[None, :]).argmin(axis=1)
    near = ((np.abs(r[cand] - _LOG_FACTORS[k]) < _SPLIT_TOL)
            & (np.abs(g[cand] - _LOG_FACTORS[k]) < _SPLIT_TOL))
    events = []
    for j, fk in zip(cand[near], k[near]):
        i = int(j) + 1
        lo, hi = max(0, i - _TICK_WINDOW), min(len(c), i + _TICK_WINDOW + 1)
        levels = np.unique(np.concatenate([cols[p][lo:hi] for p in PRICE_COLUMNS]))
        steps = np.diff(levels)
        tick = steps[steps > 0].min() if (steps > 0).any() else 0.0
        if abs(c[i] - c[i - 1]) < _MIN_TICKS * tick:
            continue
        later = np.log(c[i + 1:i + 1 + _REVERT_BARS] / c[i - 1])
        earlier = np.log(c[max(0, i - 1 - _REVERT_BARS):i - 1] / c[i])
        if (np.abs(later) < abs(r[j]) / 2).any() or (np.abs(earlier) < abs(r[j]) / 2).any():
            continue  # undone soon after, or itself undoing a jump just before: a bad print
        events.append((i, float(_SPLIT_FACTORS[fk])))
    return events


def _ratio(factor: float) -> str:
    """A price factor as split text: new shares per old share (``1/20`` -> ``20:1``)."""
    shares = 1 / factor
    for m in (1, 2):
        if abs(shares * m - round(shares * m)) < 1e-9:
            return f"{round(shares * m)}:{m}"
        if abs(factor * m - round(factor * m)) < 1e-9:
            return f"{m}:{round(factor * m)}"
    return f"{shares:.4g}:1"


def _runs(idx: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive runs in sorted integer ``idx`` as ``(first, last)`` pairs."""
    if not len(idx):
        return []
    cut = np.flatnonzero(np.diff(idx) != 1) + 1
    starts, ends = np.r_[0, cut], np.r_[cut - 1, len(idx) - 1]
    return [(int(idx[a]), int(idx[b])) for a, b in zip(starts, ends)]


def _check_daily_calendar(out: _Collector, days: np.ndarray, exchange: str) -> None:
    """Daily bars: sessions without a bar (one finding per run) and bars on non-sessions."""
    sess, _, _ = calendars.session_bounds(days[0], days[-1], exchange=exchange)
    out.per_day("non_session", np.flatnonzero(~np.isin(days, sess)), days,
                f"bar on a day that is not a {exchange} session")
    _report_missing(out, sess, np.isin(sess, days), exchange)


def _report_missing(out: _Collector, sess: np.ndarray, present: np.ndarray,
                    exchange: str) -> None:
    """One ``missing_session`` finding per run of consecutive sessions without a bar."""
    for a, b in _runs(np.flatnonzero(~present)):
        span = "" if a == b else f" ({b - a + 1} sessions, to {sess[b]})"
        out.add("missing_session", sess[a], f"no bar for the {exchange} session{span}")


def _check_intraday_calendar(out: _Collector, t: np.ndarray, days: np.ndarray, interval: str,
                             exchange: str) -> None:
    """Intraday bars: off-session days, extended hours, missing sessions and gaps, per day."""
    sess, opens, closes = calendars.session_bounds(days[0], days[-1], exchange=exchange)
    on_session = np.isin(days, sess)
    regular = calendars.regular_hours_mask(t, exchange=exchange) & on_session
    out.per_day("non_session", np.flatnonzero(~on_session), days,
                f"{{n}} bar(s) on a day that is not a {exchange} session")
    out.per_day("extended_hours", np.flatnonzero(on_session & ~regular), days,
                "{n} bar(s) outside regular hours (pre/after-market)")
    _report_missing(out, sess, np.isin(sess, days), exchange)
    if out.wants("intraday_gap"):
        _check_intraday_gaps(out, t, days, sess, opens, closes, interval, exchange)


def _check_intraday_gaps(out: _Collector, t: np.ndarray, days: np.ndarray, sess: np.ndarray,
                         opens: np.ndarray, closes: np.ndarray, interval: str,
                         exchange: str) -> None:
    """Per session with bars: missing bars in regular hours and inside the day's covered span.

    The expected grid of a day runs from its first bar (or the first regular bar end) to its
    last bar (or the close), so holes in pre/after-market data count too; sessions with no bar
    at all are ``missing_session`` instead.
    """
    step = np.timedelta64(interval_nanos(interval), "ns")
    s_idx = np.searchsorted(sess, days)
    has = np.isin(days, sess)
    s_idx, ts = s_idx[has], t[has]
    seen = np.unique(s_idx)
    first = np.full(len(sess), np.iinfo(np.int64).max).astype(_NS)
    last = np.full(len(sess), np.iinfo(np.int64).min + 1).astype(_NS)
    np.minimum.at(first, s_idx, ts)
    np.maximum.at(last, s_idx, ts)
    lo = np.minimum(first[seen], opens[seen] + step)
    hi = np.maximum(last[seen], closes[seen])
    per = ((hi - lo) // step).astype(np.int64) + 1
    owner = np.repeat(np.arange(len(seen)), per)
    offset = np.arange(per.sum()) - np.repeat(np.cumsum(per) - per, per)
    grid = lo[owner] + offset * step
    stamps = np.unique(ts)
    pos = np.searchsorted(stamps, grid).clip(0, len(stamps) - 1)
    miss = stamps[pos] != grid
    o, c = opens[seen][owner], closes[seen][owner]
    in_reg = (grid > o) & (grid <= c)
    n_reg = np.bincount(owner, weights=miss & in_reg, minlength=len(seen)).astype(np.int64)
    n_ext = np.bincount(owner, weights=miss & ~in_reg, minlength=len(seen)).astype(np.int64)
    rows = np.flatnonzero(miss)
    uniq, first_row = np.unique(owner[rows], return_index=True)
    first_gap = dict(zip(uniq.tolist(), grid[rows[first_row]]))
    tz = calendars.exchange_tz(exchange)
    for k in np.flatnonzero((n_reg > 0) | (n_ext > 0)):
        at = pd.Timestamp(first_gap[int(k)]).tz_localize("UTC").tz_convert(tz)
        out.add("intraday_gap", sess[seen[k]],
                f"{n_reg[k]} regular-hours and {n_ext[k]} pre/after-market {interval} bar(s) "
                f"missing (first ending {at:%H:%M} local)")


def _repair(bars: Bars, *, exchange: str | None, allow: Collection[str]) -> Bars:
    """Repaired copy of ``bars`` with ``meta["repairs"]`` listing what was changed and where."""
    _validated_allow(allow)
    repairs: list[dict[str, str]] = []
    t = bars.time
    days = _bar_days(t, bars.interval, exchange)

    def note(check: str, rows: np.ndarray, action: str) -> None:
        uniq, counts = np.unique(days[rows], return_counts=True)
        repairs.extend({"check": check, "time": str(d), "action": action.format(n=int(n))}
                       for d, n in zip(uniq, counts))

    order = np.argsort(t, kind="stable")
    if (order != np.arange(len(t))).any():
        note("unsorted", np.flatnonzero(t[1:] < t[:-1]) + 1, "sorted {n} out-of-order bar(s)")
    t, days = t[order], days[order]
    cols = {c: getattr(bars, c)[order] for c in (*PRICE_COLUMNS, "volume")}
    drops: list[tuple[str, np.ndarray, str]] = []
    drops.append(("duplicate", np.r_[t[1:] == t[:-1], False],
                  "dropped {n} duplicate bar(s), kept the last"))
    drops.append(("non_finite", ~np.logical_and.reduce([np.isfinite(a) for a in cols.values()]),
                  "dropped {n} bar(s) with NaN/inf"))
    if exchange is not None and bars.interval == "1d" and len(t):
        sess, _, _ = calendars.session_bounds(days[0], days[-1], exchange=exchange)
        drops.append(("non_session", ~np.isin(days, sess),
                      f"dropped {{n}} bar(s) on a non-{exchange}-session day"))
    gone = np.zeros(len(t), dtype=bool)
    for check, mask, action in drops:
        mask = mask & ~gone
        if mask.any():
            note(check, np.flatnonzero(mask), action)
        gone |= mask
    t, days = t[~gone], days[~gone]
    cols = {c: a[~gone] for c, a in cols.items()}
    o, c = cols["open"], cols["close"]
    high, low = np.maximum.reduce([cols["high"], o, c]), np.minimum.reduce([cols["low"], o, c])
    for check, old, new in (("bad_high", cols["high"], high), ("bad_low", cols["low"], low)):
        changed = np.flatnonzero(old != new)
        if len(changed):
            note(check, changed, f"widened {check[4:]} to contain open/close on {{n}} bar(s)")
    cols["high"], cols["low"] = high, low
    scale = np.ones(len(t))
    for i, factor in _split_events(cols):
        scale[:i] *= factor
        kind = "splice" if bars.adjusted else "split_jump"
        repairs.append({"check": kind, "time": str(days[i]),
                        "action": f"multiplied prices of the {i} earlier bar(s) by {factor:g} "
                                  f"and divided their volume by it"})
    for p in PRICE_COLUMNS:
        cols[p] = cols[p] * scale
    cols["volume"] = cols["volume"] / scale
    zero_days = sorted({str(d) for d in days[cols["volume"] == 0]})
    meta = {**bars.meta, "repairs": [*bars.meta.get("repairs", []), *repairs]}
    if zero_days:
        meta["zero_volume"] = zero_days
    return Bars.from_arrays(symbol=bars.symbol, interval=bars.interval, adjusted=bars.adjusted,
                            source=bars.source, time=t, meta=meta, **cols)
