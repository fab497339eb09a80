"""Tokens and dollars: a price table, a per-run hard budget, and a dry-run cost estimate."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

from tradesim.errors import BudgetExceededError, ConfigError

# USD per million tokens (input, output), list prices; override with ``prices=`` in the config.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o4-mini": (1.10, 4.40),
    "gpt-3.5-turbo": (0.50, 1.50),
    "smollm2-135m-instruct": (0.0, 0.0),
}


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one call used and what they cost."""

    prompt_tokens: int
    completion_tokens: int
    cost_usd: float

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """Dry-run estimate of a backtest's LLM spend, shown before it starts."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float

    def __str__(self) -> str:
        return (f"{self.calls} calls, {self.prompt_tokens + self.completion_tokens} tokens "
                f"({self.prompt_tokens} in / {self.completion_tokens} out), ${self.cost_usd:.4f}")


class PriceTable:
    """USD per million input/output tokens by model; a model is matched exactly, then by prefix."""

    def __init__(self, prices: Mapping[str, tuple[float, float]] | None = None) -> None:
        self._prices = {**DEFAULT_PRICES, **{k.lower(): tuple(v) for k, v in (prices or {}).items()}}

    def knows(self, model: str) -> bool:
        return self._lookup(model) is not None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """Dollars for one call (0 for a model without a price: local and self-hosted servers)."""
        price = self._lookup(model)
        if price is None:
            return 0.0
        return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6

    def _lookup(self, model: str) -> tuple[float, float] | None:
        key = model.lower().rsplit("/", 1)[-1]
        if key in self._prices:
            return self._prices[key]
        # dated snapshots ("gpt-4o-mini-2024-07-18") price as their family; longest prefix wins
        matches = [k for k in self._prices if key.startswith(k + "-")]
        return self._prices[max(matches, key=len)] if matches else None


class Budget:
    """Hard per-run limit on dollars and/or tokens; charging past it raises BudgetExceededError."""

    def __init__(self, *, max_usd: float | None = None, max_tokens: int | None = None) -> None:
        for name, value in (("max_usd", max_usd), ("max_tokens", max_tokens)):
            if value is not None and value < 0:
                raise ConfigError(f"budget {name}={value} is negative; pass a limit >= 0 or None")
        self.max_usd, self.max_tokens = max_usd, max_tokens
        self.spent_usd, self.spent_tokens, self.calls = 0.0, 0, 0
        self._lock = threading.Lock()

    def check(self, call: str) -> None:
        """Refuse to start ``call`` when the budget is already spent."""
        with self._lock:
            self._raise_if_over(call, before=True)

    def charge(self, usage: Usage, call: str) -> None:
        """Add one answered call; raises after recording it if that took the run over budget."""
        with self._lock:
            self.spent_usd += usage.cost_usd
            self.spent_tokens += usage.total_tokens
            self.calls += 1
            self._raise_if_over(call, before=False)

    def _raise_if_over(self, call: str, *, before: bool) -> None:
        over = []
        if self.max_usd is not None and (self.spent_usd >= self.max_usd if before
                                         else self.spent_usd > self.max_usd):
            over.append(f"${self.spent_usd:.4f} of ${self.max_usd:.4f}")
        if self.max_tokens is not None and (self.spent_tokens >= self.max_tokens if before
                                            else self.spent_tokens > self.max_tokens):
            over.append(f"{self.spent_tokens} of {self.max_tokens} tokens")
        if over:
            when = "before" if before else "after"
            raise BudgetExceededError(
                f"LLM budget exceeded {when} call {call}: spent {' and '.join(over)} in "
                f"{self.calls} calls. The run stops here with everything so far saved; raise "
                "budget_usd/budget_tokens in the config or replay from the cache.")


def estimate(*, model: str, calls: int, prompt_tokens: int, completion_tokens: int,
             prices: PriceTable | None = None) -> CostEstimate:
    """Dry-run estimate: calls x (tokens per call) x price, before a backtest starts."""
    table = prices or PriceTable()
    p_in, p_out = calls * prompt_tokens, calls * completion_tokens
    return CostEstimate(calls=calls, prompt_tokens=p_in, completion_tokens=p_out,
                        cost_usd=table.cost(model, p_in, p_out))


def count_tokens(text: str) -> int:
    """Rough token count (about four characters a token) for estimates, never for billing."""
    return max(1, (len(text) + 3) // 4)
