"""The one LLM gateway: providers, cache and replay, budget, structured output, journal.

Agents call :class:`Gateway` (``decide`` for a :class:`TradeDecision`, ``complete`` /
``acomplete`` / ``gather`` for anything else). The offline default is an embedded
SmolLM2-135M model that proves the path without a key; it does not trade well.
"""

from tradesim.llm.budget import Budget, CostEstimate, PriceTable, Usage, estimate
from tradesim.llm.gateway import (
           CACHE_FILE,
           JOURNAL_FILE,
           Gateway,
           GatewayConfig,
           LLMResult,
)
from tradesim.llm.journal import CallRecord, Journal
from tradesim.llm.leakage import Anonymizer, LeakageFlag, leakage_flags
from tradesim.llm.schema import TradeDecision

__all__ = [
           "CACHE_FILE",
           "JOURNAL_FILE",
           "Anonymizer",
           "Budget",
           "CallRecord",
           "CostEstimate",
           "Gateway",
           "GatewayConfig",
           "Journal",
           "LLMResult",
           "LeakageFlag",
           "PriceTable",
           "TradeDecision",
           "Usage",
           "estimate",
           "leakage_flags",
]
