"""The batched DRL env against the backtest engine (parity, cost signs, margin, ruin), and the
single gymnasium env (the engine's compiled book) against the batched env."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.error import ResetNeeded

from tradesim.agents.qtnet.env import EnvConfig, EnvData, TradingEnv, scripted_equity
from tradesim.agents.qtnet.gym_env import QTNetGymEnv
from tradesim.contracts import BaseAgent, Decision, Observation
from tradesim.data.bars import Bars
from tradesim.data.files import read_bars
from tradesim.data.synthetic import SyntheticSource
from tradesim.data.view import MarketData
from tradesim.engine.costs import CostModel
from tradesim.evaluate.backtest import BacktestConfig, run_backtest
from tradesim.rewards.step import RewardSpec


class _Scripted(BaseAgent):
    """Sets the given target weights row at each step."""

    name = "scripted"

    def __init__(self, weights: np.ndarray, symbols: tuple[str, ...]) -> None:
        self.weights, self.symbols = weights, symbols

    def decide(self, obs: Observation) -> Decision:
        row = self.weights[obs.step]
        return Decision(weights={s: float(w) for s, w in zip(self.symbols, row, strict=True)})


def _bars(symbol: str, close: np.ndarray, *, volume: np.ndarray | None = None,
          gap: np.ndarray | None = None) -> Bars:
    """Daily bars from closes; ``gap`` multiplies each open against the previous close."""
    n = close.shape[0]
    prev = np.r_[close[0], close[:-1]]
    open_ = prev * (gap if gap is not None else np.ones(n))
    high = np.maximum(open_, close) * 1.01
    low = np.minimum(open_, close) * 0.99
    time = np.datetime64("2020-01-01T21:00", "ns") + np.arange(n) * np.timedelta64(1, "D")
    return Bars.from_arrays(symbol=symbol, interval="1d", adjusted=True, source="test", time=time,
                            open=open_, high=high, low=low, close=close,
                            volume=volume if volume is not None else np.full(n, 1e7))


def _engine_equity(market: MarketData, weights: np.ndarray, **config: object) -> np.ndarray:
    symbols = market.symbols
    cfg = BacktestConfig.build(symbols=symbols, **config)
    return run_backtest(config=cfg, agent=_Scripted(weights, symbols),
                        data=market).equity["equity"].to_numpy()


def _env_equity(market: MarketData, weights: np.ndarray, **config: object) -> np.ndarray:
    data = EnvData.from_market(market)
    return scripted_equity(data=data, weights=weights,
                           config=EnvConfig(dtype="float64", **config))


def _assert_parity(market: MarketData, weights: np.ndarray, **config: object) -> np.ndarray:
    engine = _engine_equity(market, weights, **config)
    env = _env_equity(market, weights, **config)
    assert env.shape == engine.shape
    np.testing.assert_allclose(env, engine, rtol=1e-9, atol=0)
    return env


@pytest.fixture(scope="module")
def synthetic() -> MarketData:
    src = SyntheticSource(symbols=["ALPHA", "BRAVO", "CHARLIE"], start="2015-01-01",
                          end="2015-12-31")
    return MarketData({s: src.load(s) for s in src.symbols()})


def test_env_equity_matches_engine_with_default_costs_shorts_and_leverage(synthetic):
    rng = np.random.default_rng(3)
    weights = rng.uniform(-0.6, 0.6, size=(300, 3))
    weights[rng.random(300) < 0.3] = 0.0  # some flat steps: closes and re-opens
    _assert_parity(synthetic, weights, costs="default", allow_short=True, max_leverage=2.0)


def test_env_equity_matches_engine_with_retail_costs_and_fractional_shares(synthetic):
    weights = np.tile([[0.3, -0.2, 0.1], [-0.1, 0.3, 0.0]], (150, 1))
    _assert_parity(synthetic, weights, costs="retail", allow_short=True, fractional=True)


def test_env_matches_engine_through_partial_fills_and_margin_liquidation():
    n = 60
    close = 100 * np.cumprod(np.r_[1.0, np.full(n - 1, 1.002)])
    gap = np.ones(n)
    gap[40] = 0.64  # a 36% gap down: 2x leverage falls below maintenance at the open
    close[40:] *= 0.64
    volume = np.full(n, 1e7)
    volume[5] = 300.0  # the participation cap cuts this bar's fill
    market = MarketData({"X": _bars("X", close, volume=volume, gap=gap)})
    weights = np.full((n, 1), 2.0)
    env = _assert_parity(market, weights, costs="default", allow_short=True, max_leverage=2.0)
    assert env[41] < env[39] * 0.5  # the liquidation happened inside the compared span


def test_ruin_terminates_like_the_engine_and_costs_more_than_losing_slowly():
    n = 30
    close = np.full(n, 100.0)
    gap = np.ones(n)
    gap[20] = 0.4  # 2x long through a 60% gap: equity below zero at the open
    close[20:] = 40.0
    market = MarketData({"X": _bars("X", close, gap=gap)})
    weights = np.full((n, 1), 2.0)
    weights[20:] = 0.0  # the engine still asks the ruined agent once; a 2x target would not size
    env = _assert_parity(market, weights, costs="zero", allow_short=True, max_leverage=2.0)
    assert env[-1] <= 0 and env.shape[0] == 21
    data = EnvData.from_market(market)
    cfg = EnvConfig(n_envs=1, episode_len=None, warmup=1, costs="zero", max_leverage=2.0,
                    dtype="float64")
    sim = TradingEnv(data=data, config=cfg)
    sim.reset(series=torch.tensor([0]), start=torch.tensor([1]), end=torch.tensor([n - 1]))
    rewards = []
    for _ in range(19):
        res = sim.step(torch.tensor([[1.0]]))
        rewards.append(float(res.reward[0]))
    assert bool(res.terminated[0]) and bool(res.ruined[0])
    assert rewards[-1] <= -cfg.ruin_penalty
    # losing 99.9% slowly, bar after bar, still earns more than the ruin step alone
    assert sum(rewards) < np.log(1e-3)


def test_costs_are_charged_on_short_positions_not_paid_to_them(synthetic):
    data = EnvData.from_market(synthetic)
    cfg = EnvConfig(n_envs=2, episode_len=None, costs="retail", dtype="float64", warmup=5)
    sim = TradingEnv(data=data, config=cfg)
    sim.reset(series=torch.tensor([0, 0]), start=torch.tensor([5, 5]))
    res = sim.step(torch.tensor([[0.9, 0.9, 0.9], [-0.9, -0.9, -0.9]]))
    long_cost, short_cost = res.costs.tolist()
    assert long_cost > 0 and short_cost > 0
    assert short_cost == pytest.approx(long_cost, rel=0.05)  # same |Δposition|, same costs
    free = TradingEnv(data=data, config=cfg.model_copy(update={"costs": CostModel()}))
    free.reset(series=torch.tensor([0, 0]), start=torch.tensor([5, 5]))
    gross = free.step(torch.tensor([[0.9, 0.9, 0.9], [-0.9, -0.9, -0.9]]))
    assert (res.equity < gross.equity).all()


def test_batched_envs_are_independent_and_match_a_single_env(synthetic):
    data = EnvData.from_market(synthetic)
    cfg = EnvConfig(n_envs=4, episode_len=50, dtype="float64")
    sim = TradingEnv(data=data, config=cfg)
    obs = sim.reset()
    assert obs.shape == (4, sim.observation_size)
    start, series = sim.t.clone(), sim.series.clone()
    rng = np.random.default_rng(1)
    actions = torch.as_tensor(rng.uniform(-1, 1, size=(20, 4, 3)))
    batched = torch.stack([sim.step(a).equity for a in actions])
    one = TradingEnv(data=data, config=cfg.model_copy(update={"n_envs": 1}))
    for b in range(4):
        one.reset(series=series[b:b + 1], start=start[b:b + 1], end=start[b:b + 1] + 50)
        alone = torch.stack([one.step(a[b:b + 1]).equity[0] for a in actions])
        torch.testing.assert_close(alone, batched[:, b], rtol=1e-12, atol=0)


def test_observation_holds_no_future_bar(synthetic):
    data = EnvData.from_market(synthetic)
    cfg = EnvConfig(n_envs=1, window=4, dtype="float64")
    sim = TradingEnv(data=data, config=cfg)
    obs = sim.reset(series=torch.tensor([0]), start=torch.tensor([100]))
    later = data.prices.copy()
    later[:, 101:] *= 1.5
    changed = EnvData.from_market(MarketData({
        s: _bars_from(synthetic.full(s), later[0, :, j]) for j, s in enumerate(synthetic.symbols)}))
    sim2 = TradingEnv(data=changed, config=cfg)
    obs2 = sim2.reset(series=torch.tensor([0]), start=torch.tensor([100]))
    torch.testing.assert_close(obs, obs2)


def _bars_from(bars: Bars, ohlcv: np.ndarray) -> Bars:
    return Bars.from_arrays(symbol=bars.symbol, interval="1d", adjusted=True, source="test",
                            time=bars.time, open=ohlcv[:, 0], high=ohlcv[:, 1], low=ohlcv[:, 2],
                            close=ohlcv[:, 3], volume=ohlcv[:, 4])


def test_env_matches_engine_on_real_spy_and_qqq(shared_data):
    bars = {s: read_bars(shared_data / "daily" / f"{s.lower()}.us.txt").between(
        "2008-06-01", "2009-06-30") for s in ("SPY", "QQQ")}
    market = MarketData(bars)
    rng = np.random.default_rng(7)
    weights = rng.uniform(-1.0, 1.0, size=(len(bars["SPY"]), 2))
    _assert_parity(market, weights, costs="default", allow_short=True, max_leverage=2.0)


@pytest.mark.parametrize("max_leverage", [1.0, 2.0])
def test_env_matches_engine_when_gaps_shrink_fills_and_the_cap_rounds_to_lots(max_leverage):
    rng = np.random.default_rng(11)
    n = 120
    gaps = [1 + rng.uniform(-0.08, 0.08, n) for _ in range(2)]
    closes = [100 * np.cumprod(g) * np.exp(rng.normal(0, 0.005, n)) for g in gaps]
    volume = np.full(n, 1e7)
    volume[rng.random(n) < 0.2] = 3333.0  # capped fills: 333.3 shares -> 333
    market = MarketData({s: _bars(s, c, volume=volume, gap=g)
                         for s, c, g in zip(("UP", "DN"), closes, gaps)})
    weights = np.where(rng.random((n, 2)) < 0.5, 1.0, -1.0) * (max_leverage / 2)
    weights[::7] = 0.0  # flat now and then: every re-entry is sized at the close
    cfg = BacktestConfig.build(symbols=market.symbols, costs="default", allow_short=True,
                               max_leverage=max_leverage)
    run = run_backtest(config=cfg, agent=_Scripted(weights, market.symbols), data=market)
    assert (run.events["kind"] == "order_shrunk").sum() > 5  # the rule is exercised
    assert (run.fills["quantity"] % 1 == 0).all()
    _assert_parity(market, weights, costs="default", allow_short=True, max_leverage=max_leverage)


class _ScriptedHolds(_Scripted):
    """Like _Scripted; NaN entries are holds (left out of the Decision)."""

    def decide(self, obs: Observation) -> Decision:
        row = self.weights[obs.step]
        return Decision(weights={s: float(w) for s, w in zip(self.symbols, row) if w == w})


@pytest.mark.parametrize("fractional", [False, True])
def test_env_works_capped_targets_across_bars_like_the_engine(fractional):
    """A thin series: targets need several bars; a NaN action holds (the target keeps
    working), a number replaces it; gaps shrink some fills for cash (those orders end)."""
    rng = np.random.default_rng(4)
    n = 90
    gaps = [1 + rng.uniform(-0.04, 0.04, n) for _ in range(2)]
    closes = [100 * np.cumprod(g) * np.exp(rng.normal(0, 0.005, n)) for g in gaps]
    volumes = [rng.choice([0.0, 2_000.0, 6_000.0, 1e6], size=n) for _ in range(2)]
    market = MarketData({s: _bars(s, c, volume=v, gap=g)
                         for s, c, v, g in zip(("TA", "TB"), closes, volumes, gaps)})
    weights = rng.uniform(-0.8, 0.8, size=(n, 2))
    weights[rng.random((n, 2)) < 0.7] = np.nan
    cfg = dict(costs={"preset": "default", "participation_cap": 0.05}, allow_short=True,
               max_leverage=2.0, fractional=fractional)
    run = run_backtest(config=BacktestConfig.build(symbols=market.symbols, **cfg),
                       agent=_ScriptedHolds(weights, market.symbols), data=market)
    per_order = run.fills.groupby("order_id").size()
    assert (per_order > 2).sum() >= 2  # orders worked over several bars
    engine = run.equity["equity"].to_numpy()
    env = _env_equity(market, weights, **cfg)
    assert env.shape == engine.shape
    np.testing.assert_allclose(env, engine, rtol=1e-9, atol=0)


# --- the single gymnasium env (compiled book) against the torch env ----------------------------

_ALL_TERMS = RewardSpec(log_growth=1.0, pnl=0.5, sharpe=0.3, downside=0.2, drawdown=0.7,
                        turnover=0.01, cost=1.0, cvar=0.2, expectile=0.3, warmup=5, window=10)


def _twins(data: EnvData, cfg: EnvConfig, actions: np.ndarray, *, series: int = 0,
           start: int, end: int | None = None) -> tuple[dict[str, np.ndarray], ...]:
    """Step the gym env and the float64 torch env from the same bar with the same actions
    until the episode ends; per-step records of both."""
    cfg = cfg.model_copy(update={"n_envs": 1, "dtype": "float64"})
    last = int(data.lengths[series]) - 1
    end = end if end is not None else (min(start + cfg.episode_len, last) if cfg.episode_len
                                        else last)
    single = QTNetGymEnv(data=data, config=cfg)
    twin = TradingEnv(data=data, config=cfg)
    obs, _ = single.reset(options={"series": series, "start": start, "end": end})
    ref = twin.reset(series=torch.tensor([series]), start=torch.tensor([start]),
                     end=torch.tensor([end]))
    np.testing.assert_array_equal(obs, ref[0].numpy().astype(np.float32))
    keys = ("equity", "reward", "costs", "terminated", "truncated", "ruined")
    ours: dict[str, list] = {k: [] for k in (*keys, "position", "obs", "liquidated", "working",
                                             "gross")}
    theirs: dict[str, list] = {k: [] for k in (*keys, "position", "obs")}
    for a in actions:
        obs, reward, terminated, truncated, info = single.step(a.astype(np.float32))
        res = twin.step(torch.as_tensor(a.astype(np.float32), dtype=torch.float64)[None],
                        with_final_obs=True)
        for k, v in (("equity", info["equity"]), ("reward", reward), ("costs", info["costs"]),
                     ("terminated", terminated), ("truncated", truncated),
                     ("ruined", info["ruined"]), ("position", single.book.position.copy()),
                     ("obs", obs), ("liquidated", info["liquidated"]),
                     ("working", bool((single.book.pending >= 0).any())),
                     ("gross", float(np.abs(single.book.weights).sum()))):
            ours[k].append(v)
        for k in keys:
            theirs[k].append(getattr(res, k)[0].item())
        theirs["obs"].append(res.final_obs[0].numpy().astype(np.float32))
        if not (terminated or truncated):  # the torch env resets done envs: not comparable
            theirs["position"].append(twin.position[0].numpy().copy())
        else:
            theirs["position"].append(ours["position"][-1])
            break
    return ({k: np.array(v) for k, v in ours.items()}, {k: np.array(v) for k, v in theirs.items()})


def _assert_twins(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> None:
    for k in ("terminated", "truncated", "ruined"):
        np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)
    np.testing.assert_allclose(ours["equity"], theirs["equity"], rtol=1e-9, atol=0)
    np.testing.assert_allclose(ours["reward"], theirs["reward"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["costs"], theirs["costs"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours["position"], theirs["position"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours["obs"], theirs["obs"], rtol=1e-6, atol=1e-6)


def _random_actions(rng: np.random.Generator, steps: int, n: int,
                    holds: float = 0.0) -> np.ndarray:
    actions = rng.uniform(-1.0, 1.0, size=(steps, n))
    actions[rng.random((steps, n)) < holds] = np.nan  # a NaN action holds (the order works on)
    return actions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gym_env_matches_torch_env_with_shorts_leverage_and_every_reward_term(synthetic, seed):
    data = EnvData.from_market(synthetic)
    cfg = EnvConfig(costs="default", max_leverage=2.5, reward=_ALL_TERMS, episode_len=None,
                    warmup=20, window=3)
    rng = np.random.default_rng(seed)
    start = int(rng.integers(20, 150))
    ours, theirs = _twins(data, cfg, _random_actions(rng, 400, 3, holds=0.2), start=start)
    _assert_twins(ours, theirs)
    assert ours["terminated"][-1] and not ours["ruined"][-1]  # ran to the end of the data
    assert (ours["position"] < 0).any() and ours["gross"].max() > 1.2  # shorts, leverage > 1


def test_gym_env_truncates_at_episode_len_like_the_torch_env(synthetic):
    data = EnvData.from_market(synthetic)
    cfg = EnvConfig(costs="retail", episode_len=40, fractional=True)
    ours, theirs = _twins(data, cfg, _random_actions(np.random.default_rng(5), 60, 3),
                          start=100)
    _assert_twins(ours, theirs)
    assert len(ours["equity"]) == 40 and ours["truncated"][-1] and not ours["terminated"][-1]


@pytest.mark.parametrize("fractional", [False, True])
def test_gym_env_matches_torch_env_through_the_participation_cap(fractional):
    rng = np.random.default_rng(4)
    n = 120
    gaps = [1 + rng.uniform(-0.04, 0.04, n) for _ in range(2)]
    closes = [100 * np.cumprod(g) * np.exp(rng.normal(0, 0.005, n)) for g in gaps]
    volumes = [rng.choice([0.0, 2_000.0, 6_000.0, 1e6], size=n) for _ in range(2)]
    market = MarketData({s: _bars(s, c, volume=v, gap=g)
                         for s, c, v, g in zip(("TA", "TB"), closes, volumes, gaps)})
    data = EnvData.from_market(market)
    cfg = EnvConfig(costs={"preset": "default", "participation_cap": 0.05}, max_leverage=2.0,
                    fractional=fractional, episode_len=None, warmup=5, reward=_ALL_TERMS)
    ours, theirs = _twins(data, cfg, _random_actions(rng, n, 2, holds=0.6), start=5)
    _assert_twins(ours, theirs)
    assert ours["working"].sum() >= 5  # capped orders kept working across bars


def _gapping(n: int, at: int, gap: float, *, thin: int | None = None) -> EnvData:
    close = 100 * np.cumprod(np.r_[1.0, np.full(n - 1, 1.002)])
    gaps = np.ones(n)
    gaps[at] = gap
    close[at:] *= gap
    volume = np.full(n, 1e7)
    if thin is not None:
        volume[thin] = 300.0
    return EnvData.from_market(MarketData({"X": _bars("X", close, volume=volume, gap=gaps)}))


def test_gym_env_matches_torch_env_through_a_margin_liquidation():
    data = _gapping(60, 40, 0.64, thin=5)
    cfg = EnvConfig(costs={"preset": "default", "participation_cap": 0.01}, max_leverage=2.0,
                    episode_len=None, warmup=1, reward=_ALL_TERMS)
    ours, theirs = _twins(data, cfg, np.ones((60, 1)), start=1)
    _assert_twins(ours, theirs)
    assert ours["liquidated"].sum() == 1 and ours["working"].any()
    assert not ours["ruined"].any() and ours["terminated"][-1]


def test_gym_env_matches_torch_env_at_ruin_with_the_penalty():
    data = _gapping(30, 20, 0.4)
    cfg = EnvConfig(costs="zero", max_leverage=2.0, episode_len=None, warmup=1)
    ours, theirs = _twins(data, cfg, np.ones((30, 1)), start=1)
    _assert_twins(ours, theirs)
    assert ours["ruined"][-1] and ours["terminated"][-1] and len(ours["equity"]) == 19
    assert ours["reward"][-1] <= -cfg.ruin_penalty


def test_gym_env_seeds_reproducibly_and_passes_the_gymnasium_checker(synthetic):
    from gymnasium.utils.env_checker import check_env

    data = EnvData.from_market(synthetic)
    cfg = EnvConfig(episode_len=32, warmup=30, window=2)
    env = QTNetGymEnv(data=data, config=cfg)
    check_env(env, skip_render_check=True)
    first = [env.reset(seed=s)[0] for s in (7, 8, 7)]
    np.testing.assert_array_equal(first[0], first[2])
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        steps, done = steps + 1, terminated or truncated
    assert steps <= 32 and set(info) == {"equity", "costs", "ruined", "liquidated"}
    with pytest.raises(ResetNeeded):
        env.step(env.action_space.sample())
    again = QTNetGymEnv(data=data, config=cfg)  # no seed given: the config's seed
    np.testing.assert_array_equal(again.reset()[0], QTNetGymEnv(data=data, config=cfg).reset()[0])
