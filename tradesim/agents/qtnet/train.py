"""Recurrent DPG with target nets and per-step Q-filtered behaviour cloning (iRDPG lineage).

Each iteration runs ``n_envs`` whole episodes in the batched env with exploration noise, stores
them as sequences, and makes ``updates`` gradient steps on sampled sequences: a TD critic loss
against target nets, and an actor loss ``-Q(h_t, mu(h_t))`` (gradients flow through the
critic into the actor) plus ``bc_weight x`` behaviour cloning toward the best teacher at each
step, applied only at steps where the critic rates that teacher above the policy (Q-filter).
``bc_weight`` decays linearly to 0. Validation runs the deterministic policy on held-out data;
the best checkpoint is kept and training stops after ``patience`` evaluations without gain.

Why recurrent DPG rather than recurrent PPO: the action is a continuous target weight and the
imitation signal must be gated per step by a critic that scores *arbitrary* actions (the
teachers' as well as the policy's), which a Q-function gives and PPO's state-value critic does
not; an off-policy replay of whole sequences also reuses every batched-env episode many times
(``updates`` steps per rollout), where PPO discards them after a few epochs. This is iRDPG's
design (Liu et al., AAAI-20), which QTNet builds on; we did not run a PPO comparison, and the
gymnasium wrapper lets stable-baselines3 PPO train on the same env for anyone who wants one.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from tradesim.agents.qtnet.env import EnvConfig, EnvData, TradingEnv
from tradesim.agents.qtnet.features import FEATURES
from tradesim.agents.qtnet.model import Actor, Critic
from tradesim.data.bars import to_utc_stamp
from tradesim.data.view import MarketData
from tradesim.errors import ConfigError


class TrainConfig(BaseModel):
    """Training hyper-parameters (frozen; snapshotted into every checkpoint)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    env: EnvConfig = Field(default_factory=lambda: EnvConfig(n_envs=64, episode_len=64))
    iterations: int = Field(50, ge=1)
    updates: int = Field(8, ge=1, description="gradient steps per iteration")
    batch_size: int = Field(64, ge=1, description="sequences per gradient step")
    buffer_size: int = Field(4096, ge=1, description="sequences kept for replay")
    hidden: int = Field(64, ge=1)
    gamma: float = Field(0.99, gt=0, le=1)
    tau: float = Field(0.01, gt=0, le=1, description="target-net soft update rate")
    lr_actor: float = Field(1e-3, gt=0)
    lr_critic: float = Field(1e-3, gt=0)
    reward_scale: float = Field(100.0, gt=0, description="log growth per bar is ~1e-2")
    noise: float = Field(0.3, ge=0, description="exploration noise std, decays to noise/10")
    bc_weight: float = Field(1.0, ge=0, description="initial behaviour-cloning weight")
    bc_anneal: float = Field(0.5, gt=0, le=1, description="fraction of iterations to reach 0")
    hindsight_teacher: bool = Field(False, description="TRAINING ONLY: add the look-ahead oracle")
    eval_every: int = Field(5, ge=1)
    patience: int = Field(4, ge=1)
    seed: int = 0


@dataclass(slots=True)
class Batch:
    """Sequences ``[B, L(+1)]``: observations (one more than actions), actions, rewards, flags."""

    obs: torch.Tensor  # [B, L+1, D]
    action: torch.Tensor  # [B, L, N]
    reward: torch.Tensor  # [B, L]
    terminal: torch.Tensor  # [B, L] 1 where the episode ended for good (no bootstrap)
    valid: torch.Tensor  # [B, L] 0 after an episode ended inside the sequence
    demo: torch.Tensor  # [B, L, K, N] teachers' actions


def q_filter(q_demo: torch.Tensor, q_pi: torch.Tensor) -> torch.Tensor:
    """Per-step mask ``[B, L]``: 1 where the teacher's Q beats the policy's at that very step."""
    return (q_demo > q_pi).to(q_pi.dtype).detach()


def bc_loss(action: torch.Tensor, demo: torch.Tensor, mask: torch.Tensor,
            valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid steps of ``mask_t x ||a_t - demo_t||^2`` (per step, never averaged first)."""
    per_step = ((action - demo) ** 2).sum(-1) * mask * valid
    return per_step.sum() / valid.sum().clamp_min(1.0)


def actor_loss(*, actor: Actor, critic: Critic, batch: Batch,
               bc_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """DPG loss through the critic plus Q-filtered cloning of the best teacher at each step."""
    obs = batch.obs[:, :-1]
    action, _ = actor(obs)
    z = critic.encode(obs).detach()  # the actor learns through Q's action input only
    q_pi = critic.q(z, action)
    valid = batch.valid
    loss = -(q_pi * valid).sum() / valid.sum().clamp_min(1.0)
    info = {"q_pi": float(q_pi.detach().mean())}
    if bc_weight > 0:
        with torch.no_grad():
            q_teach = critic.q(z[:, :, None, :], batch.demo)  # [B, L, K]
            best = q_teach.argmax(-1)
            q_best = q_teach.gather(-1, best[..., None])[..., 0]
            demo = batch.demo.gather(2, best[..., None, None].expand(
                -1, -1, 1, batch.demo.shape[-1]))[:, :, 0]
        mask = q_filter(q_best, q_pi)
        loss = loss + bc_weight * bc_loss(action, demo, mask, valid)
        info["bc_frac"] = float((mask * valid).sum() / valid.sum().clamp_min(1.0))
    return loss, info


def critic_loss(*, critic: Critic, target_actor: Actor, target_critic: Critic, batch: Batch,
                gamma: float) -> torch.Tensor:
    """Masked TD error against the target nets run over the same sequences."""
    q = critic(batch.obs[:, :-1], batch.action)
    with torch.no_grad():
        next_action, _ = target_actor(batch.obs)
        q_next = target_critic(batch.obs, next_action)[:, 1:]
        y = batch.reward + gamma * (1.0 - batch.terminal) * q_next
    return (((q - y) ** 2) * batch.valid).sum() / batch.valid.sum().clamp_min(1.0)


class _Replay:
    """Ring buffer of whole-episode sequences on the training device."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.size, self._next = capacity, 0, 0
        self._store: dict[str, torch.Tensor] = {}

    def add(self, batch: Batch) -> None:
        n = batch.obs.shape[0]
        if not self._store:
            self._store = {k: torch.zeros((self.capacity, *getattr(batch, k).shape[1:]),
                                          dtype=getattr(batch, k).dtype,
                                          device=getattr(batch, k).device)
                           for k in Batch.__slots__}
        idx = (torch.arange(n, device=batch.obs.device) + self._next) % self.capacity
        for k in Batch.__slots__:
            self._store[k][idx] = getattr(batch, k)
        self._next = (self._next + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int, gen: torch.Generator) -> Batch:
        dev = self._store["obs"].device
        idx = torch.randint(0, self.size, (n,), generator=gen, device=dev)
        return Batch(**{k: v[idx] for k, v in self._store.items()})


def rollout(*, env: TradingEnv, actor: Actor, noise: float, gen: torch.Generator) -> Batch:
    """One episode per env (``episode_len`` steps) with Gaussian exploration noise."""
    steps = env.config.episode_len
    if steps is None:
        raise ConfigError("training rollouts need a finite env episode_len (got None)")
    obs = env.reset()
    seq_obs, acts, rews, terms, valids, demos = [obs], [], [], [], [], []
    alive = torch.ones(env.n_envs, dtype=obs.dtype, device=obs.device)
    h = None
    with torch.no_grad():
        for _ in range(steps):
            a, h = actor(obs[:, None].float(), h)
            a = a[:, 0]
            if noise > 0:
                a = (a + noise * torch.randn(a.shape, generator=gen, device=a.device)).clamp(-1, 1)
            demos.append(env.demonstrations())
            res = env.step(a, with_final_obs=True)
            acts.append(a)
            rews.append(res.reward)
            terms.append(res.terminated.to(obs.dtype))
            valids.append(alive)
            assert res.final_obs is not None  # with_final_obs=True always fills it
            seq_obs.append(res.final_obs)
            alive = alive * (1.0 - (res.terminated | res.truncated).to(obs.dtype))
            obs = res.obs
    f = torch.float32
    return Batch(obs=torch.stack(seq_obs, 1).to(f), action=torch.stack(acts, 1).to(f),
                 reward=torch.stack(rews, 1).to(f), terminal=torch.stack(terms, 1).to(f),
                 valid=torch.stack(valids, 1).to(f), demo=torch.stack(demos, 1).to(f))


def evaluate(*, actor: Actor, data: EnvData, config: EnvConfig,
             device: torch.device | str = "cpu") -> float:
    """Mean log growth of equity of the deterministic policy, one run per series (to the end)."""
    s = data.prices.shape[0]
    cfg = config.model_copy(update={"n_envs": s, "episode_len": None})
    env = TradingEnv(data=data, config=cfg, device=device)
    series = torch.arange(s, device=env.device)
    start = torch.full((s,), cfg.warmup, device=env.device)
    obs = env.reset(series=series, start=start, end=env.lengths - 1)
    alive = torch.ones(s, dtype=torch.bool, device=env.device)
    final = torch.full((s,), cfg.initial_cash, dtype=env.dtype, device=env.device)
    h = None
    steps = int(data.lengths.max()) - cfg.warmup - 1
    with torch.no_grad():
        for _ in range(steps):
            a, h = actor(obs[:, None].float(), h)
            res = env.step(a[:, 0])
            final = torch.where(alive, res.equity, final)
            alive = alive & ~res.terminated
            obs = res.obs
    return float((final.clamp_min(1e-12) / cfg.initial_cash).log().mean())


def checkpoint(*, actor: Actor, critic: Critic, config: TrainConfig, data: EnvData,
               obs_size: int, extra: dict | None = None) -> dict:
    """A ``weights_only``-loadable checkpoint: state dicts plus plain-typed metadata."""
    def frozen(net: torch.nn.Module) -> dict[str, torch.Tensor]:  # training goes on in place
        return {k: v.detach().clone() for k, v in net.state_dict().items()}

    return {"actor": frozen(actor), "critic": frozen(critic),
            "config": config.model_dump(mode="json"), "obs_size": obs_size,
            "n_assets": data.n_assets, "features": list(FEATURES),
            "symbols": list(data.symbols), **(extra or {})}


def train(*, config: TrainConfig, train_data: EnvData, val_data: EnvData | None = None,
          device: torch.device | str = "cpu", out_dir: str | Path | None = None,
          progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train; returns the best checkpoint dict (also saved as ``best.pt`` in ``out_dir``)."""
    torch.manual_seed(config.seed)
    device = torch.device(device)
    gen = torch.Generator(device=device)
    gen.manual_seed(config.seed)
    env_cfg = config.env.model_copy(update={"seed": config.seed})
    env = TradingEnv(data=train_data, config=env_cfg, device=device)
    size, n = env.observation_size, env.n_assets
    actor = Actor(obs_size=size, n_assets=n, hidden=config.hidden).to(device)
    critic = Critic(obs_size=size, n_assets=n, hidden=config.hidden).to(device)
    t_actor, t_critic = copy.deepcopy(actor), copy.deepcopy(critic)
    for net in (t_actor, t_critic):
        net.gru.flatten_parameters()  # deepcopy breaks cuDNN's single weight chunk
    for p in (*t_actor.parameters(), *t_critic.parameters()):
        p.requires_grad_(False)
    opt_a = torch.optim.Adam(actor.parameters(), lr=config.lr_actor)
    opt_c = torch.optim.Adam(critic.parameters(), lr=config.lr_critic)
    replay = _Replay(config.buffer_size)
    out = Path(out_dir) if out_dir is not None else None
    best, best_score, stale, steps = None, -math.inf, 0, 0
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        writer = None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            log_file = stack.enter_context(open(out / "log.csv", "w", newline=""))
            writer = csv.DictWriter(log_file, fieldnames=[
                "iteration", "env_steps", "critic_loss", "actor_loss", "q_pi", "bc_weight",
                "bc_frac", "train_log_growth", "val_log_growth", "seconds"])
            writer.writeheader()
        for it in range(config.iterations):
            frac = it / max(config.iterations - 1, 1)
            noise = config.noise * (1.0 - 0.9 * frac)
            bc_w = config.bc_weight * max(0.0, 1.0 - frac / config.bc_anneal)
            batch = rollout(env=env, actor=actor, noise=noise, gen=gen)
            steps += int(batch.valid.numel())
            batch.reward.mul_(config.reward_scale)
            replay.add(batch)
            for _ in range(config.updates):
                sample = replay.sample(config.batch_size, gen)
                lc = critic_loss(critic=critic, target_actor=t_actor, target_critic=t_critic,
                                 batch=sample, gamma=config.gamma)
                opt_c.zero_grad(set_to_none=True)
                lc.backward()
                torch.nn.utils.clip_grad_norm_(critic.parameters(), 10.0)
                opt_c.step()
                la, info = actor_loss(actor=actor, critic=critic, batch=sample, bc_weight=bc_w)
                opt_a.zero_grad(set_to_none=True)
                la.backward()
                critic.zero_grad(set_to_none=True)  # only the actor learns from the actor loss
                torch.nn.utils.clip_grad_norm_(actor.parameters(), 10.0)
                opt_a.step()
                with torch.no_grad():
                    for net, tgt in ((actor, t_actor), (critic, t_critic)):
                        for p, tp in zip(net.parameters(), tgt.parameters(), strict=True):
                            tp.lerp_(p, config.tau)
            train_growth = float((batch.reward * batch.valid).sum(1).mean() / config.reward_scale)
            row = {"iteration": it, "env_steps": steps, "critic_loss": float(lc.detach()),
                   "actor_loss": float(la.detach()), "q_pi": info["q_pi"], "bc_weight": bc_w,
                   "bc_frac": info.get("bc_frac", 0.0),
                   "train_log_growth": train_growth,
                   "val_log_growth": "", "seconds": round(time.perf_counter() - started, 3)}
            last = it == config.iterations - 1
            if (it + 1) % config.eval_every == 0 or last:
                score = (evaluate(actor=actor, data=val_data, config=env_cfg, device=device)
                         if val_data is not None else train_growth)
                row["val_log_growth"] = score
                if score > best_score:
                    best_score, stale = score, 0
                    best = checkpoint(actor=actor, critic=critic, config=config, data=train_data,
                                      obs_size=size, extra={"iteration": it,
                                                            "val_log_growth": score})
                    if out is not None:
                        torch.save(best, out / "best.pt")
                else:
                    stale += 1
            if writer is not None:
                writer.writerow(row)
                log_file.flush()
            if progress is not None:
                progress(it + 1, config.iterations, row)
            if stale >= config.patience:
                break
    if out is not None:
        torch.save(checkpoint(actor=actor, critic=critic, config=config, data=train_data,
                              obs_size=size, extra={"iteration": it}), out / "last.pt")
    assert best is not None  # the last iteration always evaluates, and any real score beats -inf
    return best


def load_checkpoint(path: str | Path, *, device: torch.device | str = "cpu"
                    ) -> tuple[Actor, dict]:
    """The actor of a saved checkpoint (loaded with ``weights_only=True``) and its metadata."""
    ckpt = torch.load(Path(path), map_location=device, weights_only=True)
    cfg = TrainConfig.model_validate(ckpt["config"])
    actor = Actor(obs_size=int(ckpt["obs_size"]), n_assets=int(ckpt["n_assets"]),
                  hidden=cfg.hidden).to(device)
    actor.load_state_dict(ckpt["actor"])
    actor.eval()
    return actor, ckpt


def split_market(market: MarketData, *, split: object) -> tuple[MarketData, MarketData]:
    """Bars ending before ``split`` (training) and from it on (validation / held-out)."""
    stamp = to_utc_stamp(split)
    train_part, held_out = {}, {}
    for s in market.symbols:
        bars = market.full(s)
        cut = int(np.searchsorted(bars.time, stamp, "left"))
        train_part[s], held_out[s] = bars.slice(0, cut), bars.slice(cut, len(bars))
    for name, part in (("training", train_part), ("validation", held_out)):
        short = [s for s, b in part.items() if len(b) < 100]
        if short:
            raise ConfigError(f"split {split}: the {name} part of {', '.join(short)} has under "
                              "100 bars; move --split or load a longer history")
    return MarketData(train_part), MarketData(held_out)
