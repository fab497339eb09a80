"""Performance metrics of a run: returns, risk, drawdowns, exposure, turnover, trades, alpha/beta.

Conventions (cross-checked against empyrical in tests/test_metrics.py):
- returns are simple per-bar returns of the equity curve; the first bar has none;
- CAGR compounds over ``n_returns / periods_per_year`` years (empyrical's ``annual_return``);
- volatility and Sharpe use the sample standard deviation (ddof=1);
- Sortino divides the mean excess return by the root-mean-square of the negative excess returns
  over *all* bars (downside deviation, not the std of the losing bars);
- ``risk_free`` is an annual rate, converted to a per-bar rate ``(1 + rf) ** (1 / ppy) - 1``;
- alpha is compounded from the mean per-bar residual, ``(1 + mean) ** ppy - 1``;
- max drawdown is negative (-0.25 = 25% below the running peak), measured from the first equity;
- turnover is two-sided: the sum over bars of ``sum |w_t - w_{t-1}|`` (entry from flat counts),
  annualised; pass the weights the agent targeted, since drifting held weights also count.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tradesim.errors import ConfigError

TRADING_DAYS = 252.0
_DAY_NS = 86_400 * 1_000_000_000
_EPS = 1e-12

METRIC_NAMES: tuple[str, ...] = (
    "start_equity", "end_equity", "total_return", "cagr", "volatility", "sharpe", "sortino",
    "calmar", "max_drawdown", "max_drawdown_bars", "max_drawdown_days", "best_bar", "worst_bar",
    "bars", "periods_per_year", "exposure_time", "mean_gross_exposure", "mean_net_exposure",
    "turnover", "trades", "win_rate", "profit_factor", "avg_trade_pnl", "avg_trade_return",
    "avg_bars_held", "benchmark_return", "benchmark_cagr", "alpha", "beta", "correlation",
    "tracking_error", "information_ratio",
)


def infer_periods_per_year(index: pd.Index) -> float:
    """Bars per year implied by the stamps: 252 for weekday daily bars, 365 with weekends,
    52 weekly, 12 monthly, and (median bars per trading day) x 252 for intraday bars."""
    stamps = _stamps_ns(index, what="index")
    if stamps.shape[0] < 3:
        raise ConfigError(f"cannot infer periods_per_year from {stamps.shape[0]} stamp(s); "
                          "pass periods_per_year explicitly (252 for daily bars)")
    gap_days = float(np.median(np.diff(stamps))) / _DAY_NS
    days = stamps // _DAY_NS
    # 1970-01-01 was a Thursday: (days + 3) % 7 is 5 on Saturday, 6 on Sunday; a 7-day market
    # has ~29% of its bars there, a stock's after-hours spill past midnight UTC only a few
    weekend = float(np.mean(((days + 3) % 7) >= 5)) > 0.15
    per_year_days = 365.0 if weekend else TRADING_DAYS
    if gap_days >= 300:
        return 1.0
    if gap_days >= 80:
        return 4.0
    if gap_days >= 25:
        return 12.0
    if gap_days >= 5:
        return 52.0
    if gap_days >= 0.75:
        return per_year_days
    _, per_day = np.unique(days, return_counts=True)
    return float(np.median(per_day)) * per_year_days


def returns_of(equity: pd.Series) -> pd.Series:
    """Simple per-bar returns of an equity (or price) curve; the first bar is dropped."""
    values = equity.to_numpy(dtype=np.float64)
    return pd.Series(values[1:] / values[:-1] - 1.0, index=equity.index[1:], name="return")


def drawdown_of(equity: pd.Series) -> pd.Series:
    """Drawdown at each bar as a (non-positive) fraction below the running peak."""
    values = equity.to_numpy(dtype=np.float64)
    return pd.Series(values / np.maximum.accumulate(values) - 1.0, index=equity.index,
                     name="drawdown")


def compute_metrics(*, equity: pd.Series, benchmark: pd.Series | None = None,
                    weights: pd.DataFrame | None = None, trades: pd.DataFrame | None = None,
                    periods_per_year: float | None = None,
                    risk_free: float = 0.0) -> dict[str, float]:
    """Every metric of :data:`METRIC_NAMES` for one equity curve (NaN where not computable).

    ``benchmark`` is a price or equity curve (aligned to ``equity`` by stamp), ``weights`` a
    time x symbol frame of weights, ``trades`` the engine's closed trades (``pnl``, ``return``,
    ``bars_held`` columns). ``periods_per_year`` is inferred from the stamps when not given.
    """
    eq = _clean_equity(equity, what="equity")
    ppy = (float(periods_per_year) if periods_per_year is not None
           else infer_periods_per_year(eq.index))
    if not (ppy > 0 and math.isfinite(ppy)):
        raise ConfigError(f"periods_per_year must be a positive number, got {periods_per_year!r}")
    rf = (1.0 + risk_free) ** (1.0 / ppy) - 1.0
    values = eq.to_numpy(dtype=np.float64)
    out = dict.fromkeys(METRIC_NAMES, float("nan"))
    out.update(_return_metrics(values, ppy, rf))
    out.update(_drawdown_metrics(values, _stamps_or_none(eq.index)))
    out["calmar"] = (out["cagr"] / -out["max_drawdown"] if out["max_drawdown"] < 0
                     else float("nan"))
    if weights is not None and len(weights):
        out.update(_exposure_metrics(weights, ppy))
    if trades is not None and len(trades):
        out.update(_trade_metrics(trades))
    if benchmark is not None:
        out.update(_benchmark_metrics(eq, _clean_equity(benchmark, what="benchmark"), ppy, rf))
    return out


def _clean_equity(series: pd.Series, *, what: str) -> pd.Series:
    """Check a curve is long enough, finite and positive; names the first bad stamp."""
    if not isinstance(series, pd.Series):
        raise ConfigError(f"{what} must be a pandas Series indexed by time, got "
                          f"{type(series).__name__}")
    if len(series) < 2:
        raise ConfigError(f"{what} has {len(series)} point(s); metrics need at least 2")
    values = series.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ConfigError(f"{what} at {series.index[i]} is {values[i]}; equity must be finite "
                          "and positive (a run that went bust ends at its liquidation bar)")
    return series


def _stamps_ns(index: pd.Index, *, what: str) -> np.ndarray:
    if not isinstance(index, pd.DatetimeIndex):
        raise ConfigError(f"{what} is not a DatetimeIndex ({type(index).__name__}); pass "
                          "periods_per_year explicitly or index the series by time")
    idx = index.tz_convert("UTC").tz_localize(None) if index.tz is not None else index
    return idx.to_numpy(dtype="datetime64[ns]").astype(np.int64)


def _stamps_or_none(index: pd.Index) -> np.ndarray | None:
    return _stamps_ns(index, what="index") if isinstance(index, pd.DatetimeIndex) else None


def _return_metrics(values: np.ndarray, ppy: float, rf: float) -> dict[str, float]:
    rets = values[1:] / values[:-1] - 1.0
    n = rets.shape[0]
    total = values[-1] / values[0] - 1.0
    excess = rets - rf
    std = float(np.std(excess, ddof=1)) if n > 1 else float("nan")
    downside = float(np.sqrt(np.mean(np.minimum(excess, 0.0) ** 2)))
    mean_excess = float(np.mean(excess))
    return {
        "start_equity": float(values[0]), "end_equity": float(values[-1]),
        "total_return": float(total),
        "cagr": float((values[-1] / values[0]) ** (ppy / n) - 1.0),
        "volatility": float(np.std(rets, ddof=1) * math.sqrt(ppy)) if n > 1 else float("nan"),
        "sharpe": mean_excess / std * math.sqrt(ppy) if std > _EPS else float("nan"),
        "sortino": (mean_excess * ppy / (downside * math.sqrt(ppy)) if downside > _EPS
                    else float("nan")),
        "best_bar": float(rets.max()), "worst_bar": float(rets.min()),
        "bars": float(values.shape[0]), "periods_per_year": ppy,
    }


def _drawdown_metrics(values: np.ndarray, stamps: np.ndarray | None) -> dict[str, float]:
    """Deepest drawdown and the longest stretch from a peak to its recovery (or the end)."""
    peak = np.maximum.accumulate(values)
    dd = values / peak - 1.0
    idx = np.arange(values.shape[0])
    at_high = values >= peak
    peak_idx = np.maximum.accumulate(np.where(at_high, idx, 0))
    # an episode ends at the last underwater bar (still open) or at the bar that regains the peak
    under = ~at_high
    ends = idx[under]
    starts = peak_idx[under]
    recovered = np.flatnonzero(at_high[1:] & under[:-1]) + 1
    ends = np.concatenate([ends, recovered])
    starts = np.concatenate([starts, peak_idx[recovered - 1]])
    out = {"max_drawdown": float(dd.min()), "max_drawdown_bars": 0.0,
           "max_drawdown_days": 0.0 if stamps is not None else float("nan")}
    if ends.shape[0]:
        out["max_drawdown_bars"] = float((ends - starts).max())
        if stamps is not None:
            out["max_drawdown_days"] = float((stamps[ends] - stamps[starts]).max() / _DAY_NS)
    return out


def _exposure_metrics(weights: pd.DataFrame, ppy: float) -> dict[str, float]:
    w = np.nan_to_num(weights.to_numpy(dtype=np.float64), nan=0.0)
    gross = np.abs(w).sum(axis=1)
    changes = np.abs(np.diff(w, axis=0, prepend=np.zeros((1, w.shape[1])))).sum(axis=1)
    return {
        "exposure_time": float(np.mean(gross > 1e-9)),
        "mean_gross_exposure": float(gross.mean()),
        "mean_net_exposure": float(w.sum(axis=1).mean()),
        "turnover": float(changes.sum() / w.shape[0] * ppy),
    }


def _trade_metrics(trades: pd.DataFrame) -> dict[str, float]:
    if "pnl" not in trades.columns:
        have = ", ".join(map(str, trades.columns))
        raise ConfigError(f"trades frame lacks column 'pnl' (has {have}); "
                          "expected symbol, entry_time, exit_time, quantity, entry_price, "
                          "exit_price, pnl, return, bars_held")
    pnl = trades["pnl"].to_numpy(dtype=np.float64)
    gains, losses = pnl[pnl > 0].sum(), -pnl[pnl < 0].sum()
    out = {
        "trades": float(pnl.shape[0]),
        "win_rate": float(np.mean(pnl > 0)),
        "profit_factor": (float(gains / losses) if losses > 0
                          else (float("inf") if gains > 0 else float("nan"))),
        "avg_trade_pnl": float(pnl.mean()),
    }
    if "return" in trades.columns:
        out["avg_trade_return"] = float(trades["return"].to_numpy(dtype=np.float64).mean())
    if "bars_held" in trades.columns:
        out["avg_bars_held"] = float(trades["bars_held"].to_numpy(dtype=np.float64).mean())
    return out


def _benchmark_metrics(eq: pd.Series, bench: pd.Series, ppy: float, rf: float) -> dict[str, float]:
    """Alpha/beta (OLS of excess returns), correlation, tracking error, information ratio."""
    common = eq.index.intersection(bench.index)
    if len(common) < 3:
        raise ConfigError(f"benchmark shares {len(common)} stamp(s) with equity; alpha/beta "
                          "need at least 3 (align the benchmark to the run's bars)")
    r = returns_of(eq.loc[common]).to_numpy()
    b = returns_of(bench.loc[common]).to_numpy()
    bvals = bench.loc[common].to_numpy(dtype=np.float64)
    out = {"benchmark_return": float(bvals[-1] / bvals[0] - 1.0),
           "benchmark_cagr": float((bvals[-1] / bvals[0]) ** (ppy / b.shape[0]) - 1.0)}
    xr, xb = r - rf, b - rf
    xb_c = xb - xb.mean()
    var_b = float(np.mean(xb_c ** 2))
    if var_b < 1e-30:
        return out
    beta = float(np.mean(xb_c * xr) / var_b)
    active = r - b
    te = float(np.std(active, ddof=1))
    std_r = float(np.std(r))
    out.update({
        "beta": beta,
        "alpha": float((1.0 + np.mean(xr - beta * xb)) ** ppy - 1.0),
        "correlation": (float(np.mean(xb_c * (r - r.mean())) / math.sqrt(var_b) / std_r)
                        if std_r > _EPS else float("nan")),
        "tracking_error": te * math.sqrt(ppy),
        "information_ratio": (float(active.mean() / te * math.sqrt(ppy)) if te > _EPS
                              else float("nan")),
    })
    return out
