"""Causal features and teachers of the QTNet env: Dual Thrust from completed days, no look-ahead."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradesim.agents.qtnet.features import (
    FEATURES,
    day_ids,
    dual_thrust_lines,
    make_features,
)
from tradesim.agents.qtnet.teachers import CAUSAL_TEACHERS, teacher_positions

_MIN_NS = 60 * 1_000_000_000


def _minute_bars(days: int = 8, per_day: int = 30, seed: int = 0) -> dict[str, np.ndarray]:
    """Random-walk minute bars: ``per_day`` bars from 14:31 UTC on consecutive days."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    start = np.datetime64("2021-03-01T14:31", "ns")
    time = np.concatenate([start + np.timedelta64(d, "D") + np.arange(per_day) * np.timedelta64(
        1, "m") for d in range(days)])
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    open_ = np.r_[100.0, close[:-1]] * np.exp(rng.normal(0, 0.0005, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.002, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.002, n))
    return {"time": time, "open": open_, "high": high, "low": low, "close": close,
            "volume": rng.uniform(1e3, 1e4, n)}


def _lines(b: dict[str, np.ndarray], lookback: int = 3) -> tuple[np.ndarray, np.ndarray]:
    return dual_thrust_lines(open=b["open"], high=b["high"], low=b["low"], close=b["close"],
                             day=day_ids(b["time"]), k1=0.5, k2=0.7, lookback_days=lookback)


def test_dual_thrust_lines_match_a_direct_computation_over_completed_days():
    b = _minute_bars()
    upper, lower = _lines(b)
    per = 30
    for d in range(3, 8):
        prev = slice((d - 3) * per, d * per)
        closes = b["close"][prev].reshape(3, per)[:, -1]
        hh, ll = b["high"][prev].max(), b["low"][prev].min()
        rng = max(hh - closes.min(), closes.max() - ll)
        day = slice(d * per, (d + 1) * per)
        np.testing.assert_allclose(upper[day], b["open"][d * per] + 0.5 * rng)
        np.testing.assert_allclose(lower[day], b["open"][d * per] - 0.7 * rng)
    assert np.isnan(upper[:3 * per]).all()


def test_dual_thrust_range_ignores_the_current_day():
    b = _minute_bars()
    upper, lower = _lines(b)
    moved = {k: v.copy() for k, v in b.items()}
    today = slice(7 * 30 + 1, 8 * 30)  # everything of the last day after its first bar's open
    moved["high"][today] *= 1.05
    moved["low"][today] *= 0.95
    moved["close"][today] *= 1.02
    up2, lo2 = _lines(moved)
    np.testing.assert_array_equal(up2, upper)
    np.testing.assert_array_equal(lo2, lower)


@settings(max_examples=25, deadline=None)
@given(cut=st.integers(min_value=60, max_value=230), factor=st.floats(0.5, 2.0))
def test_features_and_teachers_at_t_ignore_every_later_bar(cut: int, factor: float):
    b = _minute_bars()
    later = {k: (v.copy() if k == "time" else np.r_[v[:cut + 1], v[cut + 1:] * factor])
             for k, v in b.items()}
    f1, f2 = make_features(**b), make_features(**later)
    np.testing.assert_array_equal(f1[:cut + 1], f2[:cut + 1])
    prices = {k: b[k] for k in ("time", "open", "high", "low", "close")}
    t1 = teacher_positions(**prices)
    t2 = teacher_positions(**{k: later[k] for k in prices})
    np.testing.assert_array_equal(t1[:, :cut + 1], t2[:, :cut + 1])


def test_features_are_finite_and_scale_free():
    b = _minute_bars()
    f = make_features(**b)
    assert f.shape == (240, 1, len(FEATURES)) and np.isfinite(f).all()
    scaled = {k: v if k in ("time", "volume") else v * 37.0 for k, v in b.items()}
    np.testing.assert_allclose(make_features(**scaled), f, atol=1e-9)


def test_hindsight_teacher_is_only_added_on_request_and_uses_the_next_move():
    b = _minute_bars()
    prices = {k: b[k] for k in ("time", "open", "high", "low", "close")}
    causal = teacher_positions(**prices)
    with_oracle = teacher_positions(**prices, hindsight=True)
    assert causal.shape[0] == len(CAUSAL_TEACHERS) == with_oracle.shape[0] - 1
    np.testing.assert_array_equal(with_oracle[:-1], causal)
    o = b["open"]
    expected = np.sign(o[2:] / o[1:-1] - 1.0)
    np.testing.assert_array_equal(with_oracle[-1, :-2, 0], expected)


@pytest.mark.parametrize("allow_short", [True, False])
def test_teacher_positions_are_bounded(allow_short: bool):
    b = _minute_bars()
    pos = teacher_positions(**{k: b[k] for k in ("time", "open", "high", "low", "close")},
                            allow_short=allow_short)
    assert pos.max() <= 1.0 and pos.min() >= (-1.0 if allow_short else 0.0)
    assert (pos != 0).any()


@settings(max_examples=25, deadline=None)
@given(tail=st.integers(min_value=1, max_value=260), days=st.integers(min_value=1, max_value=9),
       seed=st.integers(0, 50))
def test_tail_features_equal_the_last_rows_of_the_full_computation(tail: int, days: int,
                                                                    seed: int):
    b = _minute_bars(days=days, seed=seed)
    b["volume"][::7] = 0.0
    full = make_features(**b)
    np.testing.assert_array_equal(make_features(**b, tail=tail), full[-tail:])


def test_volume_z_matches_a_pandas_rolling_reference():
    import pandas as pd

    b = _minute_bars(seed=4)
    b["volume"][10:40] = 5e3  # a constant stretch: zero spread, floored
    b["volume"][50] = np.nan
    lv = pd.Series(np.log1p(np.maximum(b["volume"], 0.0)))
    roll = lv.rolling(20, min_periods=2)
    expected = ((lv - roll.mean()) / roll.std().clip(lower=1e-6)).to_numpy()
    expected = np.clip(np.nan_to_num(expected, nan=0.0), -10, 10)
    got = make_features(**b)[:, 0, FEATURES.index("volume_z")]
    np.testing.assert_allclose(got, expected, atol=1e-7)
