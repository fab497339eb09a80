"""QTNet learning: gradients through the critic, per-step Q-filter, checkpoints, canaries, SB3."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tradesim.agents.qtnet.agent import QTNetAgent
from tradesim.agents.qtnet.env import EnvConfig, EnvData
from tradesim.agents.qtnet.features import make_features
from tradesim.agents.qtnet.model import Actor, Critic
from tradesim.agents.qtnet.train import (
    Batch,
    TrainConfig,
    actor_loss,
    bc_loss,
    evaluate,
    load_checkpoint,
    q_filter,
    rollout,
    train,
)
from tradesim.agents.registry import load_agent
from tradesim.contracts import Observation
from tradesim.data.bars import Bars
from tradesim.data.view import MarketData
from tradesim.evaluate.backtest import BacktestConfig, run_backtest


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _walk(symbol: str, n: int, seed: int) -> Bars:
    """A driftless random walk of daily bars with ample volume."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]] * np.exp(rng.normal(0, 0.002, n))
    time = np.datetime64("2000-01-03T21:00", "ns") + np.arange(n) * np.timedelta64(1, "D")
    return Bars.from_arrays(symbol=symbol, interval="1d", adjusted=True, source="walk", time=time,
                            open=open_, high=np.maximum(open_, close) * 1.003,
                            low=np.minimum(open_, close) * 0.997, close=close,
                            volume=np.full(n, 1e7))


def _walks(seed: int, *, n: int = 400, k: int = 4) -> MarketData:
    return MarketData({f"W{i}": _walk(f"W{i}", n, seed * 10 + i) for i in range(k)})


def _with_future_returns(data: EnvData) -> EnvData:
    """Feature 0 replaced by the return a decision at t earns (open t+1 -> open t+2): a leak."""
    o = data.prices[..., 0]
    nxt = np.zeros_like(o)
    nxt[:, :-2] = np.log(o[:, 2:] / o[:, 1:-1])
    feats = data.features.copy()
    feats[..., 0] = np.clip(nxt / 0.01, -10, 10)
    return dataclasses.replace(data, features=feats)


def _batch(obs_size: int = 7, b: int = 3, length: int = 5, k: int = 2) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(obs=torch.randn(b, length + 1, obs_size, generator=g),
                 action=torch.rand(b, length, 1, generator=g) * 2 - 1,
                 reward=torch.randn(b, length, generator=g), terminal=torch.zeros(b, length),
                 valid=torch.ones(b, length), demo=torch.sign(torch.randn(b, length, k, 1,
                                                                          generator=g)))


def test_actor_learns_through_the_critic_when_cloning_is_off():
    torch.manual_seed(0)
    actor, critic = Actor(obs_size=7, n_assets=1, hidden=8), Critic(obs_size=7, n_assets=1,
                                                                     hidden=8)
    loss, _ = actor_loss(actor=actor, critic=critic, batch=_batch(), bc_weight=0.0)
    loss.backward()
    grads = [p.grad for p in actor.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0  # a detached Q term would give none


def test_q_filter_gates_cloning_step_by_step_not_by_sequence_average():
    q_demo = torch.tensor([[2.0, -1.0, -1.0, -1.0]])  # sequence mean below q_pi's ...
    q_pi = torch.zeros(1, 4)  # ... yet the teacher is better at step 0
    mask = q_filter(q_demo, q_pi)
    assert mask.tolist() == [[1.0, 0.0, 0.0, 0.0]]
    action = torch.zeros(1, 4, 1, requires_grad=True)
    demo = torch.ones(1, 4, 1)
    bc_loss(action, demo, mask, torch.ones(1, 4)).backward()
    grad = action.grad[0, :, 0]
    assert grad[0] < 0 and (grad[1:] == 0).all()


def test_actor_loss_clones_only_where_the_critic_prefers_a_teacher():
    torch.manual_seed(1)
    actor, critic = Actor(obs_size=7, n_assets=1, hidden=8), Critic(obs_size=7, n_assets=1,
                                                                     hidden=8)
    batch = _batch()
    plain, _ = actor_loss(actor=actor, critic=critic, batch=batch, bc_weight=0.0)
    cloned, info = actor_loss(actor=actor, critic=critic, batch=batch, bc_weight=5.0)
    assert 0.0 <= info["bc_frac"] <= 1.0
    assert float(cloned.detach()) >= float(plain.detach())
    if info["bc_frac"] == 0.0:
        assert float(cloned.detach()) == pytest.approx(float(plain.detach()))


def test_hindsight_teacher_never_reaches_features():
    market = _walks(3, n=120, k=1)
    plain = EnvData.from_market(market)
    oracle = EnvData.from_market(market, hindsight_teacher=True)
    np.testing.assert_array_equal(plain.features, oracle.features)
    assert oracle.teachers.shape[1] == plain.teachers.shape[1] + 1


def test_train_writes_weights_only_checkpoints_and_the_policy_backtests(tmp_path):
    market = _walks(5, n=160, k=2)
    data = EnvData.from_market(market, separate=True)
    cfg = TrainConfig(env=EnvConfig(n_envs=4, episode_len=8, warmup=30), iterations=2,
                      updates=1, batch_size=4, hidden=8, eval_every=1)
    best = train(config=cfg, train_data=data, val_data=data, out_dir=tmp_path)
    assert best is not None and (tmp_path / "best.pt").is_file()
    lines = (tmp_path / "log.csv").read_text().splitlines()
    assert lines[0].startswith("iteration,") and len(lines) == 3
    actor, _meta = load_checkpoint(tmp_path / "best.pt")
    for name, tensor in actor.state_dict().items():
        torch.testing.assert_close(tensor, best["actor"][name])
    agent = load_agent("tradesim.agents.qtnet:QTNetAgent", checkpoint=str(tmp_path / "best.pt"))
    config = BacktestConfig.build(symbols=("W0",), allow_short=True, costs="default")
    result = run_backtest(config=config, agent=agent, data=MarketData({"W0": market.full("W0")}))
    assert np.isfinite(result.final_equity) and len(result.equity) == 160
    saved = agent.state()
    agent.load_state(saved)
    assert agent.state() == saved


def test_rollout_marks_steps_after_an_episode_end_invalid():
    data = EnvData.from_market(_walks(6, n=100, k=1))
    cfg = EnvConfig(n_envs=3, episode_len=10, warmup=30, max_leverage=3.0)
    from tradesim.agents.qtnet.env import TradingEnv
    env = TradingEnv(data=data, config=cfg)
    batch = rollout(env=env, actor=Actor(obs_size=env.observation_size, n_assets=1, hidden=8),
                    noise=0.5, gen=torch.Generator().manual_seed(0))
    assert batch.obs.shape == (3, 11, env.observation_size)
    assert batch.demo.shape == (3, 10, 3, 1)
    assert (batch.valid == 1).all()  # whole episodes of exactly episode_len steps
    assert torch.isfinite(batch.reward).all()


def _canary(leak: bool) -> float:
    torch.manual_seed(0)
    train_data = EnvData.from_market(_walks(1), separate=True)
    val_data = EnvData.from_market(_walks(2), separate=True)
    if leak:
        train_data, val_data = _with_future_returns(train_data), _with_future_returns(val_data)
    cfg = TrainConfig(env=EnvConfig(n_envs=32, episode_len=32, warmup=30), iterations=10,
                      updates=24, batch_size=64, hidden=32, gamma=0.5, bc_weight=0.0,
                      lr_actor=3e-3, lr_critic=3e-3, eval_every=100)
    best = train(config=cfg, train_data=train_data)
    actor = Actor(obs_size=best["obs_size"], n_assets=1, hidden=32)
    actor.load_state_dict(best["actor"])
    return evaluate(actor=actor, data=val_data, config=cfg.env)


@pytest.mark.slow
def test_canary_agent_that_sees_future_returns_profits_clearly():
    assert _canary(leak=True) > 0.5  # log growth over ~370 held-out bars of 4 random walks


@pytest.mark.slow
def test_canary_agent_does_not_beat_costs_on_a_random_walk():
    assert _canary(leak=False) < 0.02


def test_stable_baselines3_ppo_trains_on_the_gymnasium_wrapper():
    pytest.importorskip("stable_baselines3")
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3 import PPO

    from tradesim.agents.qtnet.gym_env import QTNetGymEnv

    data = EnvData.from_market(_walks(4, n=200, k=1))
    env = QTNetGymEnv(data=data, config=EnvConfig(episode_len=64, warmup=30, window=4))
    check_env(env, skip_render_check=True)
    model = PPO("MlpPolicy", env, n_steps=128, batch_size=64, n_epochs=2, seed=0, device="cpu")
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    after = model.policy.parameters()
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


class _FullRecompute(QTNetAgent):
    """Reference: features recomputed from every visible bar at each decision (the slow way)."""

    def _features(self, obs: Observation, group: tuple[str, ...]) -> np.ndarray | None:
        bars = [obs.bars(s) for s in group]
        n = min(len(b) for b in bars)
        if n < self.env.warmup:
            return None
        cols = {k: np.stack([getattr(b, k)[-n:] for b in bars], axis=1)
                for k in ("open", "high", "low", "close", "volume")}
        return make_features(time=bars[0].time[-n:], **cols)[-self.env.window:]


def test_bounded_incremental_decisions_equal_a_full_recomputation(tmp_path):
    market = _walks(8, n=300, k=2)  # longer than the agent's lookback, so the bound matters
    data = EnvData.from_market(market, separate=True)
    cfg = TrainConfig(env=EnvConfig(n_envs=4, episode_len=16, warmup=30, window=3),
                      iterations=1, updates=1, batch_size=4, hidden=8, eval_every=1)
    train(config=cfg, train_data=data, out_dir=tmp_path)
    config = BacktestConfig.build(symbols=("W0", "W1"), allow_short=True, costs="default")
    fast = run_backtest(config=config, data=market,
                        agent=QTNetAgent(checkpoint=str(tmp_path / "best.pt")))
    slow = run_backtest(config=config, data=market,
                        agent=_FullRecompute(checkpoint=str(tmp_path / "best.pt")))
    assert (fast.weights.abs().to_numpy() > 0).any()
    np.testing.assert_allclose(fast.weights.to_numpy(), slow.weights.to_numpy(), atol=1e-6)
    np.testing.assert_allclose(fast.equity["equity"].to_numpy(),
                               slow.equity["equity"].to_numpy(), rtol=1e-9)
