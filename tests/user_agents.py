"""A user's own agent, plugged in by ``module:Class`` (the conformance suite runs it too)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tradesim.contracts import BaseAgent, Decision, Feedback, Observation, RunContext


class MeanReversion(BaseAgent):
    """Long the symbols below their 5-bar mean, sized by a seeded jitter; learns a hit rate."""

    name = "mean_reversion"

    def __init__(self, *, window: int = 5, size: float = 0.5) -> None:
        self.window, self.size = window, size
        self._rng = np.random.default_rng(0)
        self._hits = 0

    def start(self, context: RunContext) -> None:
        super().start(context)
        self._rng = np.random.default_rng(context.seed)
        self._hits = 0

    def decide(self, obs: Observation) -> Decision:
        weights = {}
        for s in obs.universe:
            close = obs.bars(s, lookback=self.window).close
            if len(close) == self.window:
                jitter = float(self._rng.uniform(0.8, 1.0))
                below = close[-1] < close.mean()
                weights[s] = self.size * jitter / len(obs.universe) if below else 0.0
        return Decision(weights=weights) if weights else Decision.hold()

    def update(self, feedback: Feedback) -> None:
        self._hits += feedback.reward > 0

    def state(self) -> dict[str, Any]:
        return {"rng": self._rng.bit_generator.state, "hits": self._hits}

    def load_state(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state["rng"]
        self._hits = int(state["hits"])


class Spender(BaseAgent):
    """Pays for its decisions, as an LLM agent does: half in the first symbol at the first bar,
    then ``fee`` dollars of expense per decision (``Decision.expense``)."""

    name = "spender"

    def __init__(self, *, fee: Any = 3.0, weight: float = 0.5) -> None:
        self.fee, self.weight = fee, weight

    def decide(self, obs: Observation) -> Decision:
        if obs.step == 0 and self.weight:
            return Decision(weights={obs.universe[0]: self.weight}, expense=self.fee)
        return Decision(rationale="thinking costs money", expense=self.fee)
