"""Gymnasium single-env wrapper of :class:`TradingEnv` (for stable-baselines3 and others)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from tradesim.agents.qtnet.env import EnvConfig, EnvData, TradingEnv


class QTNetGymEnv(gym.Env):
    """One book on the CPU; ``step`` takes actions in [-1, 1]^N and returns float32 observations."""

    metadata: dict[str, Any] = {"render_modes": []}  # an instance attribute on gym.Env

    def __init__(self, *, data: EnvData, config: EnvConfig | None = None) -> None:
        cfg = (config or EnvConfig()).model_copy(update={"n_envs": 1})
        self.env = TradingEnv(data=data, config=cfg, device="cpu")
        n, size = self.env.n_assets, self.env.observation_size
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(n,), dtype=np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(size,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self.env._gen.manual_seed(seed)
        return self.env.reset()[0].numpy().astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        res = self.env.step(torch.as_tensor(np.asarray(action, dtype=np.float64)).reshape(1, -1),
                            with_final_obs=True)
        terminated, truncated = bool(res.terminated[0]), bool(res.truncated[0])
        obs = res.final_obs if terminated or truncated else res.obs
        assert obs is not None  # with_final_obs=True always fills final_obs
        info = {"equity": float(res.equity[0]), "costs": float(res.costs[0]),
                "ruined": bool(res.ruined[0])}
        return (obs[0].numpy().astype(np.float32), float(res.reward[0]), terminated, truncated,
                info)
