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
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from tradesim.data.bars import Bars, News
from tradesim.data.view import MarketData, PointInTimeView


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
    levels per symbol. ``expense`` is money the decision cost outside the market (the LLM
    dollars it spent, a data fee): the session debits it from the account's cash, so it counts
    in every cost, equity and reward figure. There is deliberately no field for a reward:
    rewards come from the ledger.
    """

    weights: Mapping[str, float] = field(default_factory=dict)
    stop_loss: Mapping[str, float] = field(default_factory=dict)
    take_profit: Mapping[str, float] = field(default_factory=dict)
    confidence: float | None = None
    rationale: str = ""
    llm_calls: tuple[str, ...] = ()
    rebalance_missing: bool = False
    expense: float = 0.0

    @classmethod
    def hold(cls, rationale: str = "hold") -> Decision:
        """Keep every position as it is (one shared immutable instance per rationale: the common
        case on most bars, so it costs no allocation)."""
        held = _HOLDS.get(rationale)
        if held is None:
            held = _HOLDS[rationale] = cls(weights=_EMPTY, stop_loss=_EMPTY, take_profit=_EMPTY,
                                           rationale=rationale)
        return held

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields (the session journal and the isolation protocol use it);
        :meth:`from_dict` reads them back."""
        return {"weights": dict(self.weights), "stop_loss": dict(self.stop_loss),
                "take_profit": dict(self.take_profit), "confidence": self.confidence,
                "rationale": self.rationale, "llm_calls": list(self.llm_calls),
                "rebalance_missing": self.rebalance_missing, "expense": self.expense}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Decision:
        """A Decision from :meth:`as_dict`'s fields (records written before ``expense`` lack it)."""
        return cls(weights=dict(raw.get("weights") or {}), stop_loss=dict(raw.get("stop_loss") or {}),
                   take_profit=dict(raw.get("take_profit") or {}),
                   confidence=raw.get("confidence"), rationale=str(raw.get("rationale", "")),
                   llm_calls=tuple(raw.get("llm_calls") or ()),
                   rebalance_missing=bool(raw.get("rebalance_missing", False)),
                   expense=raw.get("expense", 0.0))

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


@dataclass(frozen=True, slots=True)
class RunContext:
    """What a session tells its agent once, at :meth:`Agent.start`: the run it is part of."""

    universe: tuple[str, ...]
    interval: str = "1d"
    clock: Literal["historical", "live"] = "historical"
    seed: int = 0
    run_folder: Path | None = None  # where the run's record goes (None: not saved)
    start: np.datetime64 | None = None  # first decision time (historical clock)
    end: np.datetime64 | None = None  # last bar (historical clock; None on a live clock)


class AgentParams(BaseModel):
    """Base of every agent's typed parameters: frozen, unknown keys refused.

    The registry validates a spec's ``[agent.params]`` merged with overrides into the agent's
    ``Params`` and writes the resolved values (defaults included) into the run's config, so a
    run folder reruns exactly even after the spec file changes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


@runtime_checkable
class Agent(Protocol):
    """A trading agent. The session calls, in this order and from one thread:

    1. ``start(context)`` once, before anything else in a run (reset per-run state here);
    2. ``load_state(state)`` when resuming a stopped run (the paper daemon after a restart);
    3. per tick ``decide(obs)``, and ``update(feedback)`` once an earlier decision's outcome is
       realised (never earlier);
    4. ``state()`` between ticks whenever the session checkpoints (it must be JSON-serialisable:
       :func:`save_agent_state` writes it to a file and :func:`load_agent_state` reads it back,
       and the next decisions must be the same as without the round trip);
    5. ``stop(error=...)`` once at the end, also when the run fails (``error`` is the exception)
       so the agent can release what it holds (model clients, files, threads).

    Agents see data only through the Observation; rewards come from the engine's ledger.
    Optional capabilities are separate protocols: :class:`VectorisedWeights`,
    :class:`CostEstimator`, :class:`RunArtifacts`. :class:`BaseAgent` gives no-op defaults.
    """

    name: str

    def start(self, context: RunContext) -> None: ...

    def decide(self, obs: Observation) -> Decision: ...

    def update(self, feedback: Feedback) -> None: ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...

    def stop(self, *, error: BaseException | None = None) -> None: ...


@runtime_checkable
class VectorisedWeights(Protocol):
    """Optional: the agent's decisions for a whole market at once (the engine's fast path).

    A row holds the weights decided at that bar's end; NaN means keep the position. Decisions
    must equal what :meth:`Agent.decide` returns bar by bar (tests hold them equal).
    """

    def target_weights(self, data: MarketData, *, start: object | None = None) -> pd.DataFrame: ...


@runtime_checkable
class CostEstimator(Protocol):
    """Optional: what a run would cost before it starts (LLM calls, tokens, dollars), with the
    run's window and data sources so the estimate can warn about knowledge-cutoff leakage."""

    def estimate_run(self, *, n_steps: int, n_symbols: int, start: np.datetime64 | None = None,
                     end: np.datetime64 | None = None, sources: tuple[str, ...] = ()) -> Any: ...


@runtime_checkable
class RunArtifacts(Protocol):
    """Optional: an agent with its own records (e.g. an LLM journal and cache) for the run folder.

    The runner merges ``run_meta`` into the RunResult's meta (warnings such as knowledge-cutoff
    leakage flags go under ``"warnings"``) and calls ``save_artifacts`` with the run folder.
    """

    def run_meta(self, *, start: np.datetime64, end: np.datetime64) -> dict[str, Any]: ...

    def save_artifacts(self, folder: Path) -> list[Path]: ...


class BaseAgent:
    """Convenience base: typed parameters, no learning, no state; subclasses implement decide.

    A subclass declares ``class Params(AgentParams)`` and calls ``self._configure(params)`` in
    its ``__init__(self, **params)``; the validated values are ``self.params``.
    """

    name: str = "agent"
    lookback: int = 0  # bars of history the agent needs before its first real decision
    Params: ClassVar[type[AgentParams]] = AgentParams
    params: AgentParams

    def _configure(self, given: Mapping[str, Any]) -> Any:
        """Validate ``given`` into ``self.Params`` (errors name the agent, key and rule)."""
        from pydantic import ValidationError

        from tradesim.errors import ConfigError

        try:
            self.params = self.Params(**given)
        except ValidationError as exc:
            lines = [f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}"
                     for e in exc.errors()]
            raise ConfigError(f"agent {self.name!r}: invalid parameter(s):\n  "
                              + "\n  ".join(lines)
                              + "\n(set them in the spec's [agent.params] or pass "
                              "--param NAME=VALUE)") from None
        return self.params

    def start(self, context: RunContext) -> None:
        """Remember the run's context; subclasses reset per-run state here."""
        self.context = context

    def decide(self, obs: Observation) -> Decision:
        raise NotImplementedError

    def update(self, feedback: Feedback) -> None:
        """Stateless agents ignore feedback."""

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Stateless agents have nothing to restore."""

    def stop(self, *, error: BaseException | None = None) -> None:
        """Nothing to release."""


def save_agent_state(agent: Agent, path: str | Path) -> Path:
    """Write ``agent.state()`` to ``path`` as JSON, atomically (a crash leaves the old file)."""
    import json
    import os

    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(agent.state(), sort_keys=True, allow_nan=True), encoding="utf-8")
    os.replace(tmp, target)
    return target


def load_agent_state(agent: Agent, path: str | Path) -> None:
    """Restore ``agent`` from a file written by :func:`save_agent_state`."""
    import json

    agent.load_state(json.loads(Path(path).read_text(encoding="utf-8")))
