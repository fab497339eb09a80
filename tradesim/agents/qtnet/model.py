"""Recurrent actor and critic (iRDPG lineage): each encodes the observation history with a GRU.

The critic scores any action against the same history encoding, so the Q-filter can compare
the policy's action with each teacher's at every step.
"""

from __future__ import annotations

import torch
from torch import nn


class Actor(nn.Module):
    """GRU policy: observations ``[B, T, D]`` -> actions in [-1, 1] ``[B, T, N]``."""

    def __init__(self, *, obs_size: int, n_assets: int, hidden: int = 64) -> None:
        super().__init__()
        self.inp = nn.Sequential(nn.Linear(obs_size, hidden), nn.ReLU())
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_assets))

    def forward(self, obs: torch.Tensor, h0: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        z, h = self.gru(self.inp(obs), h0)
        return torch.tanh(self.head(z)), h


class Critic(nn.Module):
    """GRU critic: Q(history up to t, action at t) ``[B, T]``."""

    def __init__(self, *, obs_size: int, n_assets: int, hidden: int = 64) -> None:
        super().__init__()
        self.inp = nn.Sequential(nn.Linear(obs_size, hidden), nn.ReLU())
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden + n_assets, hidden), nn.ReLU(),
                                  nn.Linear(hidden, 1))

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """History encoding ``[B, T, H]`` (zero initial state: sequences start at episode start)."""
        return self.gru(self.inp(obs))[0]

    def q(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q of ``action [..., N]`` given encodings ``z [..., H]`` (broadcast over extra axes)."""
        z = z.expand(*action.shape[:-1], z.shape[-1])
        return self.head(torch.cat([z, action], dim=-1))[..., 0]

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.q(self.encode(obs), action)
