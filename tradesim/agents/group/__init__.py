"""A TradingGroup-inspired team agent (arXiv 2508.17565): five roles, lag-safe reflection,
a volatility risk manager, and trajectory export for post-training (``tradesim synth``)."""

from tradesim.agents.group.agent import STEPS_FILE, TradingGroup
from tradesim.agents.group.memory import CarriedMemoryError, ReflectionMemory

__all__ = ["STEPS_FILE", "CarriedMemoryError", "ReflectionMemory", "TradingGroup"]
