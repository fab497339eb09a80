"""The kill switch (ACTIVE / REDUCING / HALTED) and the agent guard that enforces it.

The switch is set from the CLI or by any process writing one word into the session folder's
``switch`` file (the daemon consumes it at the next tick), or by a risk limit. REDUCING lets
only exits through (a weight moving toward zero; stops and targets stay); HALTED asks the agent
nothing and cancels open orders. The guard is an Agent around the agent, so an isolated agent
(another Agent wrapper) drops in underneath it unchanged.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from tradesim.contracts import Agent, Decision, Feedback, Observation, RunContext
from tradesim.live.errors import PaperConfigError

ACTIVE, REDUCING, HALTED = "ACTIVE", "REDUCING", "HALTED"
STATES: tuple[str, ...] = (ACTIVE, REDUCING, HALTED)
SWITCH_FILE = "switch"


def parse_state(value: str) -> str:
    state = value.strip().upper()
    if state not in STATES:
        raise PaperConfigError(f"kill-switch state {value!r} is unknown; use one of "
                               f"{', '.join(s.lower() for s in STATES)}")
    return state


def request_switch(folder: Path, state: str) -> Path:
    """Ask the daemon of ``folder`` to switch to ``state`` at its next tick (atomic write)."""
    state = parse_state(state)
    path = folder / SWITCH_FILE
    tmp = folder / f".{SWITCH_FILE}.tmp"
    tmp.write_text(state + "\n")
    os.replace(tmp, path)
    return path


def take_request(folder: Path) -> str | None:
    """The switch requested by file (consumed), or None; a bad word is refused loudly."""
    path = folder / SWITCH_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    path.unlink(missing_ok=True)
    return parse_state(text)


class Guard:
    """An Agent around ``inner`` that applies the kill switch to every decision."""

    def __init__(self, inner: Agent, state: str = ACTIVE) -> None:
        self.inner, self.mode = inner, state
        self.name = inner.name

    def start(self, context: RunContext) -> None:
        self.inner.start(context)

    def decide(self, obs: Observation) -> Decision:
        if self.mode == HALTED:
            return Decision.hold("halted by the kill switch")
        decision = self.inner.decide(obs)
        if self.mode == REDUCING and isinstance(decision, Decision):
            return _exits_only(decision, obs)
        return decision

    def update(self, feedback: Feedback) -> None:
        self.inner.update(feedback)

    def state(self) -> dict[str, Any]:
        return self.inner.state()

    def load_state(self, state: dict[str, Any]) -> None:
        self.inner.load_state(state)

    def stop(self, *, error: BaseException | None = None) -> None:
        self.inner.stop(error=error)


def _exits_only(decision: Decision, obs: Observation) -> Decision:
    """Keep only weights that move a position toward zero (never open, add or flip)."""
    pf = obs.portfolio
    keep: dict[str, float] = {}
    names = set(decision.weights) | (set(pf.positions) if decision.rebalance_missing else set())
    for s in names:
        w = decision.weights.get(s, 0.0)
        now = pf.weight(s)
        if now == 0 or math.isnan(now):
            continue
        if w * now < 0:
            w = 0.0  # a flip becomes a close
        if abs(w) < abs(now):
            keep[s] = w
    return Decision(weights=keep, stop_loss=decision.stop_loss, take_profit=decision.take_profit,
                    confidence=decision.confidence,
                    rationale=f"[exits only] {decision.rationale}", llm_calls=decision.llm_calls,
                    expense=decision.expense)  # the money was spent whatever the switch says
