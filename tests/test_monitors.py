"""Hack monitors on hand-built books with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tradesim.errors import ConfigError
from tradesim.rewards.monitors import MONITOR_NAMES, compute_monitors


def _book(weights: np.ndarray, asset_returns: np.ndarray, start: float = 1e4) -> np.ndarray:
    """Equity of a book rebalanced to ``weights`` at each stamp (no costs)."""
    growth = 1 + (weights[:-1] * asset_returns).sum(axis=1)
    return start * np.concatenate([[1.0], np.cumprod(growth)])


def test_buy_and_hold_has_known_monitors():
    rng = np.random.default_rng(1)
    r = rng.normal(0, 0.01, (99, 1))
    w = np.full((100, 1), 0.5)
    m = compute_monitors(equity=_book(w, r), weights=w, asset_returns=r)
    assert set(m) == set(MONITOR_NAMES)
    assert m["turnover"] == pytest.approx(0.5 / 100 * 252)
    assert m["mean_holding_bars"] == 100 and m["peak_leverage"] == 0.5
    assert m["short_pnl"] == 0.0 and m["long_short_asymmetry"] == np.sign(m["long_pnl"]) != 0
    assert m["long_pnl"] == pytest.approx(np.diff(_book(w, r)).sum() / 1e4)
    assert math.isnan(m["reward_gap"])


def test_a_churner_shows_one_bar_holds_and_huge_turnover():
    n = 101
    w = np.where(np.arange(n)[:, None] % 2 == 0, 2.0, -2.0)
    r = np.zeros((n - 1, 1))
    m = compute_monitors(equity=_book(w, r), weights=w, asset_returns=r)
    assert m["mean_holding_bars"] == 1.0 and m["peak_leverage"] == 2.0
    assert m["turnover"] == pytest.approx((2 + 4 * (n - 1)) / n * 252)


def test_pnl_concentrated_in_one_percent_of_bars_is_flagged():
    pnl = np.ones(200)
    pnl[17] = 100.0
    equity = 1000 + np.concatenate([[0.0], np.cumsum(pnl)])
    m = compute_monitors(equity=equity)
    assert m["top1pct_pnl_share"] == pytest.approx(101 / 299)
    assert m["pnl_without_top1pct"] == pytest.approx(198 / 1000)
    even = compute_monitors(equity=1000 + np.arange(201.0))
    assert even["top1pct_pnl_share"] == pytest.approx(2 / 200)
    assert compute_monitors(equity=np.full(10, 5.0))["top1pct_pnl_share"] == 0.0


def test_long_and_short_sides_earn_the_same_on_mirrored_markets():
    rng = np.random.default_rng(4)
    r = rng.normal(0.001, 0.02, (250, 2))
    w = np.abs(rng.normal(0.4, 0.2, (251, 2)))
    long = compute_monitors(equity=_book(w, r), weights=w, asset_returns=r)
    short = compute_monitors(equity=_book(-w, -r), weights=-w, asset_returns=-r)
    assert long["long_pnl"] == pytest.approx(short["short_pnl"], rel=1e-12)
    assert long["long_short_asymmetry"] == -short["long_short_asymmetry"]


def test_trades_frame_and_reward_gap():
    trades = pd.DataFrame({"pnl": [1.0, -2.0], "bars_held": [3, 5]})
    m = compute_monitors(equity=np.array([1.0, 1.1, 1.2]), trades=trades,
                         in_sample_reward=2.5, out_of_sample_score=0.4)
    assert m["mean_holding_bars"] == 4.0 and m["reward_gap"] == pytest.approx(2.1)


def test_bad_inputs_are_named():
    with pytest.raises(ConfigError, match=r"equity\[2\] is nan"):
        compute_monitors(equity=np.array([1.0, 2.0, np.nan]))
    with pytest.raises(ConfigError, match="weights has 2 rows"):
        compute_monitors(equity=np.ones(3), weights=np.ones((2, 1)))
    with pytest.raises(ConfigError, match="asset_returns has shape"):
        compute_monitors(equity=np.ones(3), weights=np.ones((3, 1)), asset_returns=np.ones((3, 1)))
    with pytest.raises(ConfigError, match="bars_held"):
        compute_monitors(equity=np.ones(3), trades=pd.DataFrame({"pnl": [1.0]}))
