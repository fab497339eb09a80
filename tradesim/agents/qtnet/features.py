"""Causal per-bar features for the DRL env: scale-free OHLCV ratios and Dual Thrust lines.

Every value at bar t uses bars <= t only; Dual Thrust ranges use *completed* days only (the
current day contributes just its open, which is known from its first bar). Arrays are
``[T]`` or ``[T, N]`` with time on axis 0; outputs are finite (0 during warm-up).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import lfilter

FEATURES: tuple[str, ...] = ("ret", "gap", "high", "low", "volume_z", "momentum", "dt_upper",
                             "dt_lower")
_DAY_NS = 86_400 * 1_000_000_000
_HOUR_NS = 3_600 * 1_000_000_000
_VOL_FLOOR = 1e-4


def day_ids(time: np.ndarray, *, day_start_utc_hour: float = 6.0) -> np.ndarray:
    """Trading-day number of each bar-end stamp (days start at ``day_start_utc_hour`` UTC)."""
    ns = np.asarray(time).astype("datetime64[ns]").astype(np.int64)
    return (ns - int(day_start_utc_hour * _HOUR_NS)) // _DAY_NS


def dual_thrust_lines(*, open: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
                      day: np.ndarray, k1: float = 0.5, k2: float = 0.5,
                      lookback_days: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower Dual Thrust lines per bar of one symbol (NaN before ``lookback_days`` days).

    Range = max(HH - LC, HC - LL) over the ``lookback_days`` completed days before the bar's day;
    lines = the day's open +k1 / -k2 x Range.
    """
    starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    ends = np.r_[starts[1:], day.shape[0]]
    d_high = np.maximum.reduceat(high, starts)
    d_low = np.minimum.reduceat(low, starts)
    d_close, d_open = close[ends - 1], open[starts]
    n_days = starts.shape[0]
    upper = np.full(n_days, np.nan)
    lower = np.full(n_days, np.nan)
    if n_days > lookback_days:
        k = lookback_days
        prev = slice(0, n_days - 1)  # window w covers days w..w+k-1, used by day w+k
        hh = sliding_window_view(d_high[prev], k).max(axis=1)
        ll = sliding_window_view(d_low[prev], k).min(axis=1)
        hc = sliding_window_view(d_close[prev], k).max(axis=1)
        lc = sliding_window_view(d_close[prev], k).min(axis=1)
        rng = np.maximum(hh - lc, hc - ll)
        upper[k:] = d_open[k:] + k1 * rng
        lower[k:] = d_open[k:] - k2 * rng
    counts = ends - starts
    return np.repeat(upper, counts), np.repeat(lower, counts)


def _ewm_vol(returns: np.ndarray, span: int) -> np.ndarray:
    """Causal EWMA volatility of ``returns`` along axis 0 (includes the current bar), floored."""
    alpha = 2.0 / (span + 1.0)
    var = lfilter([alpha], [1.0, alpha - 1.0], returns * returns, axis=0)
    seen = np.arange(1, returns.shape[0] + 1).reshape((-1,) + (1,) * (returns.ndim - 1))
    var = var / (1.0 - (1.0 - alpha) ** seen)  # bias correction for the zero start
    return np.maximum(np.sqrt(var), _VOL_FLOOR)


def _rolling_z(x: np.ndarray, rows: np.ndarray, span: int) -> np.ndarray:
    """z-score of ``x[t]`` among its trailing ``span`` values (incl. t; NaN under 2) at ``rows``."""
    pad = np.vstack([np.full((span - 1, x.shape[1]), np.nan), x])
    win = sliding_window_view(pad, span, axis=0)[rows]  # [R, N, span]
    n = np.isfinite(win).sum(-1)
    mean = np.nansum(win, -1) / np.maximum(n, 1)
    var = np.nansum((win - mean[..., None]) ** 2, -1) / np.maximum(n - 1, 1)
    z = (x[rows] - mean) / np.maximum(np.sqrt(var), 1e-6)
    return np.where(n >= 2, z, np.nan)


def make_features(*, time: np.ndarray, open: np.ndarray, high: np.ndarray, low: np.ndarray,
                  close: np.ndarray, volume: np.ndarray, k1: float = 0.5, k2: float = 0.5,
                  lookback_days: int = 4, vol_span: int = 20, momentum: int = 20,
                  day_start_utc_hour: float = 6.0, tail: int | None = None) -> np.ndarray:
    """Features ``[T, N, len(FEATURES)]`` (float32-safe, finite) from ``[T, N]`` (or ``[T]``) bars.

    Price ratios are in units of the trailing EWMA volatility, so they are comparable across
    symbols, price levels and bar frequencies. ``tail``: only the last ``tail`` rows (equal to
    ``make_features(...)[-tail:]``), which is all a live decision needs and far cheaper.
    """
    cols = [np.asarray(a, dtype=np.float64) for a in (open, high, low, close, volume)]
    if cols[0].ndim == 1:
        cols = [a[:, None] for a in cols]
    o, h, lo, c, v = cols
    n_bars = c.shape[0]
    first = 0 if tail is None else max(n_bars - tail, 0)
    rows = np.arange(first, n_bars)
    ret = np.log(c / np.vstack([c[:1], c[:-1]]))
    vol = _ewm_vol(ret, vol_span)[rows]  # recursive: needs every bar before the tail
    day = day_ids(time, day_start_utc_hour=day_start_utc_hour)
    cut = _day_cut(day, first, lookback_days)  # Dual Thrust needs only the days it ranges over
    upper, lower = np.empty((n_bars - first, c.shape[1])), np.empty((n_bars - first, c.shape[1]))
    for j in range(c.shape[1]):
        up, dn = dual_thrust_lines(open=o[cut:, j], high=h[cut:, j], low=lo[cut:, j],
                                   close=c[cut:, j], day=day[cut:], k1=k1, k2=k2,
                                   lookback_days=lookback_days)
        upper[:, j], lower[:, j] = up[first - cut:], dn[first - cut:]
    volume_z = _rolling_z(np.log1p(np.maximum(v, 0.0)), rows, vol_span)
    past = c[np.maximum(rows - momentum, 0)]
    prev_c = c[np.maximum(rows - 1, 0)]
    ct = c[rows]
    feats = np.stack([
        ret[rows] / vol,
        np.log(o[rows] / prev_c) / vol,
        np.log(h[rows] / ct) / vol,
        np.log(lo[rows] / ct) / vol,
        volume_z,
        np.log(ct / past) / (vol * np.sqrt(momentum)),
        (ct - upper) / (ct * vol),
        (ct - lower) / (ct * vol),
    ], axis=-1)
    return np.clip(np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0), -10.0, 10.0)


def _day_cut(day: np.ndarray, first: int, lookback_days: int) -> int:
    """First bar of the day ``lookback_days`` days before bar ``first``'s day (0 if none)."""
    if first == 0:
        return 0
    starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    k = int(np.searchsorted(starts, first, "right")) - 1 - lookback_days
    return int(starts[k]) if k > 0 else 0
