"""Point-in-time indicators of the trend-forecasting role and the risk manager.

Every function reads only the closes it is given (the visible bars at decision time), so the
values at t never depend on a later bar.
"""

from __future__ import annotations

import math

import numpy as np

FEATURES: tuple[str, ...] = ("rsi14", "dev_sma20", "dist_high20", "vol20", "ret5", "ret20")


def rsi(close: np.ndarray, n: int = 14) -> float:
    """Wilder's RSI over the last ``n`` changes (NaN without ``n + 1`` closes)."""
    if close.shape[0] < n + 1:
        return math.nan
    diff = np.diff(close)
    gain, loss = np.clip(diff, 0, None), np.clip(-diff, 0, None)
    avg_g, avg_l = float(gain[:n].mean()), float(loss[:n].mean())
    for g, ls in zip(gain[n:], loss[n:]):  # Wilder smoothing over the rest of the window
        avg_g = (avg_g * (n - 1) + float(g)) / n
        avg_l = (avg_l * (n - 1) + float(ls)) / n
    if avg_l == 0.0:
        return 100.0 if avg_g > 0 else 50.0
    return 100.0 - 100.0 / (1.0 + avg_g / avg_l)


def trailing_vol(close: np.ndarray, n: int = 20) -> float:
    """Standard deviation of the last ``n`` simple returns (NaN without ``n + 1`` closes)."""
    if close.shape[0] < n + 1:
        return math.nan
    window = close[-(n + 1):]
    return float(np.std(np.diff(window) / window[:-1], ddof=1))


def features(close: np.ndarray) -> dict[str, float]:
    """The situation features at the last close: RSI-14, deviation from SMA-20, distance to the
    20-bar high (<= 0), 20-bar volatility and 5/20-bar returns. NaN where history is short."""
    out = dict.fromkeys(FEATURES, math.nan)
    if close.shape[0] >= 21:
        last = float(close[-1])
        sma = float(close[-20:].mean())
        out.update(rsi14=rsi(close[-60:]), dev_sma20=last / sma - 1.0,
                   dist_high20=last / float(close[-20:].max()) - 1.0,
                   vol20=trailing_vol(close), ret5=last / float(close[-6]) - 1.0,
                   ret20=last / float(close[-21]) - 1.0)
    return out


def situation_vector(feat: dict[str, float], *, news: float, report: float) -> np.ndarray:
    """The numeric situation used for retrieval: features scaled to comparable ranges."""
    vol = feat["vol20"]
    return np.array([
        (feat["rsi14"] - 50.0) / 25.0,
        feat["dev_sma20"] / 0.05,
        feat["dist_high20"] / 0.05,
        vol / 0.02 - 1.0,
        feat["ret5"] / 0.05,
        feat["ret20"] / 0.10,
        news,
        report,
    ], dtype=np.float64)
