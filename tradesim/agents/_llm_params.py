"""The parameters every LLM agent shares: its gateway settings and whether its calls are charged."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from tradesim.contracts import AgentParams
from tradesim.llm.gateway import GatewayConfig


class LLMAgentParams(AgentParams):
    """Base of the LLM agents' ``Params`` (the analyst, the contest, the team)."""

    gateway: GatewayConfig = Field(default_factory=lambda: GatewayConfig.from_param(None),
                                   description="gateway settings, resolved from the "
                                   "environment (TRADESIM_LLM, OPENAI_*) where not given")
    charge_llm_cost: bool = Field(False, description="debit the LLM dollars each decision "
                                  "spent (list price, cache hits included) from the account's "
                                  "cash, as a Decision expense")

    @field_validator("gateway", mode="before")
    @classmethod
    def _gateway(cls, value: Any) -> GatewayConfig:
        return GatewayConfig.from_param(value)
