"""Hack monitors recorded with every run: the fingerprints of a gamed reward, from plain arrays.

High turnover and short holding times flag churning; peak leverage flags leverage maximising;
a large share of P&L from the top 1% of bars flags a result carried by a few lucky (or leaked)
bars; long/short asymmetry flags a sign error that pays one side; and the gap between the reward
an agent optimised in-sample and its hardened out-of-sample score flags overfitting to the reward.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tradesim.errors import ConfigError
from tradesim.rewards.metrics import TRADING_DAYS

MONITOR_NAMES: tuple[str, ...] = (
    "turnover", "mean_holding_bars", "peak_leverage", "top1pct_pnl_share",
    "pnl_without_top1pct", "long_pnl", "short_pnl", "long_short_asymmetry", "reward_gap",
)


def compute_monitors(*, equity: np.ndarray, weights: np.ndarray | None = None,
                     asset_returns: np.ndarray | None = None, pnl: np.ndarray | None = None,
                     trades: pd.DataFrame | None = None, in_sample_reward: float | None = None,
                     out_of_sample_score: float | None = None,
                     periods_per_year: float = TRADING_DAYS) -> dict[str, float]:
    """Every monitor of :data:`MONITOR_NAMES` (NaN where its inputs were not given).

    ``equity [T+1]`` starts with the opening equity; ``weights [T+1, N]`` are the book's weights
    at the same stamps; ``asset_returns [T, N]`` the symbols' returns over each bar; ``pnl [T]``
    the per-bar P&L (default: the equity change); ``trades`` the engine's closed trades (a
    ``bars_held`` column, preferred over weights for holding time). P&L figures are fractions
    of the opening equity so monitors compare across account sizes.
    """
    eq = _array(equity, "equity", ndim=1)
    if eq.shape[0] < 2 or not eq[0] > 0:
        raise ConfigError(f"equity needs at least 2 points starting positive, got {eq.shape[0]} "
                          f"point(s) starting at {eq[0] if eq.size else 'nothing'}")
    out = dict.fromkeys(MONITOR_NAMES, float("nan"))
    bar_pnl = np.diff(eq) if pnl is None else _array(pnl, "pnl", ndim=1)
    if bar_pnl.shape[0] != eq.shape[0] - 1:
        raise ConfigError(f"pnl has {bar_pnl.shape[0]} bars but equity has {eq.shape[0]} points; "
                          "pass one P&L per bar (len(equity) - 1)")
    out.update(_concentration(bar_pnl, eq[0]))
    if weights is not None:
        w = _array(weights, "weights", ndim=2)
        if w.shape[0] != eq.shape[0]:
            raise ConfigError(f"weights has {w.shape[0]} rows but equity has {eq.shape[0]} "
                              "points; pass the weights at every equity stamp")
        changes = np.abs(np.diff(w, axis=0, prepend=np.zeros((1, w.shape[1])))).sum(axis=1)
        out["turnover"] = float(changes.sum() / w.shape[0] * periods_per_year)
        out["peak_leverage"] = float(np.abs(w).sum(axis=1).max())
        out["mean_holding_bars"] = _mean_run_length(w)
        if asset_returns is not None:
            out.update(_long_short(w, _array(asset_returns, "asset_returns", ndim=2), eq))
    if trades is not None and len(trades):
        if "bars_held" not in trades.columns:
            raise ConfigError(f"trades frame lacks column 'bars_held' (has "
                              f"{', '.join(map(str, trades.columns))})")
        out["mean_holding_bars"] = float(trades["bars_held"].to_numpy(dtype=np.float64).mean())
    if in_sample_reward is not None and out_of_sample_score is not None:
        out["reward_gap"] = float(in_sample_reward - out_of_sample_score)
    return out


def _array(x: np.ndarray, name: str, *, ndim: int) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != ndim:
        raise ConfigError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        where = np.argwhere(bad)[0]
        raise ConfigError(f"{name}{where.tolist()} is {a[tuple(where)]}; monitors need finite values")
    return a


def _concentration(pnl: np.ndarray, start: float) -> dict[str, float]:
    """Share of the gains made in the best 1% of bars, and the P&L left without them."""
    k = max(1, math.ceil(0.01 * pnl.shape[0]))
    top = np.sort(pnl)[-k:]
    top = top[top > 0]
    gains = pnl[pnl > 0].sum()
    return {"top1pct_pnl_share": float(top.sum() / gains) if gains > 0 else 0.0,
            "pnl_without_top1pct": float((pnl.sum() - top.sum()) / start)}


def _mean_run_length(w: np.ndarray) -> float:
    """Mean length in bars of the runs in which a symbol's position keeps one non-zero sign."""
    sign = np.sign(np.where(np.abs(w) > 1e-12, w, 0.0))
    padded = np.vstack([np.zeros((1, w.shape[1])), sign, np.zeros((1, w.shape[1]))])
    starts = (padded[1:] != padded[:-1]) & (padded[1:] != 0)
    runs = int(starts.sum())
    held = int((sign != 0).sum())
    return held / runs if runs else 0.0


def _long_short(w: np.ndarray, asset_returns: np.ndarray, eq: np.ndarray) -> dict[str, float]:
    """P&L earned by the long and by the short side (fractions of opening equity)."""
    if asset_returns.shape != (w.shape[0] - 1, w.shape[1]):
        raise ConfigError(f"asset_returns has shape {asset_returns.shape}; expected "
                          f"{(w.shape[0] - 1, w.shape[1])} (one row per bar, one column per "
                          "symbol in weights)")
    contrib = w[:-1] * asset_returns * eq[:-1, None] / eq[0]
    long_pnl = float(contrib[w[:-1] > 0].sum())
    short_pnl = float(contrib[w[:-1] < 0].sum())
    total = abs(long_pnl) + abs(short_pnl)
    return {"long_pnl": long_pnl, "short_pnl": short_pnl,
            "long_short_asymmetry": (long_pnl - short_pnl) / total if total > 0 else 0.0}
