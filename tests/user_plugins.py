"""A user's own LLM provider and data source, plugged in by ``module:Class`` or entry point."""

from __future__ import annotations

import json
from tradesim.data.load import SampleSource
from tradesim.llm.gateway import GatewayConfig
from tradesim.llm.providers import ChatAnswer, ChatRequest


class ConstantProvider:
    """Answers every trade question with a fixed decision (no server)."""

    name = "constant"

    def __init__(self, *, config: GatewayConfig) -> None:
        self.config = config
        self.calls = 0

    async def complete(self, request: ChatRequest) -> ChatAnswer:
        self.calls += 1
        text = json.dumps({"action": "hold", "weight": 0.0, "confidence": 0.5,
                           "rationale": "constant plug-in"})
        return ChatAnswer(content=text, prompt_tokens=10, completion_tokens=10,
                          finish_reason="stop")


class RenamedSample(SampleSource):
    """The embedded sample under a plug-in name."""

    name = "renamed_sample"
