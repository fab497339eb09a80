"""The contracts between the engine and every agent: Observation in, Decision out, Feedback later.

They sit below both ``engine`` and ``agents`` so either can import them without importing the
other. Weights are the common currency: every agent, rule-based, deep-RL or LLM, says what
fraction of equity it wants in each symbol; the engine turns that into orders, fills and costs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tradesim.data.bars import Bars, News
from tradesim.data.view import PointInTimeView


@dataclass(frozen=True, slots=True)
class Portfolio:
    """The book as the ledger has it at decision time (marks are the last visible closes)."""

    cash: float
    positions: Mapping[str, float]  # shares (negative = short)
    prices: Mapping[str, float]  # mark price per symbol
    equity: float

    def weight(self, symbol: str) -> float:
        """Current weight of ``symbol`` in equity (0 for a flat or unknown symbol)."""
        if self.equity <= 0:
            return 0.0
        return self.positions.get(symbol, 0.0) * self.prices.get(symbol, 0.0) / self.equity

    @property
    def weights(self) -> dict[str, float]:
        return {s: self.weight(s) for s in self.positions}


@dataclass(frozen=True, slots=True)
class Observation:
    """Everything an agent may know at ``time``: point-in-time market view and its own book."""

    time: np.datetime64  # decision time, UTC ns
    step: int
    universe: tuple[str, ...]
    market: PointInTimeView
    portfolio: Portfolio
    interval: str = "1d"

    def bars(self, symbol: str, *, lookback: int | None = None) -> Bars:
        """Visible bars of ``symbol`` (the last ``lookback`` if given)."""
        return self.market.bars(symbol, lookback=lookback)

    def news(self, symbols: list[str] | tuple[str, ...] | None = None, *,
             lookback: int | None = None) -> News:
        """News available by ``time``."""
        return self.market.news(symbols, lookback=lookback)


@dataclass(frozen=True, slots=True)
class Decision:
    """What an agent wants: target weights per symbol, optional exits, and why.

    Symbols absent from ``weights`` keep their current position when ``rebalance_missing`` is
    False (the default) and go flat when it is True. ``stop_loss`` / ``take_profit`` are price
    levels per symbol. There is deliberately no field for a reward: rewards come from the ledger.
    """

    weights: Mapping[str, float] = field(default_factory=dict)
    stop_loss: Mapping[str, float] = field(default_factory=dict)
    take_profit: Mapping[str, float] = field(default_factory=dict)
    confidence: float | None = None
    rationale: str = ""
    llm_calls: tuple[str, ...] = ()
    rebalance_missing: bool = False

    @classmethod
    def hold(cls, rationale: str = "hold") -> Decision:
        """Keep every position as it is (one shared immutable instance per rationale: the common
        case on most bars, so it costs no allocation)."""
        held = _HOLDS.get(rationale)
        if held is None:
            held = _HOLDS[rationale] = cls(weights=_EMPTY, stop_loss=_EMPTY, take_profit=_EMPTY,
                                           rationale=rationale)
        return held

    def bad_weights(self) -> list[str]:
        """Symbols whose target weight is not a finite number."""
        return [s for s, w in self.weights.items()
                if not isinstance(w, (int, float)) or not math.isfinite(w)]


_EMPTY: Mapping[str, float] = MappingProxyType({})
_HOLDS: dict[str, Decision] = {}


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution: signed quantity at a price within the bar's low..high, with its costs."""

    time: np.datetime64  # bar-end stamp of the bar it executed in
    symbol: str
    quantity: float  # signed shares: + buy, - sell
    price: float
    commission: float
    spread_cost: float
    slippage_cost: float
    reason: str = "rebalance"  # rebalance | stop_loss | take_profit | limit | stop | liquidation

    @property
    def cost(self) -> float:
        return self.commission + self.spread_cost + self.slippage_cost


@dataclass(frozen=True, slots=True)
class Feedback:
    """Realised outcome of a decision, delivered only once it is known (never earlier).

    ``reward`` is computed by the engine from its ledger, net of costs.
    """

    time: np.datetime64  # when the outcome became known
    decision_time: np.datetime64
    fills: tuple[Fill, ...]
    equity: float
    period_return: float  # equity change since the decision, net of costs
    costs: float
    reward: float


@runtime_checkable
class Agent(Protocol):
    """A trading agent: decide on an Observation, learn from Feedback, save and restore state."""

    name: str

    def decide(self, obs: Observation) -> Decision: ...

    def update(self, feedback: Feedback) -> None: ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class RunArtifacts(Protocol):
    """Optional: an agent with its own records (e.g. an LLM journal and cache) for the run folder.

    The runner merges ``run_meta`` into the RunResult's meta (warnings such as knowledge-cutoff
    leakage flags go under ``"warnings"``) and calls ``save_artifacts`` with the run folder.
    """

    def run_meta(self, *, start: np.datetime64, end: np.datetime64) -> dict[str, Any]: ...

    def save_artifacts(self, folder: Path) -> list[Path]: ...


class BaseAgent:
    """Convenience base: no learning and no state; subclasses implement :meth:`decide`."""

    name: str = "agent"
    lookback: int = 0  # bars of history the agent needs before its first real decision

    def decide(self, obs: Observation) -> Decision:
        raise NotImplementedError

    def update(self, feedback: Feedback) -> None:
        """Stateless agents ignore feedback."""

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Stateless agents have nothing to restore."""
