"""Structured output: the pydantic schemas agents ask for, and parsing model text into them."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Action = Literal["buy", "sell", "hold"]
ACTIONS: tuple[str, ...] = ("buy", "sell", "hold")


class TradeDecision(BaseModel):
    """One symbol's call: the action, the target weight magnitude, confidence and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Action
    weight: float = Field(ge=0.0, le=1.0, description="target |weight| in equity for buy/sell")
    confidence: float = Field(ge=0.0, le=1.0)
    rationale: str = Field(max_length=600)

    @classmethod
    def abstain(cls, reason: str) -> TradeDecision:
        """Hold with zero confidence: what an agent does when the model gave no valid answer."""
        return cls(action="hold", weight=0.0, confidence=0.0, rationale=f"abstain: {reason}"[:600])

    def signed_weight(self, current: float) -> float:
        """Target weight for the engine: +weight for buy, -weight for sell, ``current`` for hold."""
        if self.action == "buy":
            return self.weight
        if self.action == "sell":
            return -self.weight
        return current


def schema_name(schema: type[BaseModel]) -> str:
    """A provider-safe schema name (OpenAI accepts ``[a-zA-Z0-9_-]{1,64}``)."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", schema.__name__)[:64]


def json_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of ``schema`` in the strict form OpenAI structured outputs require."""
    return _strictify(schema.model_json_schema())


def response_format(schema: type[BaseModel]) -> dict[str, Any]:
    """OpenAI ``response_format`` asking for JSON that matches ``schema``."""
    return {"type": "json_schema",
            "json_schema": {"name": schema_name(schema), "schema": json_schema(schema),
                            "strict": True}}


def parse(text: str, schema: type[BaseModel]) -> tuple[BaseModel | None, str | None]:
    """Validate model ``text`` against ``schema``: (object, None) or (None, what was wrong).

    Tolerates a markdown code fence or prose around one JSON object, which small and
    chat-tuned models add even when asked not to.
    """
    candidate = _extract_json(text)
    if candidate is None:
        return None, f"no JSON object in the output: {text[:200]!r}"
    try:
        return schema.model_validate_json(candidate), None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}"
                             for e in exc.errors()[:5])
        return None, f"output does not match {schema.__name__}: {problems}"


def repair_message(error: str, schema: type[BaseModel]) -> dict[str, str]:
    """The user turn that asks the model to fix its previous answer."""
    return {"role": "user", "content": (
        f"Your previous answer was invalid ({error}). Reply again with only one JSON object "
        f"matching this JSON schema, no prose: {json.dumps(json_schema(schema))}")}


def _extract_json(text: str) -> str | None:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    return text[start:end + 1]


def _strictify(node: Any) -> Any:
    """Every object closed (additionalProperties false) with all its properties required."""
    if isinstance(node, dict):
        out = {k: _strictify(v) for k, v in node.items()}
        if out.get("type") == "object" and "properties" in out:
            out["additionalProperties"] = False
            out["required"] = list(out["properties"])
        return out
    if isinstance(node, list):
        return [_strictify(v) for v in node]
    return node
