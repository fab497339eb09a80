"""Per-step rewards: NumPy/torch/online agreement and the properties the reward issue asks for."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import brentq, minimize_scalar

from tradesim.errors import ConfigError
from tradesim.rewards import step as rs

ALL_ON = rs.RewardSpec(log_growth=1, pnl=1, sharpe=0.5, downside=0.5, drawdown=1, turnover=0.1,
                       cost=1, cvar=1, expectile=1, warmup=5, window=10)
EQUITY_TERMS = ("log_growth", "pnl", "sharpe", "downside", "drawdown", "cvar", "expectile")


def _ledger(prices: np.ndarray, shares: np.ndarray, *, cash: float,
            cost_bps: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tiny share ledger: trade to ``shares[t]`` at ``prices[t]``; returns equity, weights, costs."""
    held = np.concatenate([[0.0], shares])
    trade_cost = np.abs(np.diff(held)) * prices * cost_bps * 1e-4
    cash_path = cash - np.cumsum(np.diff(held) * prices + trade_cost)
    equity = cash_path + shares * prices
    weights = (shares * prices / equity)[:, None]
    return equity, weights, trade_cost[1:]


@pytest.fixture
def book() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    prices = 100 * np.exp(np.cumsum(np.r_[0.0, rng.normal(0, 0.01, 120)]))
    shares = np.round(rng.normal(50, 40, 121))
    equity, weights, costs = _ledger(prices, shares, cash=10_000.0, cost_bps=5)
    return {"prices": prices, "shares": shares, "equity": equity, "weights": weights,
            "costs": costs}


@pytest.fixture
def batch() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    n, t, k = 4, 80, 3
    equity = 1e5 * np.exp(np.cumsum(np.c_[np.zeros(n), rng.normal(0, 0.02, (n, t))], axis=1))
    equity[1, 40] = 0.0  # a ruin, then a "reset" that must earn nothing
    return {"equity": equity, "weights": rng.normal(0, 0.5, (n, t + 1, k)),
            "costs": np.abs(rng.normal(0, 20, (n, t)))}


def test_numpy_and_torch_forms_agree_on_batches(batch):
    np_terms = rs.reward_terms(spec=ALL_ON, **batch)
    t_terms = rs.reward_terms_torch(spec=ALL_ON, **{k: torch.tensor(v) for k, v in batch.items()})
    assert set(np_terms) == set(rs.TERMS) | {"total"}
    for name, values in np_terms.items():
        np.testing.assert_allclose(t_terms[name].numpy(), values, atol=1e-9, err_msg=name)


def test_online_reward_matches_offline_including_a_partial_reset(batch):
    eq, w, c = (torch.tensor(batch[k]) for k in ("equity", "weights", "costs"))
    online = rs.OnlineReward(spec=ALL_ON, n_envs=4, n_assets=3, dtype=torch.float64)
    online.reset(equity=eq[:, 0], weights=w[:, 0])
    got = []
    for t in range(1, 41):
        got.append(online.step(equity=eq[:, t], weights=w[:, t], costs=c[:, t - 1]))
    offline = rs.reward_terms(spec=ALL_ON, equity=batch["equity"][:, :41],
                              weights=batch["weights"][:, :41], costs=batch["costs"][:, :40])
    np.testing.assert_allclose(torch.stack(got, 1).numpy(), offline["total"], atol=1e-9)
    # env 2 starts a new episode at bar 40; the others carry on
    mask = torch.tensor([False, False, True, False])
    online.reset(equity=eq[:, 40], weights=w[:, 40], mask=mask)
    later = torch.stack([online.step(equity=eq[:, t], weights=w[:, t], costs=c[:, t - 1])
                         for t in range(41, 81)], 1).numpy()
    whole = rs.reward_terms(spec=ALL_ON, **batch)["total"]
    fresh = rs.reward_terms(spec=ALL_ON, equity=batch["equity"][2, 40:],
                            weights=batch["weights"][2, 40:], costs=batch["costs"][2, 40:])
    np.testing.assert_allclose(later[[0, 1, 3]], whole[[0, 1, 3], 40:], atol=1e-9)
    np.testing.assert_allclose(later[2], fresh["total"], atol=1e-9)


def test_online_reward_stays_on_the_callers_dtype_and_shape():
    online = rs.OnlineReward(spec=ALL_ON, n_envs=2, n_assets=1)
    online.reset(equity=torch.tensor([1.0, 2.0]))
    out = online.step(equity=torch.tensor([1.1, 1.9]), weights=torch.ones(2, 1),
                      costs=torch.zeros(2))
    assert out.shape == (2,) and out.dtype == torch.float32
    assert set(online.terms) == set(rs.TERMS)


def test_mirror_prices_and_flipped_positions_give_the_same_reward_before_costs(book):
    prices = 100 + 20 * np.sin(np.linspace(0, 9, 121)) + np.linspace(0, 15, 121)
    mirrored = 2 * prices[0] - prices
    assert (mirrored > 0).all()
    eq, _, _ = _ledger(prices, book["shares"], cash=10_000.0)
    eq_m, _, _ = _ledger(mirrored, -book["shares"], cash=10_000.0)
    a, b = rs.reward_terms(equity=eq, spec=ALL_ON.model_copy(update={"turnover": 0, "cost": 0})), \
        rs.reward_terms(equity=eq_m, spec=ALL_ON.model_copy(update={"turnover": 0, "cost": 0}))
    for name in EQUITY_TERMS:
        np.testing.assert_allclose(a[name], b[name], atol=1e-9, err_msg=name)
    assert np.abs(a["total"]).sum() > 0


def test_scaling_cash_and_positions_leaves_every_reward_unchanged(book):
    k = 37.5
    base = rs.reward_terms(spec=ALL_ON, equity=book["equity"], weights=book["weights"],
                           costs=book["costs"])
    eq, w, c = _ledger(book["prices"], book["shares"] * k, cash=10_000.0 * k, cost_bps=5)
    scaled = rs.reward_terms(spec=ALL_ON, equity=eq, weights=w, costs=c)
    for name, values in base.items():
        np.testing.assert_allclose(scaled[name], values, atol=1e-9, err_msg=name)


def test_rewards_reconcile_with_the_ledger(book):
    eq = book["equity"]
    assert rs.pnl_reward(eq).sum() * eq[0] == pytest.approx(eq[-1] - eq[0], rel=1e-10)
    assert math.exp(rs.log_growth(eq).sum()) == pytest.approx(eq[-1] / eq[0], rel=1e-10)
    # drawdown increments add up to the log drawdown at the end
    level = np.log(eq / eq[0])
    assert -rs.drawdown_increment(eq).sum() >= level.max() - level[-1] - 1e-12


def test_a_flat_book_earns_zero_on_every_term():
    n = 50
    terms = rs.reward_terms(spec=ALL_ON, equity=np.full(n + 1, 1e4), weights=np.zeros((n + 1, 2)),
                            costs=np.zeros(n))
    for name, values in terms.items():
        assert np.all(values == 0.0), name


def test_ruin_is_penalised_once_and_a_reset_earns_nothing():
    lg = rs.log_growth(np.array([100.0, 0.0, 100.0, 110.0]))
    assert lg[0] == pytest.approx(math.log(1e-12))
    assert lg[1] == 0.0 and lg[2] == pytest.approx(math.log(1.1))
    assert np.all(rs.pnl_reward(np.array([100.0, -50.0, 100.0])) == [-1.0, 1.0])


@settings(max_examples=60, deadline=None)
@given(history=arrays(np.float64, st.integers(12, 30), elements=st.floats(-0.2, 0.2)),
       last=st.floats(-0.3, 0.3), cost=st.floats(0.0, 0.05))
def test_costs_never_raise_a_reward(history, last, cost):
    """The same history, then one bar with and without a cost: no term may gain from the cost."""
    start = 1000.0
    eq = start * np.cumprod(np.r_[1.0, 1.0 + history])
    gross = np.r_[eq, eq[-1] * (1 + last)]
    net = np.r_[eq, eq[-1] * (1 + last - cost)]
    costs = np.r_[np.zeros(history.shape[0]), cost * eq[-1]]
    spec = ALL_ON.model_copy(update={"sharpe": 0, "downside": 0, "turnover": 0})
    with_cost = rs.reward_terms(spec=spec, equity=net, costs=costs)
    without = rs.reward_terms(spec=spec, equity=gross, costs=np.zeros_like(costs))
    for name, values in with_cost.items():
        assert values[-1] <= without[name][-1] + 1e-12, name
    # differential Sharpe rises with the return only below B/A (Moody-Saffell): check there
    r = rs.simple_returns(eq)
    a = rs._ema(r, spec.eta)[-1]
    b = rs._ema(r * r, spec.eta)[-1]
    assume(a * last <= b and a * (last - cost) <= b)
    d_net = rs.differential_sharpe(rs.simple_returns(net), warmup=0)[-1]
    d_gross = rs.differential_sharpe(rs.simple_returns(gross), warmup=0)[-1]
    assert d_net <= d_gross + 1e-12


_wild = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=60, deadline=None)
@given(equity=arrays(np.float64, st.integers(2, 40), elements=_wild),
       data=st.data())
def test_all_rewards_are_finite_for_any_input(equity, data):
    n = equity.shape[0]
    weights = data.draw(arrays(np.float64, (n, 2), elements=_wild))
    costs = data.draw(arrays(np.float64, n - 1, elements=_wild))
    spec = ALL_ON.model_copy(update={"window": min(10, max(2, n - 1))})
    for name, values in rs.reward_terms(spec=spec, equity=equity, weights=weights,
                                        costs=costs).items():
        assert np.isfinite(values).all(), name
    t_terms = rs.reward_terms_torch(spec=spec, equity=torch.tensor(equity),
                                    weights=torch.tensor(weights), costs=torch.tensor(costs))
    for name, values in t_terms.items():
        assert torch.isfinite(values).all(), name


def test_differential_sharpe_is_the_first_order_change_of_the_moving_sharpe():
    rng = np.random.default_rng(11)
    r = rng.normal(0.001, 0.01, 60)
    eta = 0.05
    d = rs.differential_sharpe(r, eta=eta, warmup=0, clip=1e9)
    a, b = rs._ema(r, eta), rs._ema(r * r, eta)
    t, h = 40, 1e-7
    a0, b0 = a[t - 1], b[t - 1]

    def sharpe(x: float) -> float:
        aa, bb = a0 + x * (r[t] - a0), b0 + x * (r[t] ** 2 - b0)
        return aa / math.sqrt(bb - aa * aa)

    assert d[t] == pytest.approx((sharpe(h) - sharpe(-h)) / (2 * h), rel=1e-5)


def test_differential_downside_follows_moody_saffell_2001():
    r = np.array([0.01, -0.02, 0.015, -0.01, 0.02, -0.03])
    eta = 0.1
    d = rs.differential_downside(r, eta=eta, warmup=0, clip=1e9)
    a = dd2 = 0.0
    for t, x in enumerate(r):
        dd = math.sqrt(max(dd2, 1e-10))
        want = ((x - a / 2) / dd if x > 0
                else (max(dd2, 1e-10) * (x - a / 2) - a * x * x / 2) / dd ** 3)
        assert d[t] == pytest.approx(max(min(want, 1e9), -1e9), rel=1e-12), t
        a, dd2 = a + eta * (x - a), dd2 + eta * (min(x, 0.0) ** 2 - dd2)


def test_cvar_is_the_rockafellar_uryasev_minimum():
    rng = np.random.default_rng(5)
    for n, alpha in ((20, 0.95), (37, 0.9), (100, 0.99), (7, 0.5)):
        r = rng.standard_t(3, n) * 0.01
        losses = -r
        # the objective is piecewise linear in nu, so one of its kinks (a loss) is optimal
        best = min(nu + np.maximum(losses - nu, 0).sum() / ((1 - alpha) * n) for nu in losses)
        assert rs.cvar(r, alpha=alpha) == pytest.approx(best, rel=1e-12)
        assert rs.cvar_torch(torch.tensor(r), alpha=alpha).item() == pytest.approx(best, rel=1e-12)


def test_expectile_solves_the_asymmetric_least_squares_condition():
    rng = np.random.default_rng(9)
    x = rng.normal(0, 1, 50)
    for tau in (0.05, 0.1, 0.5, 0.9):
        e = rs.expectile(x, tau=tau)
        want = brentq(lambda m, tau=tau: np.sum(np.where(x > m, tau, 1 - tau) * (x - m)), -10, 10)
        assert e == pytest.approx(want, abs=1e-12)
        direct = minimize_scalar(lambda m, tau=tau: np.sum(np.abs(tau - (x < m)) * (x - m) ** 2),
                                 bounds=(-5, 5), method="bounded", options={"xatol": 1e-10})
        assert e == pytest.approx(direct.x, abs=1e-6)
    assert rs.expectile(x, tau=0.5) == pytest.approx(x.mean())


def test_missing_inputs_are_named():
    with pytest.raises(ConfigError, match="weights"):
        rs.reward_terms(equity=np.ones(5), spec=rs.RewardSpec(turnover=1))
    with pytest.raises(ConfigError, match="costs"):
        rs.reward_terms(equity=np.ones(5), spec=rs.RewardSpec(cost=1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_online_and_batched_torch_rewards_run_on_cuda_without_host_sync(batch):
    dev = torch.device("cuda")
    eq, w, c = (torch.tensor(batch[k], device=dev) for k in ("equity", "weights", "costs"))
    online = rs.OnlineReward(spec=ALL_ON, n_envs=4, n_assets=3, device=dev, dtype=torch.float64)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any device->host sync raises
    try:
        online.reset(equity=eq[:, 0], weights=w[:, 0])
        got = torch.stack([online.step(equity=eq[:, t], weights=w[:, t], costs=c[:, t - 1])
                           for t in range(1, 81)], 1)
        offline = rs.reward_terms_torch(spec=ALL_ON, equity=eq, weights=w, costs=c)["total"]
    finally:
        torch.cuda.set_sync_debug_mode(0)
    want = rs.reward_terms(spec=ALL_ON, **batch)["total"]
    np.testing.assert_allclose(got.cpu().numpy(), want, atol=1e-9)
    np.testing.assert_allclose(offline.cpu().numpy(), want, atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(before=st.floats(allow_nan=True, allow_infinity=True),
       after=st.floats(allow_nan=True, allow_infinity=True))
def test_the_engines_scalar_step_equals_the_array_form(before: float, after: float) -> None:
    expected = rs.log_growth(np.array([before, after]))[0]
    assert rs.log_growth_step(before, after) == pytest.approx(expected, rel=1e-12, abs=1e-12)
