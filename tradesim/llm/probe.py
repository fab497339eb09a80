"""Bias and fragility probe: the same decision in paraphrased prompts, and how often it flips.

LLM decisions shift with wording and option order, and lean towards the first or the "yes"
option; a model whose action flips between paraphrases of identical facts is not deciding on
the facts. The probe sends every variant through the gateway (so it is cached and journaled).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tradesim.llm.gateway import Gateway
from tradesim.llm.schema import ACTIONS, TradeDecision

_SYSTEM = "You are a disciplined equity trader. Reply with JSON only."
_TEMPLATES: tuple[str, ...] = (
    "{facts}\nShould we buy, sell or hold? Give action, weight, confidence and rationale.",
    "Here is the situation: {facts}\nDecide: hold, sell or buy. Return the JSON decision.",
    "Facts: {facts}\nWhat is the right trade now (sell, hold or buy)?",
    "A colleague summarises the stock: {facts}\nWould you buy it, sell it, or hold? Decide.",
    "{facts}\nIs this a buy? If not, choose sell or hold. Answer as JSON.",
    "{facts}\nIs this a sell? If not, choose buy or hold. Answer as JSON.",
)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The action each paraphrase got, the overall distribution, and the flip rates."""

    variants: tuple[str, ...]
    actions: tuple[str, ...]  # one per variant ("hold" where the model abstained)
    abstained: int

    @property
    def distribution(self) -> dict[str, float]:
        counts = Counter(self.actions)
        total = len(self.actions) or 1
        return {a: counts.get(a, 0) / total for a in ACTIONS}

    @property
    def majority(self) -> str:
        dist = self.distribution
        return max(ACTIONS, key=lambda a: dist[a])

    @property
    def flip_rate(self) -> float:
        """Share of paraphrases whose action differs from the majority action."""
        return sum(a != self.majority for a in self.actions) / len(self.actions) if self.actions else 0.0

    @property
    def pairwise_flip_rate(self) -> float:
        """Share of paraphrase pairs that disagree."""
        pairs = [(a, b) for i, a in enumerate(self.actions) for b in self.actions[i + 1:]]
        return sum(a != b for a, b in pairs) / len(pairs) if pairs else 0.0


def paraphrases(facts: str, *, n: int | None = None) -> list[list[dict[str, str]]]:
    """Chat prompts stating ``facts`` in different words and option orders."""
    templates = _TEMPLATES[: n or len(_TEMPLATES)]
    return [[{"role": "system", "content": _SYSTEM},
             {"role": "user", "content": t.format(facts=facts)}] for t in templates]


def run_probe(*, gateway: Gateway, facts: str, variants: int | None = None) -> ProbeResult:
    """Ask every paraphrase concurrently through ``gateway`` and tally the actions."""
    prompts = paraphrases(facts, n=variants)
    results = gateway.gather([{"messages": p, "schema": TradeDecision, "tag": f"probe:v{i}"}
                              for i, p in enumerate(prompts)])
    return ProbeResult(variants=tuple(p[1]["content"] for p in prompts),
                       actions=tuple(r.decision().action for r in results),
                       abstained=sum(r.abstained for r in results))
