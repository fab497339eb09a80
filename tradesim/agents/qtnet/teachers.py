"""Demonstration teachers: per-bar target positions in [-1, 1] from classic causal strategies.

Each causal teacher's action at bar t uses bars <= t only (tests perturb the future to check).
:func:`hindsight_positions` looks one bar ahead; it exists only for training experiments,
behind ``TrainConfig.hindsight_teacher``, and never reaches features or evaluation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tradesim.agents.qtnet.features import day_ids, dual_thrust_lines

CAUSAL_TEACHERS: tuple[str, ...] = ("dual_thrust", "macd", "turtle")


def _hold_forward(signal: np.ndarray) -> np.ndarray:
    """Carry the last non-NaN signal forward along axis 0 (0 before the first)."""
    return pd.DataFrame(signal).ffill().fillna(0.0).to_numpy()


def dual_thrust_positions(*, time: np.ndarray, open: np.ndarray, high: np.ndarray,
                          low: np.ndarray, close: np.ndarray, k1: float = 0.5, k2: float = 0.5,
                          lookback_days: int = 4) -> np.ndarray:
    """Long above the upper line, short below the lower line, else keep the last side."""
    day = day_ids(time)
    out = np.empty_like(close, dtype=np.float64)
    for j in range(close.shape[1]):
        up, dn = dual_thrust_lines(open=open[:, j], high=high[:, j], low=low[:, j],
                                   close=close[:, j], day=day, k1=k1, k2=k2,
                                   lookback_days=lookback_days)
        c = close[:, j]
        out[:, j] = np.where(c > up, 1.0, np.where(c < dn, -1.0, np.nan))
    return _hold_forward(out)


def macd_positions(*, close: np.ndarray, fast: int = 12, slow: int = 26,
                   signal: int = 9) -> np.ndarray:
    """+1 while the MACD line is above its signal line, -1 below (recursive EMAs, causal)."""
    frame = pd.DataFrame(close)
    line = frame.ewm(span=fast, adjust=False).mean() - frame.ewm(span=slow, adjust=False).mean()
    sig = line.ewm(span=signal, adjust=False).mean()
    out = np.sign((line - sig).to_numpy())
    out[:slow] = 0.0
    return out


def turtle_positions(*, high: np.ndarray, low: np.ndarray, close: np.ndarray, entry: int = 20,
                     exit: int = 10) -> np.ndarray:
    """Donchian breakout: enter on a close beyond the prior ``entry``-bar extreme, leave on the
    opposite ``exit``-bar extreme."""
    hi, lo = pd.DataFrame(high), pd.DataFrame(low)
    up_in = hi.rolling(entry).max().shift(1).to_numpy()
    dn_in = lo.rolling(entry).min().shift(1).to_numpy()
    dn_out = lo.rolling(exit).min().shift(1).to_numpy()
    up_out = hi.rolling(exit).max().shift(1).to_numpy()
    pos = np.zeros_like(close, dtype=np.float64)
    cur = np.zeros(close.shape[1])
    with np.errstate(invalid="ignore"):
        for t in range(close.shape[0]):
            c = close[t]
            cur = np.where(c > up_in[t], 1.0, np.where(c < dn_in[t], -1.0, cur))
            cur = np.where((cur > 0) & (c < dn_out[t]), 0.0, cur)
            cur = np.where((cur < 0) & (c > up_out[t]), 0.0, cur)
            pos[t] = cur
    return pos


def hindsight_positions(*, open: np.ndarray) -> np.ndarray:
    """TRAINING-ONLY oracle: the side of the open(t+1) -> open(t+2) move a decision at t earns."""
    nxt = np.vstack([open[2:] / open[1:-1] - 1.0, np.zeros((2,) + open.shape[1:])])
    return np.sign(nxt)


def teacher_positions(*, time: np.ndarray, open: np.ndarray, high: np.ndarray, low: np.ndarray,
                      close: np.ndarray, allow_short: bool = True, hindsight: bool = False,
                      k1: float = 0.5, k2: float = 0.5, lookback_days: int = 4) -> np.ndarray:
    """All teachers' positions ``[K, T, N]`` (causal ones, then the hindsight one if asked)."""
    cols = [np.asarray(a, dtype=np.float64) for a in (open, high, low, close)]
    if cols[0].ndim == 1:
        cols = [a[:, None] for a in cols]
    o, h, lo, c = cols
    out = [dual_thrust_positions(time=time, open=o, high=h, low=lo, close=c, k1=k1, k2=k2,
                                 lookback_days=lookback_days),
           macd_positions(close=c), turtle_positions(high=h, low=lo, close=c)]
    if hindsight:
        out.append(hindsight_positions(open=o))
    stacked = np.stack(out)
    return stacked if allow_short else np.maximum(stacked, 0.0)
