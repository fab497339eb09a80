"""Seeded synthetic market: the offline default source of daily and intraday bars and news.

A factor model (market + sector + idiosyncratic) with GARCH(1,1) volatility, Student-t shocks and
a hidden bull/bear/crisis regime drives daily log returns; OHLC comes from an overnight gap plus a
Brownian-bridge intraday path, volume from |return| and volatility. Random draws are keyed by
(seed, symbol, calendar year), so a symbol's path never depends on the other symbols or on the
requested range, and extending ``end`` leaves the earlier history unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, model_validator

from tradesim.data import calendars
from tradesim.data.bars import NEWS_COLUMNS, Bars, News, interval_nanos, to_utc_stamp
from tradesim.data.view import MarketData
from tradesim.errors import ConfigError, DataFormatError, UnknownSymbolError

DEFAULT_SYMBOLS: tuple[str, ...] = ("ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO", "FOXTROT",
                                    "GOLF", "MKT")
INDEX_SYMBOL = "MKT"  # tracks the market factor: an index-like ETF
REGIMES: tuple[str, ...] = ("bull", "bear", "crisis")
SECTORS: tuple[str, ...] = ("technology", "financials", "energy", "healthcare")
SAMPLE_SEED = 7
NEWS_SOURCE = "synthetic-wire"

_DEFAULT_SECTOR = {"ALPHA": 0, "BRAVO": 0, "CHARLIE": 1, "DELTA": 1, "ECHO": 2, "FOXTROT": 2,
                   "GOLF": 3}
_STREAM_MARKET, _STREAM_PARAMS, _STREAM_DAILY, _STREAM_NEWS, _STREAM_INTRADAY = 1, 2, 3, 4, 5
_YEAR_ROWS = 262  # draws per calendar year: more than any year's sessions
_MINUTE_COLS = 391  # intraday path points 0..390 (390 regular-hours minutes)
_NEWS_SLOTS = 6  # most items per symbol and session
_NS_PER_MIN = 60_000_000_000
_DAY_NS = np.timedelta64(86_400_000_000_000, "ns")
_REGIME_TONE = np.array([0.5, -0.5, -1.5])
_SAMPLE_MANIFEST = "manifest.json"


class SyntheticParams(BaseModel):
    """Knobs of the simulator; drifts and vols are per session, in log return."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    regime_drift: tuple[float, float, float] = (0.0008, -0.0006, -0.003)
    """Market-factor drift in each regime (bull, bear, crisis)."""
    regime_vol: tuple[float, float, float] = (0.8, 1.3, 2.6)
    """Volatility multiplier of every factor in each regime (idiosyncratic gets its square root)."""
    regime_transition: tuple[tuple[float, float, float], ...] = (
        (0.995, 0.004, 0.001), (0.012, 0.985, 0.003), (0.02, 0.03, 0.95))
    """Daily Markov transition matrix between regimes (rows sum to 1); the chain starts in bull."""
    market_vol: float = 0.008
    """Long-run daily vol of the market factor."""
    sector_vol: float = 0.006
    """Long-run daily vol of each sector factor."""
    idio_vol: tuple[float, float] = (0.008, 0.018)
    """Range of a symbol's idiosyncratic daily vol (drawn per symbol)."""
    beta: tuple[float, float] = (0.7, 1.4)
    """Range of a symbol's market beta."""
    sector_loading: tuple[float, float] = (0.6, 1.2)
    """Range of a symbol's loading on its sector factor."""
    garch_alpha: float = 0.08
    """GARCH(1,1) reaction to the last squared shock."""
    garch_beta: float = 0.90
    """GARCH(1,1) persistence of the conditional variance."""
    tail_df: float = 5.0
    """Degrees of freedom of the Student-t innovations (scaled to unit variance)."""
    overnight_share: float = 0.3
    """Share of each day's return realised in the overnight gap (close to next open)."""
    overnight_noise: float = 0.25
    """Extra gap noise (in units of the day's vol) that the session then reverses."""
    start_price: tuple[float, float] = (20.0, 200.0)
    """Range of first-day prices (the index starts at 100)."""
    log10_volume: tuple[float, float] = (5.5, 7.0)
    """Range of a symbol's typical log10 daily share volume."""
    volume_return_sensitivity: float = 0.35
    """Log-volume added per unit of |return| / long-run vol."""
    volume_vol_sensitivity: float = 0.8
    """Elasticity of volume to conditional vol relative to long-run vol."""
    volume_persistence: float = 0.7
    """AR(1) coefficient of the log-volume noise."""
    volume_noise: float = 0.2
    """Innovation sd of the log-volume noise."""
    news_rate: float = 0.15
    """Base rate of tone-bearing headlines per symbol and session."""
    news_shock_sensitivity: float = 0.5
    """Extra headline rate per unit of |standardised return| just realised."""
    news_noise_rate: float = 0.12
    """Rate of neutral round-ups (no information) per symbol and session."""
    news_regime_weight: float = 0.3
    """Weight of the current (latent) regime in headline tone."""
    news_tone_noise: float = 0.8
    """Noise in headline tone: higher makes the news signal weaker."""

    @model_validator(mode="after")
    def _check(self) -> SyntheticParams:
        p = np.asarray(self.regime_transition, dtype=float)
        if p.shape != (3, 3) or (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0):
            raise ValueError("regime_transition must be a 3x3 matrix of probabilities whose rows "
                             "sum to 1 (bull, bear, crisis)")
        for name in ("idio_vol", "beta", "sector_loading", "start_price", "log10_volume"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be a range (low, high) with 0 <= low <= high")
        if not (self.garch_alpha >= 0 and self.garch_beta >= 0
                and self.garch_alpha + self.garch_beta < 1):
            raise ValueError("garch_alpha and garch_beta must be >= 0 with a sum below 1")
        if self.tail_df <= 2:
            raise ValueError("tail_df must exceed 2 so the innovations have a variance")
        if not (0 <= self.overnight_share < 1 and 0 <= self.volume_persistence < 1):
            raise ValueError("overnight_share and volume_persistence must lie in [0, 1)")
        if min(self.market_vol, self.sector_vol, self.news_rate, self.news_noise_rate) < 0:
            raise ValueError("vols and news rates must be >= 0")
        return self

    def fingerprint(self) -> str:
        """Short hash of every parameter value: part of the source's cache key."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:10]


@dataclass(frozen=True, slots=True)
class _Market:
    """The market-wide latent state over the horizon (one row per session)."""

    days: np.ndarray  # datetime64[D]
    opens: np.ndarray  # UTC ns
    closes: np.ndarray  # UTC ns
    years: np.ndarray
    ordinal: np.ndarray  # position of the session within its calendar year
    regime: np.ndarray  # int8 index into REGIMES
    factor: np.ndarray  # (T, 1 + sectors) factor log returns; column 0 is the market
    factor_vol: np.ndarray  # (T, 1 + sectors) conditional vol of each factor


@dataclass(frozen=True, slots=True)
class _Path:
    """One symbol's daily path and the latent quantities behind it."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    ret: np.ndarray  # close-to-close log return (latent, before rounding)
    sigma: np.ndarray  # conditional daily vol
    intraday_vol: np.ndarray  # vol of the open-to-close part
    sector: int


def _symbol_words(symbol: str) -> list[int]:
    """Two 32-bit words from the symbol's SHA-256: its stable identity in every seed."""
    digest = hashlib.sha256(symbol.encode()).digest()
    return [int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:8], "little")]


def _rng(*words: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(w) for w in words]))


def _yearly(words: list[int], years: np.ndarray, ordinal: np.ndarray,
            draw: Callable[[np.random.Generator], tuple[np.ndarray, ...]]) -> list[np.ndarray]:
    """Draw fixed-size blocks per calendar year and pick each session's row by its ordinal.

    Keying draws by year keeps earlier history unchanged when the horizon grows.
    """
    out: list[np.ndarray] | None = None
    for year in np.unique(years):
        sel = years == year
        block = draw(_rng(*words, int(year)))
        if out is None:
            out = [np.empty((len(years), *b.shape[1:]), dtype=b.dtype) for b in block]
        for dst, src in zip(out, block):
            dst[sel] = src[ordinal[sel]]
    assert out is not None
    return out


def _student_t(rng: np.random.Generator, df: float, size: tuple[int, ...]) -> np.ndarray:
    """Student-t draws scaled to unit variance."""
    return rng.standard_t(df, size) * np.sqrt((df - 2.0) / df)


def _garch(z: np.ndarray, alpha: float, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit-variance GARCH(1,1) shocks and conditional sd from innovations ``z`` (T, k)."""
    eps = np.empty_like(z)
    sd = np.empty_like(z)
    h = np.ones(z.shape[1])
    omega = 1.0 - alpha - beta
    for t in range(z.shape[0]):
        s = np.sqrt(h)
        sd[t] = s
        eps[t] = e = s * z[t]
        h = omega + alpha * e * e + beta * h
    return eps, sd


def _as_day(value: object) -> np.datetime64:
    return np.datetime64(pd.Timestamp(value).date(), "D")


@lru_cache(maxsize=8)
def _market(seed: int, params: SyntheticParams, start: np.datetime64,
            end: np.datetime64) -> _Market:
    """Sessions, regime chain and factor returns of the horizon (computed once per key)."""
    year0 = start.astype("datetime64[Y]")
    days, opens, closes = calendars.session_bounds(year0, end)
    years = days.astype("datetime64[Y]").astype(np.int64) + 1970
    first_of_year = np.searchsorted(years, years, "left")
    ordinal = np.arange(len(days)) - first_of_year
    keep = days >= start
    days, opens, closes = days[keep], opens[keep], closes[keep]
    years, ordinal = years[keep], ordinal[keep]
    if not len(days):
        raise ConfigError(f"synthetic horizon {start}..{end} holds no XNYS session; pick start "
                          "<= end spanning at least one trading day")
    k = 1 + len(SECTORS)
    u, z = _yearly([seed, _STREAM_MARKET], years, ordinal, lambda g: (
        g.random(_YEAR_ROWS), _student_t(g, params.tail_df, (_YEAR_ROWS, k))))
    cum = np.cumsum(np.asarray(params.regime_transition), axis=1).tolist()
    regime = np.empty(len(days), dtype=np.int8)
    state = 0
    for t, ut in enumerate(u.tolist()):
        regime[t] = state
        row = cum[state]
        state = 0 if ut < row[0] else (1 if ut < row[1] else 2)
    eps, sd = _garch(z, params.garch_alpha, params.garch_beta)
    mult = np.asarray(params.regime_vol)[regime]
    scale = np.array([params.market_vol] + [params.sector_vol] * len(SECTORS))
    factor_vol = sd * scale * mult[:, None]
    factor = eps * scale * mult[:, None]
    factor[:, 0] += np.asarray(params.regime_drift)[regime]
    for arr in (regime, factor, factor_vol):
        arr.flags.writeable = False
    return _Market(days=days, opens=opens, closes=closes, years=years, ordinal=ordinal,
                   regime=regime, factor=factor, factor_vol=factor_vol)


def _loadings(seed: int, params: SyntheticParams, symbol: str) -> tuple[float, ...]:
    """Per-symbol constants: (sector, beta, sector loading, idio vol, start price, log10 volume)."""
    g = _rng(seed, _STREAM_PARAMS, *_symbol_words(symbol))
    beta, loading, idio, price, logv = (g.uniform(*r) for r in (
        params.beta, params.sector_loading, params.idio_vol, params.start_price,
        params.log10_volume))
    if symbol == INDEX_SYMBOL:
        return -1, 1.0, 0.0, 0.0005, 100.0, max(logv, params.log10_volume[1])
    sector = _DEFAULT_SECTOR.get(symbol, _symbol_words(symbol)[0] % len(SECTORS))
    return sector, beta, loading, idio, price, logv


@lru_cache(maxsize=8)
def _paths(seed: int, params: SyntheticParams, start: np.datetime64, end: np.datetime64,
           symbols: tuple[str, ...]) -> dict[str, _Path]:
    """Daily OHLCV of ``symbols`` over the horizon, vectorised across symbols."""
    m = _market(seed, params, start, end)
    consts = np.array([_loadings(seed, params, s) for s in symbols])  # (N, 6)
    sector = consts[:, 0].astype(int)
    beta, loading, idio, price0, logv = consts[:, 1:].T
    draws = [_yearly([seed, _STREAM_DAILY, *_symbol_words(s)], m.years, m.ordinal, lambda g: (
        _student_t(g, params.tail_df, (_YEAR_ROWS,)), g.standard_normal(_YEAR_ROWS),
        1.0 - g.random((_YEAR_ROWS, 2)), g.standard_normal(_YEAR_ROWS))) for s in symbols]
    z, eta, u, vnoise = (np.stack([d[i] for d in draws], axis=1) for i in range(4))
    eps, sd = _garch(z, params.garch_alpha, params.garch_beta)
    idio_mult = np.sqrt(np.asarray(params.regime_vol)[m.regime])[:, None]
    sec = np.where(sector >= 0, sector + 1, 1)
    on_sector = np.where(sector >= 0, loading, 0.0)
    ret = (beta * m.factor[:, [0]] + on_sector * m.factor[:, sec]
           + idio * idio_mult * eps)
    sigma = np.sqrt((beta * m.factor_vol[:, [0]]) ** 2 + (on_sector * m.factor_vol[:, sec]) ** 2
                    + (idio * idio_mult * sd) ** 2)
    log_close = np.log(price0) + np.cumsum(ret, axis=0)
    log_prev = np.vstack([np.log(price0)[None, :], log_close[:-1]])
    w = params.overnight_share
    gap = w * ret + params.overnight_noise * sigma * eta
    body = ret - gap
    intraday_vol = sigma * np.sqrt(1.0 - w)
    var = intraday_vol ** 2
    up = 0.5 * (body + np.sqrt(body * body - 2.0 * var * np.log(u[..., 0])))
    down = 0.5 * (body - np.sqrt(body * body - 2.0 * var * np.log(u[..., 1])))
    log_open = log_prev + gap
    o, c = _price(np.exp(log_open)), _price(np.exp(log_close))
    h = np.maximum(_price(np.exp(log_open + up)), np.maximum(o, c))
    lo = np.minimum(_price(np.exp(log_open + down)), np.minimum(o, c))
    long_run = np.sqrt((beta * params.market_vol) ** 2 + (on_sector * params.sector_vol) ** 2
                       + idio ** 2)
    from scipy.signal import lfilter  # lazy: scipy.signal costs seconds of import time

    noise = lfilter([1.0], [1.0, -params.volume_persistence], params.volume_noise * vnoise, axis=0)
    log_volume = (logv * np.log(10.0) + params.volume_return_sensitivity * np.abs(ret) / long_run
                  + params.volume_vol_sensitivity * np.log(sigma / long_run) + noise)
    volume = np.maximum(np.rint(np.exp(log_volume)), 1000.0)
    out = {}
    for i, s in enumerate(symbols):
        cols = (o[:, i], h[:, i], lo[:, i], c[:, i], volume[:, i], ret[:, i], sigma[:, i],
                intraday_vol[:, i])
        for arr in cols:
            arr.flags.writeable = False
        out[s] = _Path(*cols, sector=int(sector[i]))
    return out


def _price(x: np.ndarray) -> np.ndarray:
    """Prices on a 1e-4 grid (monotone, so OHLC order survives; masks last-ulp libm differences)."""
    return np.maximum(np.round(x, 4), 1e-4)


_INTRADAY_CACHE: OrderedDict[tuple, tuple[np.ndarray, ...]] = OrderedDict()


def _intraday_year(seed: int, symbol: str, path: _Path, m: _Market,
                   sel: np.ndarray) -> tuple[np.ndarray, ...]:
    """1-minute bars (time, o, h, l, c, v) of the sessions ``sel`` (all in one calendar year).

    A Brownian bridge in log price runs open -> (high, low in arcsine-distributed order) -> close,
    clipped to the day's range, so the minutes aggregate exactly to the daily bar.
    """
    year = int(m.years[sel][0])
    g = _rng(seed, _STREAM_INTRADAY, *_symbol_words(symbol), year)
    rows = m.ordinal[sel]
    inc = g.standard_normal((_YEAR_ROWS, _MINUTE_COLS))[rows]
    ext = np.abs(g.standard_normal((_YEAR_ROWS, _MINUTE_COLS, 2)))[rows]
    weight = g.gamma(4.0, 0.25, (_YEAR_ROWS, _MINUTE_COLS))[rows]
    upos = g.random((_YEAR_ROWS, 2))[rows]
    o, h, lo, c, v = (x[sel][:, None] for x in (path.open, path.high, path.low, path.close,
                                                   path.volume))
    opens = m.opens[sel]
    n = ((m.closes[sel] - opens) // np.timedelta64(_NS_PER_MIN, "ns")).astype(np.int64)[:, None]
    k = np.arange(_MINUTE_COLS)[None, :]
    step = path.intraday_vol[sel][:, None] / np.sqrt(n)
    walk = np.cumsum(np.where(k == 0, 0.0, inc) * step, axis=1)
    arcsine = (1.0 - np.cos(np.pi * upos)) / 2.0
    a = 1 + np.minimum((arcsine[:, [0]] * (n - 1)).astype(np.int64), n - 2)
    b = 1 + np.minimum((arcsine[:, [1]] * (n - 2)).astype(np.int64), n - 3)
    b = b + (b >= a)
    top, bottom, end = np.log(h / o), np.log(lo / o), np.log(c / o)
    first, second = np.minimum(a, b), np.maximum(a, b)
    knot_k = np.hstack([np.zeros_like(n), first, second, n])
    knot_x = np.hstack([np.zeros_like(top), np.where(a < b, top, bottom),
                        np.where(a < b, bottom, top), end])
    seg = (k > first).astype(np.int64) + (k > second)
    kl, kr = np.take_along_axis(knot_k, seg, 1), np.take_along_axis(knot_k, seg + 1, 1)
    xl, xr = np.take_along_axis(knot_x, seg, 1), np.take_along_axis(knot_x, seg + 1, 1)
    wl, wr = np.take_along_axis(walk, kl, 1), np.take_along_axis(walk, kr, 1)
    frac = (k - kl) / (kr - kl)
    x = np.clip(xl + (walk - wl) + frac * (xr - xl - (wr - wl)), bottom, top)
    p = np.clip(_price(o * np.exp(x)), lo, h)
    p[:, [0]] = o
    np.put_along_axis(p, n, c, 1)
    np.put_along_axis(p, a, h, 1)
    np.put_along_axis(p, b, lo, 1)
    bar_o, bar_c = p[:, :-1], p[:, 1:]
    move = np.abs(np.diff(x, axis=1)) / step
    top_oc, bottom_oc = np.maximum(bar_o, bar_c), np.minimum(bar_o, bar_c)
    bar_h = np.maximum(np.minimum(_price(top_oc * np.exp(0.3 * step * ext[:, 1:, 0])), h), top_oc)
    bar_l = np.minimum(np.maximum(_price(bottom_oc * np.exp(-0.3 * step * ext[:, 1:, 1])), lo),
                       bottom_oc)
    j = k[:, 1:]
    valid = j <= n
    profile = 1.0 + 1.5 * np.exp(-(j - 1) / 25.0) + np.exp(-(n - j) / 25.0)
    w = np.where(valid, profile * weight[:, 1:] * (1.0 + move), 0.0)
    share = v * w / w.sum(axis=1, keepdims=True)
    vol = np.floor(share)
    rest = (v[:, 0] - vol.sum(axis=1)).astype(np.int64)
    rank = np.argsort(np.argsort(np.where(valid, vol - share, 1.0), axis=1, kind="stable"),
                      axis=1, kind="stable")
    vol += rank < rest[:, None]
    time = opens[:, None] + j * np.timedelta64(_NS_PER_MIN, "ns")
    return tuple(arr[valid] for arr in (time, bar_o, bar_h, bar_l, bar_c, vol))


def _aggregate(cols: tuple[np.ndarray, ...], minutes: int) -> tuple[np.ndarray, ...]:
    """Aggregate 1-minute bars into ``minutes`` bins from each session's open (bar-end stamps)."""
    time, o, h, lo, c, v = cols
    day = time.astype("datetime64[D]")  # sessions never straddle UTC midnight on XNYS
    new_day = np.r_[True, day[1:] != day[:-1]]
    day_start = np.flatnonzero(new_day)
    pos = np.arange(len(time)) - np.repeat(day_start, np.diff(np.r_[day_start, len(time)]))
    starts = np.flatnonzero(pos % minutes == 0)
    ends = np.r_[starts[1:], len(time)] - 1
    return (time[ends], o[starts], np.maximum.reduceat(h, starts),
            np.minimum.reduceat(lo, starts), c[ends], np.add.reduceat(v, starts))


class SyntheticSource:
    """Seeded multi-asset market simulator behind the Source protocol (the offline default).

    The whole universe is simulated once over ``start``..``end`` (cached in-process) and every
    load slices it. Daily bars end at the XNYS close; intraday bars cover regular hours only.
    """

    name = "synthetic"

    def __init__(self, *, seed: int = SAMPLE_SEED, symbols: Sequence[str] | None = None,
                 start: object = "2010-01-04", end: object = "2019-12-31", interval: str = "1d",
                 params: SyntheticParams | None = None) -> None:
        interval_nanos(interval)
        universe = tuple(DEFAULT_SYMBOLS if symbols is None else symbols)
        if not universe or len(set(universe)) != len(universe) or not all(
                isinstance(s, str) and s for s in universe):
            raise ConfigError("synthetic symbols must be distinct non-empty names, "
                              f"got {universe!r}")
        self.seed, self.interval = int(seed), interval
        self.universe = universe
        self.start, self.end = _as_day(start), _as_day(end)
        if self.start > self.end:
            raise ConfigError(f"synthetic start {self.start} is after end {self.end}; swap them")
        self.params = params or SyntheticParams()

    @property
    def key(self) -> str:
        """Cache key: seed, parameter hash and horizon (prices are always adjusted)."""
        span = f"{self.start}_{self.end}".replace("-", "")
        return f"synthetic-s{self.seed}-p{self.params.fingerprint()}-{span}-adj"

    def symbols(self) -> list[str]:
        return list(self.universe)

    def _market(self) -> _Market:
        return _market(self.seed, self.params, self.start, self.end)

    def _path(self, symbol: str) -> _Path:
        if symbol not in self.universe:
            raise UnknownSymbolError(f"synthetic market has no symbol {symbol!r}; it simulates "
                                     f"{', '.join(self.universe)} (pass symbols=[...] to choose)")
        return _paths(self.seed, self.params, self.start, self.end, self.universe)[symbol]

    def _meta(self) -> dict:
        return {"seed": self.seed, "params": self.params.fingerprint(),
                "horizon": f"{self.start}..{self.end}"}

    def load(self, symbol: str, *, interval: str | None = None, start: object | None = None,
             end: object | None = None) -> Bars:
        """Bars of ``symbol`` ending in ``[start, end]`` (a date-only ``end`` includes that day)."""
        interval = interval or self.interval
        interval_nanos(interval)
        path, m = self._path(symbol), self._market()
        lo, hi = _bounds(start, end)
        cols: tuple[np.ndarray, ...]
        if interval == "1d":
            cols = (m.closes, path.open, path.high, path.low, path.close, path.volume)
        else:
            cols = self._intraday(symbol, path, m, lo, hi, int(interval[:-1]) * (
                60 if interval.endswith("h") else 1))
        bars = Bars.from_arrays(symbol=symbol, interval=interval, adjusted=True, source=self.name,
                                meta=self._meta(), time=cols[0],
                                **dict(zip(("open", "high", "low", "close", "volume"), cols[1:])))
        return bars.between(lo, hi)

    def _intraday(self, symbol: str, path: _Path, m: _Market, lo: np.datetime64 | None,
                  hi: np.datetime64 | None, minutes: int) -> tuple[np.ndarray, ...]:
        """1-minute bars of the years touching ``[lo, hi]`` (cached per year), then aggregated."""
        inside = np.ones(len(m.closes), dtype=bool)
        if lo is not None:
            inside &= m.closes >= lo
        if hi is not None:
            inside &= m.opens < hi
        parts = []
        for year in np.unique(m.years[inside]):
            key = (self.key, symbol, int(year))
            if key not in _INTRADAY_CACHE:
                _INTRADAY_CACHE[key] = _intraday_year(self.seed, symbol, path, m, m.years == year)
                if len(_INTRADAY_CACHE) > 32:
                    _INTRADAY_CACHE.popitem(last=False)
            _INTRADAY_CACHE.move_to_end(key)
            parts.append(_INTRADAY_CACHE[key])
        if not parts:
            return (np.array([], dtype="datetime64[ns]"), *([np.array([])] * 5))
        cols = tuple(np.concatenate(c) for c in zip(*parts))
        return cols if minutes == 1 else _aggregate(cols, minutes)

    def regimes(self) -> pd.Series:
        """The latent regime of each session, indexed by its close (for research and tests)."""
        m = self._market()
        index = pd.DatetimeIndex(m.closes, name="time").tz_localize("UTC")
        return pd.Series(np.asarray(REGIMES)[m.regime], index=index, name="regime")

    def news_frame(self, *, symbols: Sequence[str] | None = None) -> pd.DataFrame:
        """All headlines with their latent ``tone`` in [-1, 1] and ``info_time`` (last close used).

        Each item is published after the close it draws on, so its tone reflects only realised
        moves and the current regime, never later returns.
        """
        frame = _news(self.seed, self.params, self.start, self.end, self.universe)
        if symbols is not None:
            for s in symbols:
                self._path(s)
            frame = frame[frame["symbol"].isin(list(symbols))]
        return frame.reset_index(drop=True)

    def news(self, *, symbols: Sequence[str] | None = None, start: object | None = None,
             end: object | None = None) -> News:
        """Headlines (optionally of ``symbols``) that become available in ``[start, end]``."""
        news = News.from_frame(self.news_frame(symbols=symbols)[list(NEWS_COLUMNS)])
        lo, hi = _bounds(start, end)
        i = 0 if lo is None else int(np.searchsorted(news.available_at, lo, "left"))
        j = len(news) if hi is None else int(np.searchsorted(news.available_at, hi, "right"))
        return News(*(getattr(news, c)[i:j] for c in NEWS_COLUMNS))

    def market_data(self, *, symbols: Sequence[str] | None = None, start: object | None = None,
                    end: object | None = None, interval: str | None = None) -> MarketData:
        """Bars of ``symbols`` (default: the universe) plus their news, ready for ``as_of``."""
        chosen = list(symbols) if symbols is not None else list(self.universe)
        bars = {s: self.load(s, interval=interval, start=start, end=end) for s in chosen}
        return MarketData(bars, self.news(symbols=chosen, start=start, end=end))


def _bounds(start: object | None, end: object | None) -> tuple[np.datetime64 | None, ...]:
    """UTC bounds; an ``end`` given as a bare date (midnight, no zone) covers that whole day."""
    lo = None if start is None else to_utc_stamp(start)
    hi = None
    if end is not None:
        hi = to_utc_stamp(end)
        ts = pd.Timestamp(end)
        if ts.tzinfo is None and ts == ts.normalize():
            hi = hi + _DAY_NS - np.timedelta64(1, "ns")
    return lo, hi


_STRONG_UP = ("{s} shares surge on {p}", "{s} soars after {p}", "{s} rallies sharply on {p}")
_MILD_UP = ("{s} edges higher on {p}", "{s} gains on {p}", "{s} firms after {p}")
_FLAT = ("{s} little changed as traders weigh {n}", "{s} steady ahead of {n}",
         "{s} flat as investors await {n}")
_MILD_DOWN = ("{s} slips on {q}", "{s} edges lower after {q}", "{s} dips on {q}")
_STRONG_DOWN = ("{s} shares plunge on {q}", "{s} tumbles after {q}", "{s} sinks sharply on {q}")
_ROUNDUP = ("Stocks to watch: {s} among names in focus",
            "Market wrap: {s} and peers in today's session",
            "{s} to present at industry conference",
            "{s} sets date for annual shareholder meeting",
            "{s} named in index rebalance list")
_TONE_BUCKETS = (_STRONG_DOWN, _MILD_DOWN, _FLAT, _MILD_UP, _STRONG_UP)
_TONE_WORDS = ("very bearish", "bearish", "mixed", "bullish", "very bullish")
_GOOD = ("strong demand", "upbeat guidance", "an analyst upgrade", "record orders",
         "a well-received product launch", "widening margins")
_BAD = ("weak demand", "a guidance cut", "an analyst downgrade", "a regulatory probe",
        "supply disruptions", "margin pressure")
_MARKET_GOOD = ("strong economic data", "easing rate fears", "robust earnings season",
                "falling volatility", "upbeat consumer data", "a dovish central bank")
_MARKET_BAD = ("recession fears", "rising rate fears", "a volatility spike", "weak factory data",
               "credit stress", "a hawkish central bank")
_TOPICS = ("the next earnings report", "macro data", "the central bank decision", "sector news")


@lru_cache(maxsize=4)
def _news(seed: int, params: SyntheticParams, start: np.datetime64, end: np.datetime64,
          symbols: tuple[str, ...]) -> pd.DataFrame:
    """Headlines of every symbol, published between a session's close and the next one's."""
    m = _market(seed, params, start, end)
    paths = _paths(seed, params, start, end, symbols)
    n_t = len(m.closes) - 1  # the last close has no following window inside the horizon
    frames = []
    for s in symbols:
        p = paths[s]
        u_count, u_noise, u_time, u_pick, noise = _yearly(
            [seed, _STREAM_NEWS, *_symbol_words(s)], m.years, m.ordinal, lambda g: (
                g.random(_YEAR_ROWS), g.random(_YEAR_ROWS), g.random((_YEAR_ROWS, _NEWS_SLOTS)),
                g.random((_YEAR_ROWS, _NEWS_SLOTS, 2)),
                g.standard_normal((_YEAR_ROWS, _NEWS_SLOTS))))
        z1 = p.ret / p.sigma
        csum, cvar = np.cumsum(np.r_[0.0, p.ret]), np.cumsum(np.r_[0.0, p.sigma ** 2])
        lag = np.maximum(np.arange(1, len(p.ret) + 1) - 5, 0)
        idx = np.arange(1, len(p.ret) + 1)
        z5 = (csum[idx] - csum[lag]) / np.sqrt(cvar[idx] - cvar[lag])
        lam = params.news_rate * (1.0 + params.news_shock_sensitivity * np.abs(z1))
        count = _poisson(u_count, lam)
        n_noise = np.minimum(_poisson(u_noise, np.full_like(lam, params.news_noise_rate)),
                             _NEWS_SLOTS - count)
        slot = np.arange(_NEWS_SLOTS)[None, :]
        signal = slot < count[:, None]
        keep = (signal | (slot < (count + n_noise)[:, None]))[:n_t]
        raw = (0.8 * z1 + 0.4 * z5 + params.news_regime_weight * _REGIME_TONE[m.regime])[:, None]
        tone = np.where(signal, np.tanh((raw + params.news_tone_noise * noise) / 2.0), 0.0)[:n_t]
        window = (m.closes[1:] - m.closes[:-1]).astype(np.int64)
        offset = (u_time[:n_t] * window[:, None] // 1_000_000_000 + 1) * 1_000_000_000
        published = m.closes[:-1, None] + offset.astype("timedelta64[ns]")
        t_idx, k_idx = np.nonzero(keep)
        frames.append(_headlines(s, published[t_idx, k_idx], m.closes[t_idx], tone[t_idx, k_idx],
                                 signal[t_idx, k_idx], u_pick[t_idx, k_idx]))
    frame = pd.concat(frames, ignore_index=True)
    frame["available_at"] = calendars.news_available_at(frame["published_at"].to_numpy())
    frame = frame.sort_values("available_at", kind="stable", ignore_index=True)
    for c in ("published_at", "available_at", "info_time"):
        frame[c] = pd.DatetimeIndex(frame[c]).tz_localize("UTC")
    return frame[[*NEWS_COLUMNS, "tone", "info_time"]]


def _poisson(u: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Poisson(``lam``) counts by inverse CDF of uniforms ``u``, capped at the slot count."""
    pmf = np.exp(-lam)
    cdf = pmf.copy()
    count = np.zeros(len(u))
    for k in range(1, _NEWS_SLOTS + 1):
        count += u >= cdf
        pmf = pmf * lam / k
        cdf = cdf + pmf
    return count


def _headlines(symbol: str, published: np.ndarray, info: np.ndarray, tone: np.ndarray,
               signal: np.ndarray, pick: np.ndarray) -> pd.DataFrame:
    """Templated title and body per item from its tone bucket (round-ups when not ``signal``)."""
    good, bad = (_MARKET_GOOD, _MARKET_BAD) if symbol == INDEX_SYMBOL else (_GOOD, _BAD)
    bucket = np.digitize(tone, [-0.45, -0.15, 0.15, 0.45])
    titles, bodies = [], []
    for b, sig, (u1, u2) in zip(bucket.tolist(), signal.tolist(), pick.tolist()):
        if not sig:
            titles.append(_ROUNDUP[int(u1 * len(_ROUNDUP))].format(s=symbol))
            bodies.append(f"Routine item on {symbol}; no change in outlook was reported.")
            continue
        drivers = good if b >= 3 else (bad if b <= 1 else _TOPICS)
        templates = _TONE_BUCKETS[b]
        title = templates[int(u1 * len(templates))].format(
            s=symbol, p=drivers[int(u2 * len(drivers))], q=drivers[int(u2 * len(drivers))],
            n=drivers[int(u2 * len(drivers))])
        titles.append(title)
        bodies.append(f"Desk commentary describes sentiment around {symbol} as {_TONE_WORDS[b]}.")
    n = len(titles)
    return pd.DataFrame({"published_at": published, "symbol": [symbol] * n, "title": titles,
                         "body": bodies, "source": [NEWS_SOURCE] * n, "tone": tone,
                         "info_time": info})


def write_sample(directory: str | Path, *, seed: int = SAMPLE_SEED) -> list[Path]:
    """Write the embedded sample (daily bars per symbol + news + manifest) into ``directory``.

    Each file is written to a temporary name and renamed, and the manifest goes last, so a crash
    never leaves a sample that looks complete.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    src = SyntheticSource(seed=seed)
    written = []
    for symbol in src.universe:
        frame = src.load(symbol).frame().reset_index()
        frame["volume"] = frame["volume"].astype(np.int64)
        written.append(_atomic_parquet(frame, out / f"{symbol}.parquet"))
    written.append(_atomic_parquet(src.news().frame(), out / "news.parquet"))
    manifest = {"generator": "python -m tradesim.data.synthetic --write DIR", "seed": seed,
                "start": str(src.start), "end": str(src.end), "interval": "1d",
                "params": src.params.fingerprint(), "symbols": list(src.universe),
                "key": src.key}
    path = out / _SAMPLE_MANIFEST
    _atomic_write(path, (json.dumps(manifest, indent=2) + "\n").encode())
    return [*written, path]


def _atomic_parquet(frame: pd.DataFrame, path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False, compression="zstd")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def sample_dir() -> Path:
    """The embedded sample shipped with the package: the repository's ``data/sample``, packaged
    as ``tradesim/sample`` (the same files in a checkout and in an installed wheel)."""
    return Path(str(files("tradesim") / "sample"))


def load_sample(*, symbols: Sequence[str] | None = None, start: object | None = None,
                end: object | None = None, directory: str | Path | None = None) -> MarketData:
    """The offline default market: sample daily bars and news (from :func:`sample_dir` unless
    ``directory`` is given), optionally narrowed to ``symbols`` and ``[start, end]``."""
    folder = Path(directory) if directory is not None else sample_dir()
    manifest = json.loads((folder / _SAMPLE_MANIFEST).read_text())
    chosen = list(symbols) if symbols is not None else list(manifest["symbols"])
    unknown = [s for s in chosen if s not in manifest["symbols"]]
    if unknown:
        raise UnknownSymbolError(f"the sample in {folder} has no symbol(s) {', '.join(unknown)}; "
                                 f"it holds {', '.join(manifest['symbols'])}")
    meta = {"seed": manifest["seed"], "params": manifest["params"],
            "horizon": f"{manifest['start']}..{manifest['end']}"}
    lo, hi = _bounds(start, end)
    bars = {}
    for s in chosen:
        path = folder / f"{s}.parquet"
        frame = pd.read_parquet(path)
        if "time" not in frame.columns:
            raise DataFormatError("sample bars lack the time column; regenerate with "
                                  "python -m tradesim.data.synthetic --write data/sample",
                                  path=str(path), column="time")
        bars[s] = Bars.from_frame(frame.set_index("time"), symbol=s, interval="1d", adjusted=True,
                                  source=SyntheticSource.name, meta=meta).between(lo, hi)
    news = News.from_frame(pd.read_parquet(folder / "news.parquet"))
    keep = np.isin(news.symbol, chosen)
    if lo is not None:
        keep &= news.available_at >= lo
    if hi is not None:
        keep &= news.available_at <= hi
    return MarketData(bars, News(*(getattr(news, c)[keep] for c in NEWS_COLUMNS)))


def _main(argv: Sequence[str] | None = None) -> None:
    """``python -m tradesim.data.synthetic --write data/sample``: regenerate the embedded sample."""
    parser = argparse.ArgumentParser(prog="python -m tradesim.data.synthetic",
                                     description="Write the seeded synthetic sample data.")
    parser.add_argument("--write", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--seed", type=int, default=SAMPLE_SEED)
    args = parser.parse_args(argv)
    for path in write_sample(args.write, seed=args.seed):
        print(f"{path}  {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    _main()
