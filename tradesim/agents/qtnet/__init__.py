"""QTNet-style deep-RL trader: batched torch env, GRU recurrent DPG with Q-filtered imitation."""

from tradesim.agents.qtnet.agent import QTNetAgent

__all__ = ["QTNetAgent"]
