"""A ContestTrade-style multi-agent system with lag-safe internal contests (see docs/contest.md).

:class:`ContestAgent` runs any agents as entrants, scores them on realised open-to-open rewards
(only those known at decision time), predicts mu and sigma with LightGBM (the mean as fallback)
and weights entrants by ``S_i / sum of positive S``; with ``data_agents`` and
``research_agents`` the LLM data and research teams join (:mod:`.teams`).
"""

from tradesim.agents.contest.agent import BeliefSpec, ContestAgent, DataAgentSpec, EntrantSpec
from tradesim.agents.contest.book import ContestConfig, allocate, contest_allocations

__all__ = ["BeliefSpec", "ContestAgent", "ContestConfig", "DataAgentSpec", "EntrantSpec",
           "allocate", "contest_allocations"]
