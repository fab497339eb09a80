"""Rule-based baseline agents: the reference policies every learning agent must beat.

Each agent decides from the point-in-time view only, touching at most its last ``lookback``
bars per symbol, and offers :meth:`target_weights`, the same decisions computed for a whole
:class:`MarketData` at once (the engine's vectorised fast path). In that frame a row holds the
weights decided at that bar's end; NaN means "no order, keep the position" (the same as a
symbol absent from ``Decision.weights``). Both paths share one signal function per agent, so they
agree exactly; tests/test_baselines.py checks it.
"""

from __future__ import annotations

import math
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import Field

from tradesim.contracts import AgentParams, BaseAgent, Decision, Observation, RunContext
from tradesim.data.bars import to_utc_stamp
from tradesim.data.view import MarketData
from tradesim.errors import ConfigError

_SUM = np.add.reduce
_DAY_NS = 86_400 * 1_000_000_000
_HOUR_NS = 3_600 * 1_000_000_000


def _require(ok: bool, name: str, value: object, rule: str) -> None:
    if not ok:
        raise ConfigError(f"parameter {name}={value!r} is invalid: {rule}")


def _aligned(data: MarketData, values: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per-symbol values (one per own bar) laid on the union timeline; NaN before a symbol starts.

    At each stamp a symbol shows the value of its latest bar ending at or before it, exactly as
    a point-in-time view would.
    """
    timeline = data.timeline()
    cols = {}
    for symbol, per_bar in values.items():
        pos = np.searchsorted(data.full(symbol).time, timeline, "right") - 1
        col = np.full(timeline.shape[0], np.nan)
        col[pos >= 0] = per_bar[pos[pos >= 0]]
        cols[symbol] = col
    index = pd.DatetimeIndex(timeline, name="time").tz_localize("UTC")
    return pd.DataFrame(cols, index=index, columns=list(values))


def _windowed(close: np.ndarray, window: int, fn: Any) -> np.ndarray:
    """``fn`` over every trailing window of ``close`` (NaN where history is short), shape (n,)."""
    out = np.full(close.shape[0], np.nan)
    if close.shape[0] >= window:
        out[window - 1:] = fn(sliding_window_view(close, window))
    return out


class _WindowSignalAgent(BaseAgent):
    """An agent whose per-symbol weight is a function of its last ``lookback`` closes, over 1/N."""

    def _signal(self, windows: np.ndarray) -> np.ndarray:
        """Raw per-symbol weight in [-max, max] for each row of closes (n, lookback)."""
        raise NotImplementedError

    def _last_signal(self, close: np.ndarray) -> float:
        """:meth:`_signal` of one full window (subclasses add a scalar twin where it pays)."""
        return float(self._signal(close[None, :])[0])

    _signals: dict[str, float] | None = None  # per-symbol signal at the previous decision
    _time: np.datetime64 | None = None
    max_gross = math.inf  # the book's gross weight is scaled down to this when above it

    def decide(self, obs: Observation) -> Decision:
        """Re-target the whole book only when some symbol's signal changes (a cross): between
        changes positions drift freely instead of being trimmed back to 1/N every bar."""
        self._time = obs.time
        lookback, market = self.lookback, obs.market
        signals = {}
        for symbol in obs.universe:
            close = market.bars(symbol, lookback=lookback).close
            if close.shape[0]:  # no bar yet: nothing to say about it
                signals[symbol] = self._last_signal(close) if close.shape[0] == lookback else 0.0
        if signals == (self._signals or {}):
            return Decision.hold(self.name)
        self._signals = signals
        n = len(obs.universe)
        weights = {s: v / n for s, v in signals.items()}
        gross = 0.0
        for w in weights.values():
            gross += abs(w)
        if gross > self.max_gross:
            scale = self.max_gross / gross
            weights = {s: w * scale for s, w in weights.items()}
        return Decision(weights=weights, rationale=self.name)

    def target_weights(self, data: MarketData, *, start: object | None = None) -> pd.DataFrame:
        """Weights decided at every bar end of ``data`` (time x symbol; NaN = hold), at once.

        The first decision at or after ``start`` (a run's first bar) states the whole book, as
        a fresh agent does; earlier rows are warm-up history.
        """
        per_symbol = {s: np.nan_to_num(_windowed(data.full(s).close, self.lookback, self._signal))
                      for s in data.symbols}
        signals = _aligned(data, per_symbol)  # NaN before a symbol's first bar
        before = signals.shift(1)
        unchanged = (signals.eq(before) | (signals.isna() & before.isna())).all(axis=1)
        live = _from(signals.index, start)
        if live.any():
            first = int(np.argmax(live))
            unchanged.iloc[first] = bool(signals.iloc[first].isna().all())
        weights = signals.where(~unchanged) / len(data.symbols)
        if math.isfinite(self.max_gross):  # the same scaling as decide, summed in its order
            size = np.nan_to_num(np.abs(weights.to_numpy()))
            gross = np.zeros(len(size))
            for j in range(size.shape[1]):
                gross = gross + size[:, j]
            over = gross > self.max_gross
            scale = np.ones(len(size))
            scale[over] = self.max_gross / gross[over]
            weights = weights.mul(scale, axis=0)  # x 1.0 where not over: unchanged
        return weights

    def start(self, context: RunContext) -> None:
        """A new run: forget the previous run's signals."""
        super().start(context)
        self._signals, self._time = None, None

    def state(self) -> dict[str, Any]:
        return {"signals": self._signals,
                "time": None if self._time is None else str(self._time)}

    def load_state(self, state: dict[str, Any]) -> None:
        self._signals = state.get("signals")
        t = state.get("time")
        self._time = None if t is None else np.datetime64(t, "ns")


class SmaCross(_WindowSignalAgent):
    """Long while the fast simple moving average of closes is above the slow one (short below,
    when ``allow_short``)."""

    name = "sma_cross"

    class Params(AgentParams):
        fast: int = Field(10, ge=1, description="bars in the fast average")
        slow: int = Field(30, ge=2, description="bars in the slow average (> fast)")
        allow_short: bool = Field(False, description="short while fast < slow")

    def __init__(self, **params: Any) -> None:
        p = self._configure(params)
        _require(p.slow > p.fast, "slow", p.slow,
                 f"a whole number of bars greater than fast={p.fast}")
        self.fast, self.slow, self.allow_short = p.fast, p.slow, p.allow_short
        self.lookback = p.slow

    def _signal(self, windows: np.ndarray) -> np.ndarray:
        fast = windows[:, -self.fast:].mean(axis=1)
        slow = windows.mean(axis=1)
        return np.where(fast > slow, 1.0, np.where((fast < slow) & self.allow_short, -1.0, 0.0))

    def _last_signal(self, close: np.ndarray) -> float:
        # the same sums and divisions as the mean above (pairwise sum over each window)
        fast = float(_SUM(close[-self.fast:])) / self.fast
        slow = float(_SUM(close)) / self.slow
        return 1.0 if fast > slow else -1.0 if fast < slow and self.allow_short else 0.0


def _ema_weights(span: int) -> np.ndarray:
    """Finite-window EMA weights (oldest first) over 6 x span bars, normalised to sum 1.

    The truncated tail weighs (1 - 2/(span+1)) ** (6 span) ~ e^-12 of the full EMA, so this equals
    the textbook recursive EMA to ~1e-5 while depending only on a fixed trailing window.
    """
    alpha = 2.0 / (span + 1.0)
    w = alpha * (1.0 - alpha) ** np.arange(6 * span)[::-1]
    return w / w.sum()


class Macd(_WindowSignalAgent):
    """Long while the MACD line (EMA fast - EMA slow) is above its signal line (short below,
    when ``allow_short``); EMAs are finite-window so each decision needs ``lookback`` bars."""

    name = "macd"

    class Params(AgentParams):
        fast: int = Field(12, ge=1, description="span of the fast EMA")
        slow: int = Field(26, ge=2, description="span of the slow EMA (> fast)")
        signal: int = Field(9, ge=1, description="span of the signal line's EMA")
        allow_short: bool = Field(False, description="short while MACD < signal")

    def __init__(self, **params: Any) -> None:
        p = self._configure(params)
        fast, slow, signal = p.fast, p.slow, p.signal
        _require(slow > fast, "slow", slow, f"a whole number of bars greater than fast={fast}")
        self.fast, self.slow, self.signal, self.allow_short = fast, slow, signal, p.allow_short
        self._w_fast, self._w_slow = _ema_weights(fast), _ema_weights(slow)
        self._w_signal = _ema_weights(signal)
        self.lookback = self._w_slow.shape[0] + self._w_signal.shape[0] - 1

    def _signal(self, windows: np.ndarray) -> np.ndarray:
        n_slow, n_fast = self._w_slow.shape[0], self._w_fast.shape[0]
        # MACD line at each of the last n_sig bars of every window: (rows, n_sig)
        slow_win = sliding_window_view(windows, n_slow, axis=1)
        macd = (np.einsum("rkj,j->rk", slow_win[:, :, -n_fast:], self._w_fast)
                - np.einsum("rkj,j->rk", slow_win, self._w_slow))
        line = macd[:, -1]
        signal = np.einsum("rk,k->r", macd, self._w_signal)
        return np.where(line > signal, 1.0,
                        np.where((line < signal) & self.allow_short, -1.0, 0.0))


class TimeSeriesMomentum(_WindowSignalAgent):
    """Sign of the return over ``lookback`` bars, sized to ``vol_target`` annualised volatility
    (estimated over the last ``vol_window`` returns) and capped at ``max_leverage`` per symbol."""

    name = "momentum"

    class Params(AgentParams):
        lookback: int = Field(252, ge=1, description="bars the trend return spans")
        vol_target: float | None = Field(0.15, gt=0, description="annual volatility per symbol "
                                         "(None: unit positions)")
        vol_window: int = Field(60, ge=2, description="returns in the volatility estimate")
        max_leverage: float = Field(2.0, gt=0, description="cap per symbol")
        max_gross: float = Field(1.0, gt=0, description="cap on the book's gross weight (the "
                                 "account's max_leverage); above it every weight scales down")
        periods_per_year: float = Field(252.0, gt=0, description="bars per year")
        allow_short: bool = Field(False, description="short a falling trend")

    def __init__(self, **params: Any) -> None:
        p = self._configure(params)
        self.horizon, self.vol_target, self.vol_window = p.lookback, p.vol_target, p.vol_window
        self.max_leverage, self.periods_per_year = p.max_leverage, p.periods_per_year
        self.allow_short, self.max_gross = p.allow_short, p.max_gross
        self.lookback = max(p.lookback, p.vol_window) + 1

    def _signal(self, windows: np.ndarray) -> np.ndarray:
        trend = windows[:, -1] / windows[:, -1 - self.horizon] - 1.0
        direction = np.where(trend > 0, 1.0, np.where((trend < 0) & self.allow_short, -1.0, 0.0))
        if self.vol_target is None:
            return direction
        tail = windows[:, -self.vol_window - 1:]
        vol = np.std(tail[:, 1:] / tail[:, :-1] - 1.0, axis=1, ddof=1) * math.sqrt(
            self.periods_per_year)
        with np.errstate(divide="ignore"):
            size = np.minimum(self.vol_target / vol, self.max_leverage)
        return direction * size


class BuyAndHold(BaseAgent):
    """Buy 1/N of each symbol at the first decision where all have data, then never trade."""

    name = "buy_and_hold"
    lookback = 1

    def __init__(self, **params: Any) -> None:
        self._configure(params)
        self._entered: np.datetime64 | None = None

    def start(self, context: RunContext) -> None:
        """A new run: enter again."""
        super().start(context)
        self._entered = None

    def decide(self, obs: Observation) -> Decision:
        if self._entered is None and all(obs.market.count(s) for s in obs.universe):
            self._entered = obs.time
            return Decision(weights={s: 1.0 / len(obs.universe) for s in obs.universe},
                            rationale="enter: 1/N buy and hold")
        return Decision.hold()

    def target_weights(self, data: MarketData, *, start: object | None = None) -> pd.DataFrame:
        """1/N at the first bar (at or after ``start``) where all symbols have data, NaN after."""
        frame = _aligned(data, {s: np.ones(len(data.full(s))) for s in data.symbols})
        ready = frame.notna().all(axis=1).to_numpy() & _from(frame.index, start)
        out = pd.DataFrame(np.nan, index=frame.index, columns=frame.columns)
        if ready.any():
            out.iloc[int(np.argmax(ready))] = 1.0 / len(data.symbols)
        return out

    def state(self) -> dict[str, Any]:
        return {"entered": None if self._entered is None else str(self._entered)}

    def load_state(self, state: dict[str, Any]) -> None:
        entered = state.get("entered")
        self._entered = None if entered is None else np.datetime64(entered, "ns")


class EqualWeight(BaseAgent):
    """1/N of equity in every symbol with data, rebalanced at the first decision and every
    ``every`` bars after it (holding in between)."""

    name = "equal_weight"
    lookback = 1

    class Params(AgentParams):
        every: int = Field(21, ge=1, description="bars between rebalances (21: about monthly "
                           "on daily bars)")

    def __init__(self, **params: Any) -> None:
        self.every = self._configure(params).every
        self._steps = 0
        self._last: np.datetime64 = np.datetime64("NaT", "ns")

    def start(self, context: RunContext) -> None:
        """A new run: restart the schedule."""
        super().start(context)
        self._steps, self._last = 0, np.datetime64("NaT", "ns")

    def decide(self, obs: Observation) -> Decision:
        self._last = obs.time
        step, self._steps = self._steps, self._steps + 1
        if step % self.every:
            return Decision.hold()
        live = [s for s in obs.universe if obs.market.count(s)]
        return Decision(weights={s: 1.0 / len(live) for s in live}, rebalance_missing=True,
                        rationale=f"rebalance 1/{len(live)}")

    def target_weights(self, data: MarketData, *, start: object | None = None) -> pd.DataFrame:
        """1/N rows every ``every`` bars from ``start`` (0 where no data yet), NaN between."""
        live = _aligned(data, {s: np.ones(len(data.full(s))) for s in data.symbols}).notna()
        rows = np.flatnonzero(_from(live.index, start))[:: self.every]
        out = pd.DataFrame(np.nan, index=live.index, columns=live.columns)
        mask = live.to_numpy()[rows]
        out.iloc[rows] = np.where(mask, 1.0 / np.maximum(mask.sum(axis=1, keepdims=True), 1), 0.0)
        return out

    def state(self) -> dict[str, Any]:
        return {"steps": self._steps, "last": None if np.isnat(self._last) else str(self._last)}

    def load_state(self, state: dict[str, Any]) -> None:
        self._steps = int(state.get("steps", 0))
        last = state.get("last")
        self._last = np.datetime64("NaT", "ns") if last is None else np.datetime64(last, "ns")


def _from(index: pd.DatetimeIndex, start: object | None) -> np.ndarray:
    """Boolean mask of stamps at or after ``start`` (all True when None)."""
    stamps = index.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    return np.ones(stamps.shape[0], bool) if start is None else stamps >= to_utc_stamp(start)


class DualThrust(BaseAgent):
    """Dual Thrust breakout for intraday bars.

    Range = max(HH - LC, HC - LL) over the last ``lookback_days`` *completed* days; go long when
    a close breaks today's open + k1 x Range, short (or flat, without ``allow_short``) below
    today's open - k2 x Range, else keep the day's last signal. With ``flat_at_close`` the agent
    is flat from ``close_time`` (exchange local time) and starts each day flat; without it,
    positions carry overnight (held until the next breakout). Days start at
    ``day_start_utc_hour`` UTC (6 suits US equities including extended hours).
    """

    name = "dual_thrust"

    class Params(AgentParams):
        k1: float = Field(0.5, gt=0, description="upper band: open + k1 x range")
        k2: float = Field(0.5, gt=0, description="lower band: open - k2 x range")
        lookback_days: int = Field(4, ge=1, description="completed days in the range")
        bars_per_day: int = Field(1440, ge=1, description="most bars one day can hold "
                                  "(1440 for 1-minute bars)")
        flat_at_close: bool = Field(True, description="flat from close_time, each day flat")
        close_time: str = Field("15:55", description="HH:MM exchange local time")
        timezone: str = Field("America/New_York", description="IANA zone of close_time")
        day_start_utc_hour: float = Field(6.0, ge=0, lt=24, description="UTC hour days start")
        allow_short: bool = Field(True, description="short below the lower band")

    def __init__(self, **params: Any) -> None:
        p = self._configure(params)
        k1, k2, lookback_days, bars_per_day = p.k1, p.k2, p.lookback_days, p.bars_per_day
        flat_at_close, close_time, timezone = p.flat_at_close, p.close_time, p.timezone
        day_start_utc_hour, allow_short = p.day_start_utc_hour, p.allow_short
        try:
            self._close_time, self._tz = dtime.fromisoformat(close_time), ZoneInfo(timezone)
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"parameter close_time={close_time!r} / timezone={timezone!r} is "
                              f"invalid ({exc}); use 'HH:MM' and an IANA zone such as "
                              "'America/New_York'") from None
        self.k1, self.k2, self.lookback_days = float(k1), float(k2), lookback_days
        self.flat_at_close, self.allow_short = bool(flat_at_close), bool(allow_short)
        self.close_time, self.timezone = close_time, timezone
        self.day_start_utc_hour = day_start_utc_hour
        self._exits: dict[int, int] = {}
        # the current day plus N earlier days hold at most (N + 1) x bars_per_day bars
        self.lookback = (lookback_days + 1) * bars_per_day

    def _days(self, time: np.ndarray) -> np.ndarray:
        return (time.astype(np.int64) - int(self.day_start_utc_hour * _HOUR_NS)) // _DAY_NS

    def _exit_ns(self, day: int) -> int:
        """UTC ns of ``close_time`` on the local date of trading day ``day`` (memoised)."""
        if day not in self._exits:
            self._exits[day] = self._local_close_ns(day)
        return self._exits[day]

    def _local_close_ns(self, day: int) -> int:
        noon = pd.Timestamp(day * _DAY_NS + int(self.day_start_utc_hour * _HOUR_NS) + 12 * _HOUR_NS,
                            tz="UTC").tz_convert(self._tz)
        local = pd.Timestamp.combine(noon.date(), self._close_time).tz_localize(self._tz)
        return int(local.tz_convert("UTC").value)

    def _path(self, bars: Any, days: np.ndarray, first: int, last: int, rng: float) -> np.ndarray:
        """Signal at rows first..last-1 of one day: +1, -1/0 on a break, NaN otherwise."""
        anchor = bars.open[first]
        close = bars.close[first:last]
        up, down = anchor + self.k1 * rng, anchor - self.k2 * rng
        raw = np.where(close > up, 1.0, np.where(close < down, -1.0 if self.allow_short else 0.0,
                                                 np.nan))
        if self.flat_at_close:
            raw[bars.time[first:last].astype(np.int64) >= self._exit_ns(int(days[first]))] = 0.0
        return raw

    def _range(self, bars: Any, starts: np.ndarray, j: int) -> float:
        """Dual Thrust range over the ``lookback_days`` days before day number ``j``."""
        lo_i, hi_i = starts[j - self.lookback_days], starts[j]
        high, low, close = bars.high[lo_i:hi_i], bars.low[lo_i:hi_i], bars.close[lo_i:hi_i]
        day_close = close[np.r_[starts[j - self.lookback_days + 1: j + 1] - lo_i - 1]]
        return float(max(high.max() - day_close.min(), day_close.max() - low.min()))

    def _day_weights(self, bars: Any, days: np.ndarray, starts: np.ndarray, j: int,
                     end: int) -> np.ndarray:
        """Position in force after each bar of day ``j`` (up to row ``end``), NaN = hold."""
        raw = self._path(bars, days, starts[j], end, self._range(bars, starts, j))
        last = np.maximum.accumulate(np.where(np.isnan(raw), -1, np.arange(raw.shape[0])))
        filled = np.where(last >= 0, raw[np.maximum(last, 0)], np.nan)
        return np.where(np.isnan(filled), 0.0, filled) if self.flat_at_close else filled

    def decide(self, obs: Observation) -> Decision:
        n = len(obs.universe)
        weights: dict[str, float] = {}
        for symbol in obs.universe:
            bars = obs.bars(symbol, lookback=self.lookback)
            if not len(bars):
                continue
            days = self._days(bars.time)
            starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
            j = starts.shape[0] - 1
            if j < self.lookback_days:
                weights[symbol] = 0.0
                continue
            w = self._day_weights(bars, days, starts, j, len(bars))[-1]
            if not np.isnan(w):
                weights[symbol] = float(w) / n
        return Decision(weights=weights, rationale="dual thrust")

    def target_weights(self, data: MarketData) -> pd.DataFrame:
        """Weights decided at every bar end of ``data`` (time x symbol), NaN = hold."""
        per_symbol = {}
        for symbol in data.symbols:
            bars = data.full(symbol)
            days = self._days(bars.time)
            starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
            bounds = np.r_[starts, len(bars)]
            out = np.zeros(len(bars))
            for j in range(self.lookback_days, starts.shape[0]):
                out[starts[j]:bounds[j + 1]] = self._day_weights(bars, days, starts, j,
                                                                 bounds[j + 1])
            per_symbol[symbol] = out
        return _aligned(data, per_symbol) / len(data.symbols)
