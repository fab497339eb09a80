"""Metrics against empyrical (an independent implementation) on real and synthetic returns."""

from __future__ import annotations

from pathlib import Path

import empyrical
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradesim.errors import ConfigError
from tradesim.rewards.metrics import (
    METRIC_NAMES,
    compute_metrics,
    drawdown_of,
    infer_periods_per_year,
)

REL = 1e-9


def _spy_close(shared_data: Path) -> pd.Series:
    frame = pd.read_csv(shared_data / "daily" / "spy.us.txt", parse_dates=["Date"])
    index = pd.DatetimeIndex(frame["Date"]).tz_localize("UTC") + pd.Timedelta(hours=21)
    return pd.Series(frame["Close"].to_numpy(dtype=float), index=index, name="spy")


def _qqq_close(shared_data: Path) -> pd.Series:
    frame = pd.read_csv(shared_data / "daily" / "qqq.us.txt", parse_dates=["Date"])
    index = pd.DatetimeIndex(frame["Date"]).tz_localize("UTC") + pd.Timedelta(hours=21)
    return pd.Series(frame["Close"].to_numpy(dtype=float), index=index, name="qqq")


@pytest.fixture
def synthetic_equity() -> pd.Series:
    rng = np.random.default_rng(7)
    index = pd.bdate_range("2015-01-01", periods=800, tz="UTC") + pd.Timedelta(hours=21)
    rets = rng.normal(0.0004, 0.012, size=len(index) - 1)
    return pd.Series(100_000 * np.concatenate([[1.0], np.cumprod(1 + rets)]), index=index)


def _check_against_empyrical(equity: pd.Series, bench: pd.Series | None, *, ppy: float,
                             risk_free: float) -> None:
    """Every return metric equals empyrical's with the conventions documented in metrics.py."""
    m = compute_metrics(equity=equity, benchmark=bench, periods_per_year=ppy, risk_free=risk_free)
    r = equity.pct_change().iloc[1:]
    rf = (1 + risk_free) ** (1 / ppy) - 1  # empyrical takes a per-bar rate; ours is annual
    assert m["total_return"] == pytest.approx(empyrical.cum_returns_final(r), rel=REL)
    assert m["cagr"] == pytest.approx(empyrical.annual_return(r, annualization=ppy), rel=REL)
    assert m["volatility"] == pytest.approx(empyrical.annual_volatility(r, annualization=ppy),
                                            rel=REL)
    assert m["sharpe"] == pytest.approx(
        empyrical.sharpe_ratio(r, risk_free=rf, annualization=ppy), rel=REL)
    assert m["sortino"] == pytest.approx(
        empyrical.sortino_ratio(r, required_return=rf, annualization=ppy), rel=REL)
    assert m["max_drawdown"] == pytest.approx(empyrical.max_drawdown(r), rel=REL)
    assert m["calmar"] == pytest.approx(empyrical.calmar_ratio(r, annualization=ppy), rel=REL)
    if bench is not None:
        common = equity.index.intersection(bench.index)
        b = bench.loc[common].pct_change().iloc[1:]
        rr = equity.loc[common].pct_change().iloc[1:]
        alpha, beta = empyrical.alpha_beta(rr, b, risk_free=rf, annualization=ppy)
        assert m["beta"] == pytest.approx(beta, rel=1e-7)
        assert m["alpha"] == pytest.approx(alpha, rel=1e-7, abs=1e-12)
        assert m["correlation"] == pytest.approx(np.corrcoef(rr, b)[0, 1], rel=1e-9)


def test_metrics_match_empyrical_on_real_spy(shared_data: Path) -> None:
    spy = _spy_close(shared_data)
    qqq = _qqq_close(shared_data)
    _check_against_empyrical(spy, qqq, ppy=252, risk_free=0.0)
    _check_against_empyrical(spy, qqq, ppy=252, risk_free=0.02)


def test_metrics_match_empyrical_on_synthetic(synthetic_equity: pd.Series) -> None:
    bench = synthetic_equity.iloc[::-1].reset_index(drop=True)
    bench.index = synthetic_equity.index
    _check_against_empyrical(synthetic_equity, bench, ppy=252, risk_free=0.03)
    _check_against_empyrical(synthetic_equity, None, ppy=365, risk_free=0.0)


def test_beta_of_a_levered_copy_is_the_leverage(synthetic_equity: pd.Series) -> None:
    rets = synthetic_equity.pct_change().fillna(0.0)
    levered = 100.0 * (1 + 2 * rets).cumprod()
    m = compute_metrics(equity=levered, benchmark=synthetic_equity)
    assert m["beta"] == pytest.approx(2.0, rel=1e-12)
    assert m["alpha"] == pytest.approx(0.0, abs=1e-12)
    assert m["correlation"] == pytest.approx(1.0, rel=1e-12)


def test_periods_per_year_inferred_from_stamps(synthetic_equity: pd.Series,
                                               shared_data: Path) -> None:
    assert infer_periods_per_year(synthetic_equity.index) == 252
    assert infer_periods_per_year(pd.date_range("2020-01-01", periods=50, freq="D",
                                                tz="UTC")) == 365
    assert infer_periods_per_year(pd.date_range("2020-01-03", periods=50, freq="W-FRI")) == 52
    assert infer_periods_per_year(pd.date_range("2020-01-31", periods=24, freq="ME")) == 12
    minute = pd.read_csv(shared_data / "intraday" / "nt-spy-minute-2011.csv", sep=";",
                         header=None)
    stamps = pd.DatetimeIndex(pd.to_datetime(minute[0], format="%Y%m%d %H%M%S", utc=True))
    per_day = pd.Series(1, index=stamps).groupby(stamps.date).size()
    assert infer_periods_per_year(stamps) == float(per_day.median()) * 252
    m = compute_metrics(equity=synthetic_equity)
    assert m["periods_per_year"] == 252


def _brute_drawdown_duration(values: np.ndarray) -> int:
    """Longest peak-to-recovery (or peak-to-end) stretch in bars, by a plain loop."""
    best, peak, peak_i, underwater = 0, values[0], 0, False
    for i, v in enumerate(values):
        if v >= peak:
            if underwater:
                best = max(best, i - peak_i)
            peak, peak_i, underwater = v, i, False
        else:
            best, underwater = max(best, i - peak_i), True
    return best


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-0.2, 0.2, allow_nan=False), min_size=2, max_size=80),
       st.floats(0.1, 1e6))
def test_drawdown_duration_and_scale_invariance(rets: list[float], scale: float) -> None:
    values = 100.0 * np.cumprod(np.concatenate([[1.0], 1 + np.asarray(rets)]))
    index = pd.bdate_range("2021-01-04", periods=len(values), tz="UTC")
    m = compute_metrics(equity=pd.Series(values, index=index), periods_per_year=252)
    assert m["max_drawdown_bars"] == _brute_drawdown_duration(values)
    assert m["max_drawdown"] == pytest.approx(drawdown_of(pd.Series(values)).min(), abs=1e-12)
    assert -1.0 <= m["max_drawdown"] <= 0.0
    scaled = compute_metrics(equity=pd.Series(values * scale, index=index), periods_per_year=252)
    for key in ("total_return", "cagr", "max_drawdown", "max_drawdown_days"):
        assert scaled[key] == pytest.approx(m[key], rel=1e-9, abs=1e-12)


def test_drawdown_duration_in_bars_and_days() -> None:
    index = pd.DatetimeIndex(["2020-01-06", "2020-01-07", "2020-01-08", "2020-01-13",
                              "2020-01-14", "2020-01-20"], tz="UTC")
    equity = pd.Series([100, 110, 99, 105, 111, 100.0], index=index)
    m = compute_metrics(equity=equity, periods_per_year=252)
    assert m["max_drawdown"] == pytest.approx(99 / 110 - 1)
    assert m["max_drawdown_bars"] == 3  # peak 01-07, regained 01-14
    assert m["max_drawdown_days"] == 7.0


def test_exposure_turnover_and_trades() -> None:
    index = pd.bdate_range("2022-01-03", periods=252, tz="UTC")
    equity = pd.Series(np.linspace(100, 120, 252), index=index)
    weights = pd.DataFrame({"A": 0.0, "B": 0.0}, index=index)
    weights.iloc[126:, 0] = 0.5
    weights.iloc[126:, 1] = -0.25
    trades = pd.DataFrame({"symbol": ["A", "A", "B", "B"], "pnl": [30.0, -10.0, 5.0, -5.0],
                           "return": [0.03, -0.01, 0.005, -0.005], "bars_held": [10, 5, 3, 2]})
    m = compute_metrics(equity=equity, weights=weights, trades=trades, periods_per_year=252)
    assert m["exposure_time"] == pytest.approx(0.5)
    assert m["mean_gross_exposure"] == pytest.approx(0.375)
    assert m["mean_net_exposure"] == pytest.approx(0.125)
    assert m["turnover"] == pytest.approx(0.75)  # one entry of 0.5 + 0.25 in one year
    assert m["trades"] == 4 and m["win_rate"] == 0.5
    assert m["profit_factor"] == pytest.approx(35 / 15)
    assert m["avg_trade_pnl"] == 5.0 and m["avg_bars_held"] == 5.0
    assert set(m) == set(METRIC_NAMES)


def test_bad_inputs_name_the_problem() -> None:
    index = pd.bdate_range("2022-01-03", periods=5, tz="UTC")
    with pytest.raises(ConfigError, match="2022-01-05"):
        compute_metrics(equity=pd.Series([1, 2, np.nan, 3, 4.0], index=index))
    with pytest.raises(ConfigError, match="periods_per_year"):
        compute_metrics(equity=pd.Series([1.0, 2.0, 3.0]))
    with pytest.raises(ConfigError, match="'pnl'"):
        compute_metrics(equity=pd.Series([1, 2, 3, 4, 5.0], index=index),
                        trades=pd.DataFrame({"profit": [1.0]}))
