"""A trained QTNet policy as an ordinary agent: ``tradesim.agents.qtnet:QTNetAgent``.

At each decision it builds the same observation the env gives (features from the visible bars
only, the book's weights, log equity growth since the episode began) and steps the GRU once.
Features come from the last ``lookback`` visible bars and only the ``window`` newest rows are
computed (``make_features(tail=...)``): per-decision cost is bounded, not growing with history,
and equals the full recomputation (tests compare both).
The hidden state restarts every ``episode_len`` decisions, as in training, so the policy never
runs on histories longer than it learnt from. A single-asset policy trades each symbol with
its own state and 1/N of the leverage; a joint policy needs the universe it was trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from tradesim.agents.qtnet.features import make_features
from tradesim.agents.qtnet.train import TrainConfig, load_checkpoint
from tradesim.contracts import AgentParams, BaseAgent, Decision, Observation, RunContext
from tradesim.device import pick_device
from tradesim.errors import ConfigError

_HISTORY = 256  # bars of history to compute features from (>> EWMA span and Dual Thrust days)


class QTNetAgent(BaseAgent):
    """Deterministic QTNet policy loaded from a ``train qtnet`` checkpoint."""

    name = "qtnet"

    class Params(AgentParams):
        checkpoint: str = Field(description="a `tradesim train qtnet` checkpoint (DIR/best.pt)")
        device: str = Field("cpu", description="torch device: cpu, cuda, mps or auto")
        bars_per_day: int | None = Field(None, ge=1, description="most bars one day holds, for "
                                         "intraday data (1440 for 1-minute bars)")

    def __init__(self, **params: Any) -> None:
        p = self._configure(params)
        checkpoint, device, bars_per_day = p.checkpoint, p.device, p.bars_per_day
        if not Path(checkpoint).is_file():
            raise ConfigError(f"checkpoint {checkpoint} does not exist; train one with "
                              "`tradesim train qtnet --out DIR` and pass DIR/best.pt")
        self.device = pick_device(device)
        self.actor, meta = load_checkpoint(checkpoint, device=self.device)
        self.checkpoint = str(checkpoint)
        cfg = TrainConfig.model_validate(meta["config"])
        self.env = cfg.env
        self.n_assets = int(meta["n_assets"])
        self.trained_symbols = tuple(meta["symbols"])
        # Dual Thrust needs its completed days (4) plus today in view, on intraday bars too
        self.lookback = _HISTORY + self.env.window + (0 if bars_per_day is None
                                                      else 6 * bars_per_day)
        self._h: dict[str, torch.Tensor] = {}
        self._steps = 0
        self._start_equity = 0.0

    def _groups(self, universe: tuple[str, ...]) -> list[tuple[str, ...]]:
        if self.n_assets == 1:
            return [(s,) for s in universe]
        if len(universe) != self.n_assets:
            raise ConfigError(f"this QTNet policy trades {self.n_assets} symbols jointly "
                              f"({', '.join(self.trained_symbols)}) but the universe has "
                              f"{len(universe)}; run it on that universe or train a separate "
                              "(single-asset) policy")
        return [tuple(universe)]

    def _features(self, obs: Observation, group: tuple[str, ...]) -> np.ndarray | None:
        """Feature window ``[window, N, F]`` of ``group`` at ``obs.time`` (None in warm-up)."""
        bars = [obs.bars(s, lookback=self.lookback) for s in group]
        n = min(len(b) for b in bars)
        if n < self.env.warmup:
            return None
        cols = {k: np.stack([getattr(b, k)[-n:] for b in bars], axis=1)
                for k in ("open", "high", "low", "close", "volume")}
        return make_features(time=bars[0].time[-n:], open=cols["open"], high=cols["high"],
                             low=cols["low"], close=cols["close"], volume=cols["volume"],
                             tail=self.env.window)

    def start(self, context: RunContext) -> None:
        """A new run: a fresh recurrent state and episode."""
        super().start(context)
        self._h.clear()
        self._steps, self._start_equity = 0, 0.0

    def decide(self, obs: Observation) -> Decision:
        if self._steps % (self.env.episode_len or 1 << 62) == 0:
            self._h.clear()
            self._start_equity = obs.portfolio.equity
        self._steps += 1
        weights: dict[str, float] = {}
        scale = self.env.max_leverage / len(obs.universe)
        growth = np.log(max(obs.portfolio.equity, 1e-12) / max(self._start_equity, 1e-12))
        for group in self._groups(obs.universe):
            feats = self._features(obs, group)
            if feats is None:
                weights.update({s: 0.0 for s in group})
                continue
            held = np.array([obs.portfolio.weight(s) for s in group])
            x = np.concatenate([feats.reshape(-1), held, [growth]])
            key = "|".join(group)
            with torch.inference_mode():
                a, self._h[key] = self.actor(
                    torch.as_tensor(x, dtype=torch.float32, device=self.device)[None, None],
                    self._h.get(key))
            act = a[0, 0].cpu().numpy().clip(-1.0, 1.0)
            if not self.env.allow_short:
                act = np.maximum(act, 0.0)
            weights.update({s: float(v) * scale for s, v in zip(group, act, strict=True)})
        return Decision(weights=weights, rationale="qtnet policy")

    def state(self) -> dict[str, Any]:
        return {"steps": self._steps, "start_equity": self._start_equity,
                "hidden": {k: v.cpu().tolist() for k, v in self._h.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        self._steps = int(state.get("steps", 0))
        self._start_equity = float(state.get("start_equity", 0.0))
        self._h = {k: torch.tensor(v, dtype=torch.float32, device=self.device)
                   for k, v in state.get("hidden", {}).items()}
