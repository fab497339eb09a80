"""Data-quality checks on loaded bars, and the raise / warn / repair policy applied on load.

:func:`check_bars` finds what makes a backtest silently wrong (disorder, duplicates, non-finite
values, impossible OHLC, zero volume, unadjusted splits and splices, adjustment-factor steps no
dividend or split explains, one-bar spikes and jumps far outside the series' own volatility,
calendar gaps, extended hours) and reports one :class:`Finding` per symbol, day and check, each
naming its fix. :func:`enforce` applies a policy: stop (default), warn, or repair; every repair
is recorded as a row (symbol, time, check, before, after) in ``bars.meta["repairs"]``, which
``MarketData.repairs`` gathers and :func:`render_repairs` prints. A repair that would have to
invent an absurd bar is refused (:class:`RepairRefusedError`) instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tradesim.data import calendars
from tradesim.data.bars import PRICE_COLUMNS, Bars, interval_nanos
from tradesim.errors import ConfigError, DataQualityError, DataQualityWarning

CHECKS: tuple[str, ...] = (
    "unsorted", "duplicate", "non_finite", "negative_price", "bad_high", "bad_low",
    "high_below_low", "zero_volume", "split_jump", "splice", "adjustment_step", "spike", "jump",
    "missing_session", "non_session", "extended_hours", "intraday_gap",
)
POLICIES: tuple[str, ...] = ("raise", "warn", "repair")
REPAIR_COLUMNS: tuple[str, ...] = ("symbol", "time", "check", "before", "after")

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
# Adjustment factor (Adj Close / Close) steps. Real Yahoo files step only up, at dividends: AAPL's
# largest is +0.7%, AA's +2.9% (1990); a spliced second download steps 5-14%, up or down.
_ADJ_TOL = 0.005       # |log step| below this is rounding of the adjusted close
_SMALL_DIVIDEND = 0.03  # upward steps up to this are ordinary dividends
_MAX_DIVIDEND = 0.3    # a larger upward step is a special dividend only if Close fell by half of it
_SPLIT_MATCH = 0.01    # a factor step this near a split ratio is that split (Close unadjusted)
# Robust volatility: MAD of log close returns in a centred window. In the 28 real daily files the
# largest genuine moves score 18 (one leg, GOOGL 2013-10-18) and 7 (both legs of a reversal).
_VOL_WINDOW = 63
_VOL_MIN_BARS = 20
_MAD_SIGMA = 1.4826    # MAD -> standard deviation for normal returns
_SPIKE_Z, _SPIKE_MIN = 10.0, 0.1   # both legs beyond 10 sigma and 10% (log), undone next bar
_JUMP_Z, _JUMP_MIN = 30.0, 0.2     # one move beyond 30 sigma and 20% (log), not split-like
# Repair limits: beyond these a repair would invent data, so it is refused.
_MAX_WIDEN = float(np.log(1.1))    # widen high/low by at most 10% to contain open/close
_MAX_OFF_SESSION = 0.05            # drop off-calendar daily bars only if they are this rare

_DAY = np.dtype("datetime64[D]")
_NS = np.dtype("datetime64[ns]")
_FIX = {
    "unsorted": "sort the file by time; under --quality warn or repair the bars are sorted on "
                "load and the sort is recorded as a repair",
    "duplicate": "remove the repeated rows; under --quality warn or repair the last of them is "
                 "kept and the drop recorded as a repair",
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
    "missing_session": "fill the sessions from another source, pick the calendar the bars "
                       "trade on (--exchange NAME), or pass --allow missing_session",
    "adjustment_step": "re-download the whole series in one go (one adjustment basis), or pass "
                       "--quality repair (back-adjusts the earlier bars at the seam so the "
                       "adjusted close moves with Close)",
    "spike": "correct or delete the bar in the file (a one-bar bad print is never repaired), "
             "or pass --allow spike if the move is real",
    "jump": "check the date for a corporate action and re-download consistently adjusted "
            "prices, or pass --allow jump if the move is real (never repaired)",
    "non_session": "pick the calendar the bars trade on (--exchange NAME, exchange=; 24/7 for "
                   "markets that never close), delete the row, or pass --quality repair "
                   "(drops stray rows)",
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


class RepairRefusedError(DataQualityError):
    """``quality='repair'`` met a fault it must not paper over; carries the findings."""

    def __init__(self, findings: list[Finding]) -> None:
        super().__init__(findings)
        head = "\n".join(f"  - {f}" for f in self.findings[:20])
        more = f"\n  ... and {len(self.findings) - 20} more" if len(self.findings) > 20 else ""
        self.args = (f"{len(self.findings)} data-quality finding(s) that a repair would only "
                     f"hide (it would invent prices or drop real bars), so none was made:\n"
                     f"{head}{more}\nFix the data as each line says.",)


def check_bars(bars: Bars, *, exchange: str | None = "XNYS",
               allow: Collection[str] = ()) -> list[Finding]:
    """Every quality finding in ``bars`` except the checks named in ``allow``.

    ``exchange`` (an exchange_calendars code, or ``24/7``) enables the calendar checks;
    ``None`` skips them. Yahoo-layout bars carry the file's Close in ``meta["raw_close"]``,
    which enables the adjustment-factor check.
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
    raw = _raw_close(bars)
    dup = np.flatnonzero(ts[1:] == ts[:-1]) + 1
    out.per_day("duplicate", dup, ds, "{n} repeated stamp(s)")
    _check_values(out, ds, cols)
    keep = _clean_rows(ts, cols)
    cols, kept_days = {c: a[keep] for c, a in cols.items()}, ds[keep]
    raw = None if raw is None else raw[order][keep]
    kind = "splice" if bars.adjusted else "split_jump"
    explained: set[int] = set()
    for i, factor in _split_events(cols):
        lo, hi = cols["close"][i - 1], cols["close"][i]
        what = ("level shifts as if split-adjusted on one side only" if bars.adjusted
                else "looks like an unadjusted split")
        out.add(kind, kept_days[i], f"close {lo:.6g} -> {hi:.6g} (x{hi / lo:.4f}), {what} "
                             f"(factor {_ratio(factor)}), not reverted")
        explained.add(i)
    if raw is not None:
        for i, step in _adjustment_steps(cols, raw):
            out.add("adjustment_step", kept_days[i], _step_text(cols["close"], raw, i, step))
            explained.add(i)
    for check, i, r, z, note in _outliers(cols, explained):
        c = cols["close"]
        out.add(check, kept_days[i], f"close {c[i - 1]:.6g} -> {c[i]:.6g} (x{np.exp(r):.4g}, "
                                     f"{z:.0f} sigma of its own bar-to-bar moves){note}")
    if exchange is not None:
        if bars.interval == "1d":
            _check_daily_calendar(out, ds, exchange)
        else:
            _check_intraday_calendar(out, ts, ds, bars.interval, exchange)
    return out.findings()


def enforce(bars: Bars, *, policy: str = "raise", allow: Collection[str] = (),
            exchange: str | None = "XNYS") -> Bars:
    """Apply a quality policy: ``raise`` DataQualityError, ``warn`` and pass, or ``repair``.

    ``warn`` still sorts the bars and drops repeated stamps (keeping the last), since the
    engine cannot step through disorder; ``repair`` also drops non-finite rows and stray
    off-calendar daily bars, widens high/low a little to contain open/close and back-adjusts
    splices, unadjusted splits and adjustment-factor seams. Every repair is a row of
    ``meta["repairs"]`` (:data:`REPAIR_COLUMNS`), zero-volume days are listed in
    ``meta["zero_volume"]``; what repair must not touch (spikes, jumps, absurd OHLC, a
    calendar that drops many bars) raises :class:`RepairRefusedError`; other findings left are
    warned about, never hidden.
    """
    if policy not in POLICIES:
        raise ConfigError(f"quality policy {policy!r} is unknown; use one of {', '.join(POLICIES)}")
    if policy == "repair":
        bars, refused = _repair(bars, exchange=exchange, allow=allow)
        findings = check_bars(bars, exchange=exchange, allow=allow)
        refused += [f for f in findings if f.check in ("spike", "jump")]
        if refused:
            raise RepairRefusedError(refused)
        if findings:
            warnings.warn(DataQualityWarning(findings), stacklevel=2)
        return bars
    findings = check_bars(bars, exchange=exchange, allow=allow)
    if findings and policy == "raise":
        raise DataQualityError(findings)
    if findings:
        warnings.warn(DataQualityWarning(findings), stacklevel=2)
    if len(bars) > 1 and not (bars.time[1:] > bars.time[:-1]).all():  # even if allowed
        bars = _ordered(bars, exchange=exchange)
    return bars


def repairs_frame(records: Iterable[Mapping[str, object]]) -> pd.DataFrame:
    """Repair records as a table with the columns :data:`REPAIR_COLUMNS` (all text)."""
    rows = [{c: str(r.get(c, "")) for c in REPAIR_COLUMNS} for r in records]
    return pd.DataFrame(rows, columns=list(REPAIR_COLUMNS), dtype=object)


def render_repairs(records: Iterable[Mapping[str, object]] | pd.DataFrame) -> str:
    """One line per repair, ``SYMBOL DATE check: before -> after`` (empty text when none)."""
    frame = records if isinstance(records, pd.DataFrame) else repairs_frame(records)
    return "\n".join(f"{r.symbol} {r.time} {r.check}: {r.before} -> {r.after}"
                     for r in frame.itertuples(index=False))


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
    """The day each bar belongs to: its session day for daily bars, exchange-local date intraday.

    On the 24/7 calendar a bar ending at midnight belongs to the day before.
    """
    if interval == "1d" or exchange is None:
        return calendars.bar_days(t, exchange=exchange)
    if calendars.is_round_the_clock(exchange):
        t = t - np.timedelta64(1, "ns")
    local = pd.DatetimeIndex(t).tz_localize("UTC").tz_convert(calendars.exchange_tz(exchange))
    return local.tz_localize(None).to_numpy(dtype=_NS).astype(_DAY)


def _raw_close(bars: Bars) -> np.ndarray | None:
    """The file's unadjusted Close aligned with ``bars`` (None when absent or not aligned)."""
    raw = bars.meta.get("raw_close")
    if not isinstance(raw, np.ndarray) or raw.shape != bars.close.shape or not bars.adjusted:
        return None
    return raw


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

    The overnight gap (prior close to open) matches a common split ratio within ``_SPLIT_TOL``
    and so does close-to-close, within the larger of ``_SPLIT_TOL`` and four robust sigmas of the
    series' own bar-to-bar moves (the split day's own move, or a missing bar beside it, adds to
    the ratio), the move spans many price increments (not rounding of tiny adjusted prices) and
    it neither is undone soon after nor undoes a jump just before.
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
    moves = r[np.isfinite(r)]
    sigma = 1.4826 * float(np.median(np.abs(moves - np.median(moves)))) if len(moves) else 0.0
    near = ((np.abs(r[cand] - _LOG_FACTORS[k]) < max(_SPLIT_TOL, 4.0 * sigma))
            & (np.abs(g[cand] - _LOG_FACTORS[k]) < _SPLIT_TOL))
    events = []
    for j, fk in zip(cand[near], k[near]):
        i = int(j) + 1
        if abs(c[i] - c[i - 1]) < _MIN_TICKS * _tick(cols, i):
            continue
        later = np.log(c[i + 1:i + 1 + _REVERT_BARS] / c[i - 1])
        earlier = np.log(c[max(0, i - 1 - _REVERT_BARS):i - 1] / c[i])
        if (np.abs(later) < abs(r[j]) / 2).any() or (np.abs(earlier) < abs(r[j]) / 2).any():
            continue  # undone soon after, or itself undoing a jump just before: a bad print
        events.append((i, float(_SPLIT_FACTORS[fk])))
    return events


def _tick(cols: dict[str, np.ndarray], i: int) -> float:
    """The price increment around bar ``i``: the smallest step between distinct nearby prices."""
    lo, hi = max(0, i - _TICK_WINDOW), min(len(cols["close"]), i + _TICK_WINDOW + 1)
    levels = np.unique(np.concatenate([cols[p][lo:hi] for p in PRICE_COLUMNS]))
    steps = np.diff(levels)
    return float(steps[steps > 0].min()) if (steps > 0).any() else 0.0


def _adjustment_steps(cols: dict[str, np.ndarray], raw: np.ndarray) -> list[tuple[int, float]]:
    """``(index, log step)`` where Adj Close / Close steps without a dividend or split behind it.

    Across a dividend the factor rises (earlier bars are scaled down) and Close falls by about
    the dividend; across a split in an unadjusted Close the factor steps by the split ratio.
    A factor that falls, or rises by more than an ordinary dividend while Close did not fall,
    is a seam between differently adjusted downloads: the adjusted close moves where Close did
    not.
    """
    c = cols["close"]
    if len(c) < 2:
        return []
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.log(c / raw)
        d = np.diff(f)
        rr = np.log(raw[1:] / raw[:-1])
    ok = np.isfinite(d) & np.isfinite(rr)
    split = (np.abs(d[:, None] - _LOG_FACTORS[None, :]) < _SPLIT_MATCH).any(axis=1)
    dividend = (d > 0) & ((d <= _SMALL_DIVIDEND) | ((d <= _MAX_DIVIDEND) & (rr <= -d / 2)))
    cand = np.flatnonzero(ok & (np.abs(d) > _ADJ_TOL) & ~split & ~dividend)
    out = []
    for j in cand:
        i = int(j) + 1
        moved = abs(c[i] - c[i - 1] * np.exp(rr[j]))  # the adjusted move Close does not make
        if moved >= _MIN_TICKS * _tick(cols, i):
            out.append((i, float(d[j])))
    return out


def _step_text(c: np.ndarray, raw: np.ndarray, i: int, step: float) -> str:
    """What an adjustment-factor step did to the adjusted close, against Close."""
    return (f"Adj Close / Close stepped x{np.exp(step):.4f} ({np.expm1(step):+.1%}) in one bar: "
            f"adjusted close {c[i - 1]:.6g} -> {c[i]:.6g} (x{c[i] / c[i - 1]:.4f}) while Close "
            f"{raw[i - 1]:.6g} -> {raw[i]:.6g} (x{raw[i] / raw[i - 1]:.4f}); no dividend or "
            "split explains it (two differently adjusted downloads spliced?)")


def _robust_sigma(r: np.ndarray) -> np.ndarray:
    """Per-return volatility: 1.4826 x MAD of log returns in a centred window (whole series
    when short), so one bad print cannot inflate the yardstick it is measured with."""
    if len(r) < _VOL_MIN_BARS:
        med = np.median(r)
        return np.full(len(r), _MAD_SIGMA * np.median(np.abs(r - med)))
    s = pd.Series(r)
    med = s.rolling(_VOL_WINDOW, center=True, min_periods=_VOL_MIN_BARS).median()
    mad = (s - med).abs().rolling(_VOL_WINDOW, center=True, min_periods=_VOL_MIN_BARS).median()
    return _MAD_SIGMA * mad.to_numpy(dtype=np.float64)


def _outliers(cols: dict[str, np.ndarray],
              explained: set[int]) -> list[tuple[str, int, float, float, str]]:
    """``(check, index, log move, sigmas, note)`` of one-bar spikes and lasting jumps.

    A spike leaves and rejoins the series in two opposite moves, each beyond both
    :data:`_SPIKE_Z` sigmas and :data:`_SPIKE_MIN`; a jump is one move beyond :data:`_JUMP_Z`
    sigmas and :data:`_JUMP_MIN` that no split, splice or adjustment step (``explained``)
    accounts for. Moves of fewer than :data:`_MIN_TICKS` price increments are rounding.
    """
    c = cols["close"]
    if len(c) < 3:
        return []
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.log(c[1:] / c[:-1])
    sigma = _robust_sigma(np.where(np.isfinite(r), r, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(r) / sigma
    z = np.where(np.isfinite(r), np.nan_to_num(z, nan=0.0, posinf=np.inf), 0.0)
    a = np.abs(r)
    out_leg = (z[:-1] > _SPIKE_Z) & (a[:-1] > _SPIKE_MIN)
    back_leg = (z[1:] > _SPIKE_Z) & (a[1:] > _SPIKE_MIN)
    undone = (np.sign(r[:-1]) != np.sign(r[1:])) & (
        np.abs(r[:-1] + r[1:]) < 0.5 * np.minimum(a[:-1], a[1:]))
    found: list[tuple[str, int, float, float, str]] = []
    in_spike = np.zeros(len(r), dtype=bool)
    for j in np.flatnonzero(out_leg & back_leg & undone):
        i = int(j) + 1
        if in_spike[j] or abs(c[i] - c[i - 1]) < _MIN_TICKS * _tick(cols, i):
            continue
        in_spike[j:j + 2] = True
        found.append(("spike", i, float(r[j]), float(min(z[j], z[j + 1])),
                      f", back to {c[i + 1]:.6g} the next bar: a one-bar bad print"))
    for j in np.flatnonzero((z > _JUMP_Z) & (a > _JUMP_MIN) & ~in_spike):
        i = int(j) + 1
        if i in explained or abs(c[i] - c[i - 1]) < _MIN_TICKS * _tick(cols, i):
            continue
        later = np.abs(np.log(c[i + 1:i + 1 + _REVERT_BARS] / c[i - 1])) < a[j] / 2
        note = (f", undone {int(np.argmax(later)) + 1} bar(s) later" if later.any()
                else ", not reverted")
        found.append(("jump", i, float(r[j]), float(z[j]), note + "; no split ratio fits"))
    found.sort(key=lambda x: x[1])
    return found


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


class _Repairs:
    """Repair rows of one symbol: ``(symbol, time, check, before, after)``, all text."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.rows: list[dict[str, str]] = []

    def add(self, check: str, day: object, before: str, after: str) -> None:
        self.rows.append({"symbol": self.symbol, "time": str(day), "check": check,
                          "before": before, "after": after})

    def per_day(self, check: str, rows: np.ndarray, days: np.ndarray, before: str,
                after: str) -> None:
        """One row per day among ``rows``, ``{n}`` in the texts replaced by the day's count."""
        uniq, counts = np.unique(days[rows], return_counts=True)
        for day, n in zip(uniq, counts):
            self.add(check, day, before.format(n=int(n)), after.format(n=int(n)))


def _with(bars: Bars, t: np.ndarray, cols: dict[str, np.ndarray], raw: np.ndarray | None,
          repairs: _Repairs, extra: dict | None = None) -> Bars:
    """New bars from repaired arrays, the repair rows appended to ``meta["repairs"]``."""
    meta = {**bars.meta, **(extra or {}),
            "repairs": [*bars.meta.get("repairs", []), *repairs.rows]}
    if raw is not None:
        raw = raw.copy()
        raw.flags.writeable = False
        meta["raw_close"] = raw
    return Bars.from_arrays(symbol=bars.symbol, interval=bars.interval, adjusted=bars.adjusted,
                            source=bars.source, time=t, meta=meta, **cols)


def _ordered(bars: Bars, *, exchange: str | None) -> Bars:
    """``bars`` sorted by time with repeated stamps dropped (the last kept), each step recorded.

    Applied under every policy that lets data through: the engine steps through bars in time
    order, so disorder would freeze the clock, not merely warn.
    """
    repairs = _Repairs(bars.symbol)
    t = bars.time
    days = _bar_days(t, bars.interval, exchange)
    order = np.argsort(t, kind="stable")
    back = np.flatnonzero(t[1:] < t[:-1]) + 1
    if len(back):
        repairs.per_day("unsorted", back, days, "{n} bar(s) earlier than the bar before",
                        "sorted by time")
    t, days = t[order], days[order]
    last = np.r_[t[1:] != t[:-1], True]
    if not last.all():
        repairs.per_day("duplicate", np.flatnonzero(~last), days, "{n} repeated stamp(s)",
                        "dropped, the last row kept")
    cols = {c: getattr(bars, c)[order][last] for c in (*PRICE_COLUMNS, "volume")}
    raw = _raw_close(bars)
    return _with(bars, t[last], cols, None if raw is None else raw[order][last], repairs)


def _repair(bars: Bars, *, exchange: str | None,
            allow: Collection[str]) -> tuple[Bars, list[Finding]]:
    """Repaired copy of ``bars`` (every change a row of ``meta["repairs"]``) and the findings
    a repair refused to paper over (absurd OHLC, a calendar that would drop many bars)."""
    _validated_allow(allow)
    refused: list[Finding] = []
    bars = _ordered(bars, exchange=exchange)
    repairs = _Repairs(bars.symbol)
    t = bars.time
    days = _bar_days(t, bars.interval, exchange)
    cols = {c: getattr(bars, c) for c in (*PRICE_COLUMNS, "volume")}
    raw = _raw_close(bars)
    gone = ~np.logical_and.reduce([np.isfinite(a) for a in cols.values()])
    if gone.any():
        repairs.per_day("non_finite", np.flatnonzero(gone), days, "{n} bar(s) with NaN/inf",
                        "dropped")
    if exchange is not None and bars.interval == "1d" and len(t):
        sess, _, _ = calendars.session_bounds(days[0], days[-1], exchange=exchange)
        off = ~np.isin(days, sess) & ~gone
        if off.sum() > _MAX_OFF_SESSION * len(t):
            first = days[np.argmax(off)]
            refused.append(Finding(
                bars.symbol, first, "non_session",
                f"{int(off.sum())} of {len(t)} bars ({off.mean():.0%}) fall on days that are "
                f"not {exchange} sessions, from {first} on: not stray rows but a different "
                "calendar, so they were not dropped",
                "load the bars on the calendar they trade on (--exchange NAME, exchange=; "
                "24/7 for markets that never close)"))
        elif off.any():
            repairs.per_day("non_session", np.flatnonzero(off), days,
                            f"{{n}} bar(s) on a day that is not a {exchange} session", "dropped")
            gone |= off
    t, days = t[~gone], days[~gone]
    cols = {c: a[~gone] for c, a in cols.items()}
    raw = None if raw is None else raw[~gone]
    _widen(bars.symbol, cols, days, repairs, refused)
    scale = np.ones(len(t))
    for i, factor in _split_events(cols):
        kind = "splice" if bars.adjusted else "split_jump"
        c = cols["close"]
        scale[:i] *= factor
        repairs.add(kind, days[i], f"close {c[i - 1]:.6g} -> {c[i]:.6g} (x{c[i] / c[i - 1]:.4f})",
                    f"prices of the {i} earlier bar(s) x{factor:g} and volume /{factor:g}: "
                    f"close {c[i - 1] * factor:.6g} -> {c[i]:.6g}")
    for p in PRICE_COLUMNS:
        cols[p] = cols[p] * scale
    cols["volume"] = cols["volume"] / scale
    if raw is not None:
        step_scale = np.ones(len(t))
        for i, step in _adjustment_steps(cols, raw):
            c, k = cols["close"], float(np.exp(step))
            step_scale[:i] *= k
            repairs.add("adjustment_step", days[i],
                        f"adjusted close {c[i - 1]:.6g} -> {c[i]:.6g} (x{c[i] / c[i - 1]:.4f}) "
                        f"while Close x{raw[i] / raw[i - 1]:.4f}",
                        f"prices of the {i} earlier bar(s) x{k:.6g}: adjusted close "
                        f"{c[i - 1] * k:.6g} -> {c[i]:.6g} (x{raw[i] / raw[i - 1]:.4f})")
        for p in PRICE_COLUMNS:
            cols[p] = cols[p] * step_scale
    zero_days = sorted({str(d) for d in days[cols["volume"] == 0]})
    extra = {"zero_volume": zero_days} if zero_days else None
    return _with(bars, t, cols, raw, repairs, extra), refused


def _widen(symbol: str, cols: dict[str, np.ndarray], days: np.ndarray, repairs: _Repairs,
           refused: list[Finding]) -> None:
    """Widen high/low to contain open/close where that is a small correction (in place).

    A close far outside its bar's range is a bad print: widening would make an absurd bar look
    valid, so those bars are left as they are and reported in ``refused``.
    """
    o, c = cols["open"], cols["close"]
    for check, side, bound, new in (("bad_high", "high", cols["high"], np.maximum(o, c)),
                                    ("bad_low", "low", cols["low"], np.minimum(o, c))):
        with np.errstate(divide="ignore", invalid="ignore"):
            gap = np.abs(np.log(new / bound))
        wrong = (new > bound) if side == "high" else (new < bound)
        far = wrong & ~(gap <= _MAX_WIDEN)
        for i in np.flatnonzero(far):
            refused.append(Finding(
                symbol, days[i], check,
                f"open {o[i]:.6g} / close {c[i]:.6g} lie x{np.exp(gap[i]):.4g} beyond the "
                f"{side} {bound[i]:.6g}: a bad print, not rounding, so the {side} was not "
                "widened to it", "correct or delete the row in the file"))
        fix = np.flatnonzero(wrong & ~far)
        for i in fix:
            repairs.add(check, days[i], f"{side} {bound[i]:.6g} (open {o[i]:.6g}, close "
                        f"{c[i]:.6g})", f"{side} {new[i]:.6g}")
        widened = bound.copy()
        widened[fix] = new[fix]
        cols[side] = widened
