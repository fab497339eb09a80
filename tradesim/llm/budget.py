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
    """Dry-run estimate of a backtest's LLM spend, shown before it starts.

    ``cost_usd`` is None when the model has no price (never a silent $0); the ``worst_*``
    figures add one repair call per call (the gateway's limit); ``warnings`` carries the
    knowledge-cutoff leakage flags of the window, when the caller gave one.
    """

    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    price_known: bool = True
    tokenizer: str = "chars/4"  # what counted the prompt tokens
    worst_calls: int | None = None
    worst_tokens: int | None = None
    worst_cost_usd: float | None = None
    warnings: tuple[str, ...] = ()

    def __str__(self) -> str:
        cost = f"${self.cost_usd:.4f}" if self.cost_usd is not None else "price unknown"
        text = (f"{self.calls} calls, {self.prompt_tokens + self.completion_tokens} tokens "
                f"({self.prompt_tokens} in / {self.completion_tokens} out, counted by "
                f"{self.tokenizer}), {cost}")
        if self.worst_calls is not None:
            worst = (f"${self.worst_cost_usd:.4f}" if self.worst_cost_usd is not None
                     else "price unknown")
            text += (f"; with one repair per call at most {self.worst_calls} calls, "
                     f"{self.worst_tokens} tokens, {worst}")
        return text + "".join(f"\nwarning: {w}" for w in self.warnings)


class PriceTable:
    """USD per million input/output tokens by model; a model is matched exactly, then by prefix."""

    def __init__(self, prices: Mapping[str, tuple[float, float]] | None = None) -> None:
        self._prices = {**DEFAULT_PRICES, **{k.lower(): tuple(v) for k, v in (prices or {}).items()}}

    def knows(self, model: str) -> bool:
        return self._lookup(model) is not None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """Dollars for one call (0 for a model without a price: local and self-hosted servers)."""
        return self.cost_or_none(model, prompt_tokens, completion_tokens) or 0.0

    def cost_or_none(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        """Dollars for one call, or None when the model has no price (say so, never $0)."""
        price = self._lookup(model)
        if price is None:
            return None
        return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6

    def _lookup(self, model: str) -> tuple[float, float] | None:
        key = model.lower().rsplit("/", 1)[-1]
        if key in self._prices:
            p_in, p_out = self._prices[key]
            return p_in, p_out
        # dated snapshots ("gpt-4o-mini-2024-07-18") price as their family; longest prefix wins
        matches = [k for k in self._prices if key.startswith(k + "-")]
        if not matches:
            return None
        p_in, p_out = self._prices[max(matches, key=len)]
        return p_in, p_out


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one in-flight call may cost at most, held against the budget until it answers."""

    call: str
    tokens: int
    usd: float


class Budget:
    """Hard per-run limit on dollars and/or tokens.

    A call reserves its worst case (prompt tokens + max_tokens, priced) before it is sent and
    is refused when that cannot fit beside what is spent and what other calls hold, so no call
    goes out past the limit; the answer's real usage then replaces the reservation.
    """

    def __init__(self, *, max_usd: float | None = None, max_tokens: int | None = None) -> None:
        for name, value in (("max_usd", max_usd), ("max_tokens", max_tokens)):
            if value is not None and value < 0:
                raise ConfigError(f"budget {name}={value} is negative; pass a limit >= 0 or None")
        self.max_usd, self.max_tokens = max_usd, max_tokens
        self.spent_usd, self.spent_tokens, self.calls = 0.0, 0, 0
        self.held_usd, self.held_tokens = 0.0, 0
        self.refused = 0
        self._lock = threading.Lock()

    @property
    def limited(self) -> bool:
        return self.max_usd is not None or self.max_tokens is not None

    def check(self, call: str) -> None:
        """Refuse to start ``call`` when the budget is already spent."""
        with self._lock:
            self._raise_if_over(call, before=True)

    def reserve(self, call: str, *, tokens: int, usd: float) -> Reservation:
        """Hold ``call``'s worst-case cost, or raise BudgetExceededError without sending it."""
        with self._lock:
            self._raise_if_over(call, before=True)
            short = []
            if self.max_tokens is not None and \
                    self.spent_tokens + self.held_tokens + tokens > self.max_tokens:
                left = self.max_tokens - self.spent_tokens - self.held_tokens
                short.append(f"up to {tokens} tokens but {left} of {self.max_tokens} are left")
            if self.max_usd is not None and self.spent_usd + self.held_usd + usd > self.max_usd:
                left_usd = self.max_usd - self.spent_usd - self.held_usd
                short.append(f"up to ${usd:.6f} but ${left_usd:.6f} of ${self.max_usd:.6f} is left")
            if short:
                self.refused += 1
                raise BudgetExceededError(
                    f"LLM budget refused call {call} before sending it: it needs "
                    f"{' and '.join(short)} (real spend so far {self._spent()} in {self.calls} "
                    "calls; in flight held "
                    f"{self.held_tokens} tokens / ${self.held_usd:.6f}). The run stops here with "
                    "everything so far saved; raise budget_usd/budget_tokens, lower max_tokens, "
                    "or replay from the cache.")
            self.held_tokens += tokens
            self.held_usd += usd
            return Reservation(call, tokens, usd)

    def release(self, reservation: Reservation) -> None:
        """Give back a reservation (the call failed or was answered and charged)."""
        with self._lock:
            self.held_tokens -= reservation.tokens
            self.held_usd -= reservation.usd

    def charge(self, usage: Usage, call: str) -> None:
        """Add one answered call; raises after recording it if that took the run over budget
        (possible only when the provider reports more than the reservation allowed for)."""
        with self._lock:
            self.spent_usd += usage.cost_usd
            self.spent_tokens += usage.total_tokens
            self.calls += 1
            self._raise_if_over(call, before=False)

    def _spent(self) -> str:
        return f"${self.spent_usd:.6f} and {self.spent_tokens} tokens"

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
             prices: PriceTable | None = None, free: bool = False, tokenizer: str = "chars/4",
             repair_tokens: int | None = None, warnings: tuple[str, ...] = ()) -> CostEstimate:
    """Dry-run estimate: calls x (tokens per call) x price, before a backtest starts.

    ``free`` marks an in-process model (no price, nothing to pay); an unknown price otherwise
    gives ``cost_usd=None``. ``repair_tokens`` (the extra prompt of a repair turn) adds the
    worst case of one repair per call.
    """
    table = prices or PriceTable()
    p_in, p_out = calls * prompt_tokens, calls * completion_tokens
    cost = 0.0 if free else table.cost_or_none(model, p_in, p_out)
    worst: dict[str, object] = {}
    if repair_tokens is not None:
        # a repair resends the prompt plus the first answer plus the repair instruction
        w_in = p_in + calls * (prompt_tokens + completion_tokens + repair_tokens)
        w_out = 2 * p_out
        worst = {"worst_calls": 2 * calls, "worst_tokens": w_in + w_out,
                 "worst_cost_usd": 0.0 if free else table.cost_or_none(model, w_in, w_out)}
    return CostEstimate(calls=calls, prompt_tokens=p_in, completion_tokens=p_out, cost_usd=cost,
                        price_known=free or cost is not None, tokenizer=tokenizer,
                        warnings=tuple(warnings), **worst)  # type: ignore[arg-type]


def count_tokens(text: str) -> int:
    """Rough token count (about four characters a token) for estimates, never for billing."""
    return max(1, (len(text) + 3) // 4)
