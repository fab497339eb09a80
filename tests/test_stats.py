"""Evaluation statistics against worked numbers from the literature and brute-force references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from tradesim.errors import ConfigError
from tradesim.rewards import stats as es
from tradesim.rewards.metrics import compute_metrics


def test_seed_summary_is_a_student_t_interval():
    s = es.aggregate_seeds({0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0})
    low, high = sps.t.interval(0.95, 3, loc=2.5, scale=sps.sem([1, 2, 3, 4]))
    assert (s.n, s.mean, s.median) == (4, 2.5, 2.5)
    assert (s.ci_low, s.ci_high) == (pytest.approx(low), pytest.approx(high))
    one = es.aggregate_seeds([0.7])
    assert one.mean == 0.7 and math.isnan(one.ci_low)
    with pytest.raises(ConfigError, match="finite"):
        es.aggregate_seeds([1.0, float("nan")])


def test_sharpe_agrees_with_the_metrics_module():
    rng = np.random.default_rng(2)
    r = rng.normal(0.0005, 0.01, 300)
    equity = pd.Series(100 * np.cumprod(np.r_[1.0, 1 + r]),
                       index=pd.date_range("2020-01-01", periods=301, freq="B"))
    annual = compute_metrics(equity=equity, periods_per_year=252)["sharpe"]
    assert es.sharpe_ratio(r) * math.sqrt(252) == pytest.approx(annual, rel=1e-10)
    assert es.bootstrap_sharpe_ci(r, n_boot=200).sharpe == pytest.approx(annual, rel=1e-10)


def test_dsr_reproduces_the_worked_example_of_bailey_and_lopez_de_prado_2014():
    # N=100 trials, V[SR]=1/2 annualised, T=1250 daily bars, skew -3, kurtosis 10, SR 2.5 p.a.
    sr0 = es.expected_max_sharpe(n_trials=100, variance=0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=1e-4)
    dsr = es.deflated_sharpe_ratio(sharpe=2.5 / math.sqrt(250), n_obs=1250, n_trials=100,
                                   trials_variance=0.5 / 250, skew=-3, kurtosis=10)
    assert dsr == pytest.approx(0.9004, abs=1e-4)


def test_expected_max_sharpe_matches_simulated_maxima():
    rng = np.random.default_rng(8)
    for n in (10, 100, 1000):
        simulated = rng.standard_normal((2000, n)).max(axis=1).mean()
        assert es.expected_max_sharpe(n_trials=n, variance=1.0) == pytest.approx(simulated,
                                                                                rel=0.03)
    assert es.expected_max_sharpe(n_trials=1, variance=1.0) == 0.0


def test_psr_is_calibrated_under_the_null():
    """With true Sharpe 0, PSR is ~uniform: it exceeds 0.95 about 5% of the time."""
    rng = np.random.default_rng(13)
    r = rng.normal(0, 0.01, (2000, 250))
    sr = r.mean(1) / r.std(1, ddof=1)
    skew, kurt = sps.skew(r, axis=1), sps.kurtosis(r, axis=1, fisher=False)
    psr = np.array([es.probabilistic_sharpe_ratio(sharpe=a, n_obs=250, skew=b, kurtosis=c)
                    for a, b, c in zip(sr, skew, kurt, strict=True)])
    assert es.moments(r[0]) == pytest.approx({"sharpe": sr[0], "skew": skew[0],
                                              "kurtosis": kurt[0], "n_obs": 250})
    assert 0.035 < np.mean(psr > 0.95) < 0.065
    assert es.probabilistic_sharpe_ratio(sharpe=0.1, n_obs=100, benchmark=0.1) == 0.5


def test_trial_registry_counts_configs_persists_and_deflates(tmp_path):
    path = tmp_path / "trials.sqlite"
    reg = es.TrialRegistry(path)
    reg.record(experiment="sma", config={"fast": 5, "slow": 20}, sharpe=0.05, n_obs=500)
    reg.record(experiment="sma", config={"slow": 20, "fast": 5}, sharpe=0.07, n_obs=500, seed=1)
    reg.record(experiment="sma", config={"fast": 10, "slow": 50}, sharpe=0.02, n_obs=500)
    reg.record(experiment="sma", config={"fast": 20, "slow": 100}, sharpe=-0.01, n_obs=500)
    reg.record(experiment="other", config={"x": 1}, sharpe=0.3, n_obs=500)
    again = es.TrialRegistry(path)
    assert again.n_trials("sma") == 3 and again.n_trials("other") == 1
    assert again.sharpe_variance("sma") == pytest.approx(np.var([0.06, 0.02, -0.01], ddof=1))
    rng = np.random.default_rng(1)
    chosen = rng.normal(0.001, 0.01, 500)
    m = es.moments(chosen)
    want = es.deflated_sharpe_ratio(sharpe=m["sharpe"], n_obs=500, n_trials=3,
                                    trials_variance=again.sharpe_variance("sma"),
                                    skew=m["skew"], kurtosis=m["kurtosis"])
    assert again.deflated_sharpe(experiment="sma", returns=chosen) == pytest.approx(want)
    assert want < es.probabilistic_sharpe_ratio(sharpe=m["sharpe"], n_obs=500, skew=m["skew"],
                                                kurtosis=m["kurtosis"])
    with pytest.raises(ConfigError, match="no trials for 'nothing'"):
        again.deflated_sharpe(experiment="nothing", returns=chosen)


def test_stationary_bootstrap_is_seeded_and_keeps_blocks():
    idx = es.bootstrap_indices(100, n_boot=50, block_length=10, seed=3)
    assert np.array_equal(idx, es.bootstrap_indices(100, n_boot=50, block_length=10, seed=3))
    steps = np.diff(idx, axis=1) % 100
    assert 0.85 < np.mean(steps == 1) < 0.95  # a new block starts with probability 1/10
    circ = es.bootstrap_indices(100, n_boot=5, block_length=10, method="circular", seed=3)
    assert (np.diff(circ, axis=1) % 100 == 1)[:, [t for t in range(99) if (t + 1) % 10]].all()


def test_bootstrap_sharpe_interval_covers_the_truth():
    rng = np.random.default_rng(4)
    true_annual = 0.05 / 1.0 * math.sqrt(252)
    hits = 0
    for seed in range(80):
        r = rng.normal(0.05, 1.0, 500)
        ci = es.bootstrap_sharpe_ci(r, n_boot=400, seed=seed)
        hits += ci.low <= true_annual <= ci.high
    assert 0.85 <= hits / 80 <= 1.0


def _pbo_by_loops(m: np.ndarray, s: int) -> float:
    """Textbook CSCV written as plain loops (reference for the vectorised version)."""
    blocks = np.array_split(np.arange(m.shape[0]), s)
    below = []
    for chosen in itertools.combinations(range(s), s // 2):
        is_rows = np.concatenate([blocks[i] for i in chosen])
        oos_rows = np.concatenate([blocks[i] for i in range(s) if i not in chosen])
        is_sr = m[is_rows].mean(0) / m[is_rows].std(0, ddof=1)
        oos_sr = m[oos_rows].mean(0) / m[oos_rows].std(0, ddof=1)
        n_star = int(np.argmax(is_sr))
        rank = sps.rankdata(oos_sr, method="min")[n_star]
        w = rank / (m.shape[1] + 1)
        below.append(math.log(w / (1 - w)) <= 0)
    return float(np.mean(below))


def test_pbo_matches_a_loop_implementation_on_noise():
    rng = np.random.default_rng(6)
    m = rng.normal(0, 0.01, (400, 12))
    result = es.probability_of_backtest_overfitting(m, n_splits=8)
    assert result.n_combinations == math.comb(8, 4)
    assert result.pbo == pytest.approx(_pbo_by_loops(m, 8))


def test_pbo_hand_computed_extremes():
    # two configurations, two blocks: each wins exactly the block the other loses -> PBO 1
    flip = np.array([[0.02, -0.01], [0.01, -0.02], [-0.01, 0.02], [-0.02, 0.01]])
    assert es.probability_of_backtest_overfitting(flip, n_splits=2, metric="mean").pbo == 1.0
    # one configuration dominates everywhere -> its OOS rank is top, logit ln(N) > 0 -> PBO 0
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, (320, 6))
    noise[:, 0] += 0.01
    res = es.probability_of_backtest_overfitting(noise, n_splits=16)
    assert res.pbo == 0.0 and np.allclose(res.logits, math.log(6 / 1))


@settings(max_examples=80, deadline=None)
@given(n_obs=st.integers(20, 300), n_splits=st.integers(2, 6), purge=st.integers(0, 10),
       embargo=st.integers(0, 10))
def test_no_train_bar_sits_within_purge_or_embargo_of_a_test_bar(n_obs, n_splits, purge,
                                                                 embargo):
    folds = es.purged_kfold(n_obs, n_splits=n_splits, purge=purge, embargo=embargo)
    assert np.array_equal(np.sort(np.concatenate([t for _, t in folds])), np.arange(n_obs))
    for train, test in folds:
        gap = train[:, None] - test[None, :]  # > 0: train after test
        assert not ((gap < 0) & (gap >= -purge)).any()
        assert not ((gap > 0) & (gap <= embargo)).any()
        assert not np.isin(train, test).any()
    assume(n_obs - 5 - purge >= n_splits)  # room for a test bar per split after the purge
    walk = es.purged_walk_forward(n_obs, n_splits=n_splits, purge=purge, min_train=5)
    for train, test in walk:
        assert train.size >= 5 and train.max() < test.min() - purge
    tests = np.concatenate([t for _, t in walk])
    assert np.array_equal(tests, np.arange(tests[0], n_obs))


def test_walk_forward_can_roll_and_rejects_impossible_layouts():
    walk = es.purged_walk_forward(100, n_splits=4, test_size=10, purge=3, max_train=30)
    train, test = walk[0]
    assert (train.min(), train.max(), test.min(), test.max()) == (27, 56, 60, 69)
    assert all(tr.size == 30 for tr, _ in walk)
    with pytest.raises(ConfigError, match="cannot hold 10 test blocks"):
        es.purged_walk_forward(50, n_splits=10, test_size=5, purge=2)
