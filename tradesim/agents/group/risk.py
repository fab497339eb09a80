"""The risk manager: style sizing and stop-loss / take-profit levels from trailing volatility.

Levels sit ``k * sigma * sqrt(horizon)`` from the last close, where sigma is the standard
deviation of the last 20 daily returns known at decision time and ``k`` comes from the style
(:data:`~tradesim.agents.group.roles.STYLE_RULES`). They go out in the Decision as price
levels; the engine enforces them (gap-through fills at the open, adverse first in one bar).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tradesim.agents.group.roles import STYLE_RULES


@dataclass(frozen=True, slots=True)
class Levels:
    """Exit levels of one position."""

    stop_loss: float
    take_profit: float


def exit_levels(*, close: float, sigma: float, style: str, horizon: int, side: float,
                floor_sigma: float = 0.005) -> Levels | None:
    """Stop and target for a position of sign ``side`` entered near ``close`` (None if flat or
    no price). ``sigma`` below ``floor_sigma`` (or NaN: short history) uses the floor."""
    if side == 0 or not (math.isfinite(close) and close > 0):
        return None
    sig = sigma if math.isfinite(sigma) and sigma > floor_sigma else floor_sigma
    rule = STYLE_RULES[style]
    width = sig * math.sqrt(max(horizon, 1))
    stop, target = rule["stop"] * width, rule["target"] * width
    if side > 0:
        return Levels(stop_loss=close * max(1e-6, 1.0 - stop), take_profit=close * (1.0 + target))
    return Levels(stop_loss=close * (1.0 + stop), take_profit=close * max(1e-6, 1.0 - target))
