"""Decision-bias audit: the same decisions asked in ways that should not change them.

LLM decisions shift with wording and option order, and lean towards the first or the "yes"
option ("Evaluating Binary Decision Biases in LLMs"; "Cash or Comfort?" on prompt fragility).
:func:`run_audit` asks a set of market items through the gateway (so every call is cached,
journaled and budgeted, on any provider) and measures, each with a Wilson 95% interval over
items and beside a uniform random answerer: option-order and first-option rate, label swap
(yes/no acquiescence), gain/loss framing, first- vs third-person phrasing, the mirror test (the
same market with returns and news sentiment inverted: a consistent analyst inverts its call),
and agreement over repeated sampling at the configured temperature with varying seeds.
Abstentions count as failures, never as "hold"; a tied vote is reported as a tie.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from tradesim.errors import ConfigError
from tradesim.llm.gateway import Gateway, LLMResult
from tradesim.llm.schema import ACTIONS, TradeDecision

# --- the audit ---------------------------------------------------------------------------------

Answer = Literal["buy", "sell", "hold", "abstain"]
_MIRROR = {"buy": "sell", "sell": "buy", "hold": "hold"}
# (positive, negative) headline pairs: the mirror of an item swaps each for its opposite.
HEADLINE_PAIRS: tuple[tuple[str, str], ...] = (
    ("beats earnings estimates and raises its outlook", "misses earnings estimates and cuts its outlook"),
    ("wins a large multi-year contract", "loses its largest customer contract"),
    ("analysts upgrade the stock after strong orders", "analysts downgrade the stock after weak orders"),
    ("announces a share buyback and a higher dividend", "suspends its dividend to preserve cash"),
    ("regulator approves its main new product", "regulator rejects its main new product"),
    ("reports record quarterly sales", "reports its worst quarterly sales in a decade"),
)
_SYSTEM = ("You are a disciplined equity analyst. Judge the stock from the data given and nothing "
           "else. Reply with one JSON object only.")


class YesNo(BaseModel):
    """A yes/no answer (label-swap questions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    answer: Literal["yes", "no"]


@dataclass(frozen=True, slots=True)
class ProbeItem:
    """One market situation: recent returns (% per bar) and headlines with their sentiment."""

    name: str
    returns: tuple[float, ...]
    headlines: tuple[tuple[int, bool], ...]  # (HEADLINE_PAIRS index, positive?)

    def mirror(self) -> ProbeItem:
        """The same market upside down: returns negated, each headline's sentiment swapped."""
        return ProbeItem(f"{self.name}~mirror", tuple(-r for r in self.returns),
                         tuple((i, not pos) for i, pos in self.headlines))

    def facts(self, *, frame: Literal["neutral", "gain", "loss"] = "neutral") -> str:
        """The item as prompt text; ``frame`` states the up/down bar count as gains or losses."""
        r = np.asarray(self.returns)
        total = (np.prod(1 + r / 100) - 1) * 100
        up, n = int((r > 0).sum()), len(r)
        lines = [f"Last {n} daily returns in %, oldest first: "
                 + " ".join(f"{x:+.2f}" for x in r),
                 f"Total return over the period {total:+.2f}%."]
        if frame == "gain":
            lines.append(f"The stock gained on {up} of {n} days.")
        elif frame == "loss":
            lines.append(f"The stock lost on {n - up} of {n} days.")
        else:
            lines.append(f"Up days {up} of {n}.")
        lines.append("Recent headlines:")
        lines += [f"- The company {HEADLINE_PAIRS[i][0 if pos else 1]}."
                  for i, pos in self.headlines]
        return "\n".join(lines)


def default_items(n: int = 12, *, seed: int = 0, bars: int = 10) -> list[ProbeItem]:
    """``n`` synthetic market items, half bullish and half bearish in price and news, some
    mixed, from a seeded generator (nothing a model could remember)."""
    if n < 2:
        raise ConfigError(f"default_items n={n}: ask for at least 2 items")
    rng = np.random.default_rng(seed)
    items = []
    for k in range(n):
        sign = 1.0 if k % 2 == 0 else -1.0
        drift = sign * rng.uniform(0.3, 1.2)
        rets = np.round(rng.normal(drift, 1.0, size=bars), 2)
        picks = rng.choice(len(HEADLINE_PAIRS), size=2, replace=False)
        mixed = k % 4 == 3  # every fourth item: one headline against the price trend
        heads = tuple((int(i), (sign > 0) != (mixed and j == 1)) for j, i in enumerate(picks))
        items.append(ProbeItem(f"item{k:02d}", tuple(float(x) for x in rets), heads))
    return items


@dataclass(frozen=True, slots=True)
class Metric:
    """One audit figure: a rate over ``n`` items with its Wilson interval and the random
    answerer's value on the same test."""

    test: str
    name: str
    value: float
    lo: float
    hi: float
    n: int
    baseline: float | None
    ideal: str  # what an unbiased, consistent analyst scores
    note: str = ""


@dataclass
class AuditResult:
    """Every metric of one audit, the answers behind them, and what was asked of whom."""

    provider: str
    model: str
    endpoint: str
    temperature: float
    items: int
    samples: int
    metrics: list[Metric] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)  # test, item, variant, answer
    calls: int = 0
    abstained: int = 0

    def metric(self, name: str) -> Metric:
        return next(m for m in self.metrics if m.name == name)

    def __str__(self) -> str:
        lines = [f"decision-bias audit: {self.provider} model {self.model!r} "
                 f"(temperature {self.temperature}), {self.items} items, {self.calls} calls, "
                 f"{self.abstained} abstained (counted as failures)"]
        for m in self.metrics:
            base = "" if m.baseline is None else f"  random {m.baseline:.0%}"
            lines.append(f"  {m.test:<10} {m.name:<28} {m.value:6.1%}  "
                         f"[{m.lo:.0%}, {m.hi:.0%}] n={m.n}{base}  ideal: {m.ideal}"
                         + (f"  ({m.note})" if m.note else ""))
        return "\n".join(lines)


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (well-behaved at 0, 1 and small n)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def _ask(options: Sequence[str], person: Literal["first", "third"] = "third") -> str:
    listed = ", ".join(options[:-1]) + f" or {options[-1]}"
    if person == "first":
        return f"Should I {listed} this stock with my own savings? Decide for me."
    return f"Should a fund manager {listed} this stock for a client? Decide for them."


def _trade_messages(facts: str, question: str,
                    options: Sequence[str] = ACTIONS) -> list[dict[str, str]]:
    return [{"role": "system", "content": _SYSTEM},
            {"role": "user", "content": f"{facts}\n{question} Give action (one of "
                                        f"{', '.join(options)}), weight, confidence and "
                                        "rationale."}]


def _yesno_messages(facts: str, action: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": _SYSTEM},
            {"role": "user", "content": f"{facts}\nShould we {action} this stock now? "
                                        "Answer yes or no as JSON: {\"answer\": \"yes\"} or "
                                        "{\"answer\": \"no\"}."}]


def _answer(result: LLMResult) -> str:
    if result.abstained or result.parsed is None:
        return "abstain"
    if isinstance(result.parsed, TradeDecision):
        return result.parsed.action
    return str(getattr(result.parsed, "answer", "abstain"))


_ORDERS = (("buy", "sell", "hold"), ("hold", "sell", "buy"))


def run_audit(*, gateway: Gateway, items: Sequence[ProbeItem] | None = None, samples: int = 5,
              seed: int = 0, baseline_draws: int = 2000) -> AuditResult:
    """The decision-bias audit of ``gateway``'s model over ``items`` (default: 12 seeded ones).

    ``samples`` repeated calls per item at the configured temperature, seeds ``seed+1..``; at
    temperature 0 they can only agree (the result says so).
    """
    items = list(items) if items is not None else default_items(seed=seed)
    if not items:
        raise ConfigError("run_audit needs at least one item")
    plan: list[tuple[str, str, str, dict[str, Any]]] = []  # test, item, variant, call

    def add(test: str, item: ProbeItem, variant: str, messages: list[dict[str, str]],
            schema: type[BaseModel] = TradeDecision, call_seed: int | None = None) -> None:
        plan.append((test, item.name, variant, {
            "messages": messages, "schema": schema, "tag": f"audit:{test}:{item.name}:{variant}",
            **({"seed": call_seed} if call_seed is not None else {})}))

    for it in items:
        facts = it.facts()
        for k, order in enumerate(_ORDERS):
            add("order", it, f"order{k}", _trade_messages(facts, _ask(order), order))
        for action in ("buy", "sell"):
            add("label", it, action, _yesno_messages(facts, action), YesNo)
        for frame in ("gain", "loss"):
            add("framing", it, frame, _trade_messages(it.facts(frame=frame), _ask(_ORDERS[0])))
        for person in ("first", "third"):
            add("person", it, person, _trade_messages(facts, _ask(_ORDERS[0], person)))
        add("mirror", it, "original", _trade_messages(facts, _ask(_ORDERS[0])))
        add("mirror", it, "mirrored", _trade_messages(it.mirror().facts(), _ask(_ORDERS[0])))
        for j in range(samples):
            add("sampling", it, f"seed{seed + 1 + j}", _trade_messages(facts, _ask(_ORDERS[0])),
                call_seed=seed + 1 + j)
    results = gateway.gather([call for *_, call in plan])
    answers = [{"test": t, "item": i, "variant": v, "answer": _answer(r), "call_id": r.call_id}
               for (t, i, v, _), r in zip(plan, results, strict=True)]
    cfg = gateway.config
    out = AuditResult(provider=cfg.provider, model=cfg.model_name,
                      endpoint=gateway.describe()["endpoint"], temperature=cfg.temperature,
                      items=len(items), samples=samples, answers=answers, calls=len(results),
                      abstained=sum(a["answer"] == "abstain" for a in answers))
    table: dict[tuple[str, str], dict[str, str]] = {}
    for a in answers:
        table.setdefault((a["test"], a["item"]), {})[a["variant"]] = a["answer"]
    rng = np.random.default_rng(seed)
    out.metrics = _metrics(table, [it.name for it in items], samples, cfg.temperature,
                           _random_answers(rng, baseline_draws))
    return out


def _random_answers(rng: np.random.Generator, draws: int) -> dict[str, np.ndarray]:
    """A uniform random answerer: trade answers over buy/sell/hold, label answers yes/no."""
    return {"trade": rng.choice(np.array(ACTIONS), size=(draws, 2)),
            "yesno": rng.choice(np.array(["yes", "no"]), size=(draws, 2))}


def _metrics(table: dict[tuple[str, str], dict[str, str]], names: list[str], samples: int,
             temperature: float, rnd: dict[str, np.ndarray]) -> list[Metric]:
    ms: list[Metric] = []
    trade, yesno = rnd["trade"], rnd["yesno"]

    def rate(test: str, name: str, hits: list[bool], ideal: str, baseline: float | None,
             note: str = "") -> None:
        lo, hi = wilson(sum(hits), len(hits))
        ms.append(Metric(test, name, sum(hits) / len(hits) if hits else 0.0, lo, hi, len(hits),
                         baseline, ideal, note))

    def pair(test: str, a: str, b: str) -> list[tuple[str, str]]:
        return [(table[(test, n)][a], table[(test, n)][b]) for n in names]

    def same(x: str, y: str) -> bool:
        return x == y and x != "abstain"

    rand_same = float(np.mean(trade[:, 0] == trade[:, 1]))
    orders = pair("order", "order0", "order1")
    rate("order", "same action in both orders", [same(x, y) for x, y in orders],
         "100%", rand_same)
    firsts = [ans == _ORDERS[k][0] for x in orders for k, ans in enumerate(x)]
    rate("order", "first-listed option chosen", firsts, "no higher than it is when the list "
         "is reversed; random 33%", 1 / 3)
    labels = pair("label", "buy", "sell")
    yes = [ans == "yes" for x in labels for ans in x]
    rate("label", "yes rate (acquiescence)", yes, "about 50%, never yes to both", 0.5)
    rate("label", "yes to both buy and sell", [x == ("yes", "yes") for x in labels], "0%",
         float(np.mean((yesno[:, 0] == "yes") & (yesno[:, 1] == "yes"))))
    rate("label", "abstained", [a == "abstain" for x in labels for a in x], "0%", 0.0)
    rate("framing", "same action, gain vs loss frame",
         [same(x, y) for x, y in pair("framing", "gain", "loss")], "100%", rand_same)
    rate("person", "same action, first vs third person",
         [same(x, y) for x, y in pair("person", "first", "third")], "100%", rand_same)
    mirrors = pair("mirror", "original", "mirrored")
    rate("mirror", "call inverted (buy<->sell)",
         [x in ("buy", "sell") and y == _MIRROR[x] for x, y in mirrors], "100% on clear items",
         float(np.mean([(a, b) in (("buy", "sell"), ("sell", "buy")) for a, b in trade])))
    rate("mirror", "consistent (inverted or hold/hold)",
         [x != "abstain" and y == _MIRROR.get(x) for x, y in mirrors], "100%",
         float(np.mean([_MIRROR[a] == b for a, b in trade])))
    rate("mirror", "unchanged buy/sell (data ignored)",
         [x == y and x in ("buy", "sell") for x, y in mirrors], "0%",
         float(np.mean([(a == b) and a != "hold" for a, b in trade])))
    agree, ties = [], 0
    for n in names:
        votes = [v for k, v in table[("sampling", n)].items()]
        counts = Counter(v for v in votes if v != "abstain")
        top = counts.most_common()
        if len(top) > 1 and top[0][1] == top[1][1]:
            ties += 1
        agree.append(top[0][1] / len(votes) if top else 0.0)
    lo, hi = _mean_ci(agree)
    rand_agree = _random_modal_share(samples)
    note = ("temperature 0: repeated calls can only agree" if temperature == 0
            else f"{ties} of {len(names)} items tied between answers")
    ms.append(Metric("sampling", f"share agreeing with the mode ({samples} seeds)",
                     float(np.mean(agree)), lo, hi, len(names), rand_agree, "100%", note))
    return ms


def _mean_ci(x: list[float], z: float = 1.96) -> tuple[float, float]:
    a = np.asarray(x, dtype=float)
    if len(a) < 2:
        return float(a.mean()) if len(a) else 0.0, float(a.mean()) if len(a) else 1.0
    half = z * a.std(ddof=1) / math.sqrt(len(a))
    return max(0.0, float(a.mean() - half)), min(1.0, float(a.mean() + half))


def _random_modal_share(samples: int, draws: int = 4000, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    votes = rng.integers(0, 3, size=(draws, samples))
    counts = np.stack([(votes == k).sum(axis=1) for k in range(3)], axis=1)
    return float((counts.max(axis=1) / samples).mean())
