"""An LLM analyst: one gateway call per symbol and decision, from the point-in-time view only.

Each decision builds a compact prompt per symbol (returns summary, volume change, the latest
headlines available at decision time, the current weight), asks the gateway for a
:class:`~tradesim.llm.schema.TradeDecision` for all symbols concurrently, and maps the answers
to target weights. Every call is cached and journaled by the gateway; ``save_artifacts`` puts
the cache, the journal and the agent's own settings into the run folder, so
:meth:`LLMAnalyst.from_run` replays the run bit for bit without a key or a server.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from tradesim.agents._llm_params import LLMAgentParams
from tradesim.contracts import BaseAgent, Decision, Observation, RunContext
from tradesim.errors import ConfigError
from tradesim.llm.budget import CostEstimate, PriceTable, estimate
from tradesim.llm.gateway import CACHE_FILE, Gateway, GatewayConfig, LLMResult, SpendMeter
from tradesim.llm.leakage import Anonymizer, leakage_flags, model_info
from tradesim.llm.schema import TradeDecision, repair_message

AGENT_FILE = "llm_agent.json"  # the agent's parameters and gateway config, for from_run

SYSTEM_PROMPT = (
    "You are a disciplined equity analyst. Judge one stock from the data given and nothing "
    "else. Reply with one JSON object: action (buy, sell or hold), weight (0 to 1, how much of "
    "this stock's allocation to hold long for buy or short for sell), confidence (0 to 1) and "
    "rationale (at most two sentences). Hold when the evidence is weak.")

_SAMPLE_HEADLINE = "2020-01-01 XXXX shares move after a quarterly update from management"


class LLMAnalyst(BaseAgent):
    """Per-symbol LLM calls through the gateway, mapped to target weights (abstain = hold)."""

    name = "llm_analyst"

    class Params(LLMAgentParams):
        lookback: int = Field(20, ge=2, description="bars of returns in each prompt")
        news_items: int = Field(5, ge=0, description="latest headlines in each prompt")
        anonymize: bool = Field(False, description="hide tickers and dates from the model")
        max_weight: float = Field(1.0, gt=0, le=10, description="weight of a full-size buy, "
                                  "spread 1/N over the universe")
        every: int = Field(1, ge=1, description="decide on every k-th bar, hold between")
        allow_short: bool = Field(False, description="a sell goes short instead of flat")

    def __init__(self, **params: Any) -> None:
        """Parameters as in :class:`LLMAnalyst.Params`; ``gateway`` may also be a live
        :class:`Gateway` (it stays its owner's: this agent will not close it)."""
        given = params.get("gateway")
        self._gateway = given if isinstance(given, Gateway) else None
        if self._gateway is not None:
            params = {**params, "gateway": self._gateway.config}
        p = self._configure(params)
        self.lookback = p.lookback
        self.news_items = p.news_items
        self.anonymize = p.anonymize
        self.max_weight = p.max_weight
        self.every = p.every
        self.allow_short = p.allow_short
        self.charge_llm_cost = p.charge_llm_cost
        self._owns_gateway = self._gateway is None
        self.gateway_config = p.gateway
        self._steps = 0  # decide calls so far (decisions are made on every `every`-th)
        self._sources: set[str] = set()  # data sources read (synthetic: no leakage flag)
        self._closed: Gateway | None = None  # the last gateway closed: its record still saves
        self._spend = SpendMeter()  # LLM dollars since the last decision (charge_llm_cost)

    @classmethod
    def from_run(cls, folder: str | Path, **overrides: Any) -> LLMAnalyst:
        """The agent of a saved run, in strict replay mode against the run folder's cache.

        ``overrides`` change agent parameters (a changed prompt then misses the cache and
        raises ReplayMissError naming the call); a ``gateway`` dict amends the saved gateway
        fields, though mode and cache stay the replay's.
        """
        path = Path(folder) / AGENT_FILE
        if not path.is_file():
            raise ConfigError(f"{folder} holds no {AGENT_FILE}; pass a run folder saved by a "
                              "backtest of llm_analyst (its save_artifacts writes it)")
        saved = json.loads(path.read_text(encoding="utf-8"))
        gateway = {**saved.pop("gateway"), **dict(overrides.pop("gateway", None) or {}),
                   "mode": "replay", "cache_path": str(Path(folder) / CACHE_FILE)}
        return cls(**{**saved, **overrides, "gateway": GatewayConfig(**gateway)})

    @property
    def gateway(self) -> Gateway:
        """The gateway, built on first use (so loading a spec needs no key and no model)."""
        if self._gateway is None:
            self._gateway = Gateway(config=self.gateway_config)
        return self._gateway

    # --- Agent ----------------------------------------------------------------------------

    def decide(self, obs: Observation) -> Decision:
        step = self._steps
        self._steps += 1
        if step % self.every:
            return Decision.hold("llm_analyst: not a decision step")
        prompts = {s: p for s in obs.universe if (p := self._prompt(obs, s)) is not None}
        if not prompts:
            return Decision.hold("llm_analyst: not enough history yet")
        anonymizer = (Anonymizer(symbols=sorted({*obs.universe, *obs.market}), anchor=obs.time)
                      if self.anonymize else None)
        results = self.gateway.gather([
            {"messages": [{"role": "system", "content": SYSTEM_PROMPT},
                          {"role": "user", "content": prompt}],
             "schema": TradeDecision, "decision_time": obs.time, "tag": f"{self.name}:{symbol}",
             "anonymizer": anonymizer}
            for symbol, prompt in prompts.items()])
        decision = self._decision(obs, dict(zip(prompts, results)))
        if self.charge_llm_cost:
            decision = dataclasses.replace(decision, expense=self._spend.read(self._gateway))
        return decision

    def start(self, context: RunContext) -> None:
        """A new run: the decision schedule restarts."""
        super().start(context)
        self._steps = 0
        self._spend.restart(self._gateway)

    def stop(self, *, error: BaseException | None = None) -> None:
        """Release the gateway this agent built (its thread and cache connection)."""
        self.close()

    def state(self) -> dict[str, Any]:
        return {"steps": self._steps}

    def load_state(self, state: dict[str, Any]) -> None:
        self._steps = int(state.get("steps", 0))
        self._spend.restart(self._gateway)

    # --- RunArtifacts ---------------------------------------------------------------------

    def run_meta(self, *, start: np.datetime64, end: np.datetime64) -> dict[str, Any]:
        """Knowledge-cutoff leakage flags for [start, end] plus the run's call/token/cost totals."""
        cfg = self.gateway_config
        flags = leakage_flags(cfg.model_name, start, end, sources=self._sources,
                              anonymized=self.anonymize)
        info = model_info(cfg.model_name)
        gw = self._gateway or self._closed
        records = gw.journal.records if gw is not None else []
        llm = {
            "provider": cfg.provider, "model": cfg.model_name, "mode": cfg.mode,
            "endpoint": Gateway.describe_config(cfg)["endpoint"],
            "data_sources": sorted(self._sources),
            "knowledge_cutoff": str(info.cutoff) if info else None,
            "cutoff_source": info.source if info else None,
            "leakage": [{"model": f.model, "level": f.level, "message": f.message} for f in flags],
            "anonymized": self.anonymize,
            "calls": len(records),
            "model_calls": gw.model_calls if gw is not None else 0,
            "cache_hits": sum(r.cache_hit for r in records),
            "abstained": sum(r.abstained for r in records),
            "prompt_tokens": sum(r.prompt_tokens for r in records),
            "completion_tokens": sum(r.completion_tokens for r in records),
            "cost_usd": round(sum(r.cost_usd for r in records), 8),
        }
        return {"warnings": [f"LLM knowledge-cutoff leakage ({f.level}): {f.message}"
                             for f in flags], "llm": llm}

    def save_artifacts(self, folder: Path) -> list[Path]:
        """Cache, journal and this agent's settings into ``folder`` (what from_run needs)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        settings = {"lookback": self.lookback, "news_items": self.news_items,
                    "anonymize": self.anonymize, "max_weight": self.max_weight,
                    "every": self.every, "allow_short": self.allow_short,
                    "gateway": self.gateway_config.model_dump(
                        mode="json", exclude={"mode", "cache_path"})}
        out = folder / AGENT_FILE
        out.write_text(json.dumps(settings, indent=2, sort_keys=True), encoding="utf-8")
        gw = self._gateway or self._closed or self.gateway  # a closed gateway still saves its run
        cache, journal = gw.save(folder)  # only the answers this run used
        return [out, journal, cache]

    # --- dry run --------------------------------------------------------------------------

    def estimate_run(self, *, n_steps: int, n_symbols: int, prompt_tokens: int | None = None,
                     completion_tokens: int | None = None, start: np.datetime64 | str | None = None,
                     end: np.datetime64 | str | None = None,
                     sources: tuple[str, ...] = ()) -> CostEstimate:
        """Dry-run calls, tokens and cost of a backtest of ``n_steps`` bars over ``n_symbols``.

        One call per symbol on every ``every``-th step; prompt tokens default to a full prompt
        (``lookback`` bars, ``news_items`` headlines) counted with the model's tokenizer where
        one is available, completion tokens to ``max_tokens``; the worst case adds one repair
        per call. An unknown price is reported as unknown, never $0. With ``start``/``end``
        (and the data ``sources``) the knowledge-cutoff warnings come with the estimate.
        """
        from tradesim.llm.tokens import token_counter

        cfg = self.gateway_config  # estimating must not need a key or a loaded model
        calls = math.ceil(n_steps / self.every) * n_symbols
        counter = token_counter(provider=cfg.provider, model=cfg.model_name,
                                model_path=cfg.model_path)
        tokens_in = (prompt_tokens if prompt_tokens is not None
                     else counter.messages(self._typical_messages()))
        repair = counter.text(repair_message("x" * 120, TradeDecision)["content"])
        warnings: tuple[str, ...] = ()
        if start is not None and end is not None:
            warnings = tuple(f"LLM knowledge-cutoff leakage ({f.level}): {f.message}"
                             for f in leakage_flags(cfg.model_name, start, end, sources=sources,
                                                    anonymized=self.anonymize))
        return estimate(model=cfg.model_name, calls=calls, prompt_tokens=tokens_in,
                        completion_tokens=completion_tokens or cfg.max_tokens,
                        prices=PriceTable(cfg.prices),
                        free=cfg.provider in ("local", "local-transformers"),
                        tokenizer=counter.name, repair_tokens=repair, warnings=warnings)

    def close(self) -> None:
        """Stop the gateway this agent built (a gateway passed in stays with its owner)."""
        if self._gateway is not None and self._owns_gateway:
            self._gateway.close()
            self._closed, self._gateway = self._gateway, None

    # --- internals ------------------------------------------------------------------------

    def _prompt(self, obs: Observation, symbol: str) -> str | None:
        """The user prompt for ``symbol`` at ``obs.time``, or None without two finite closes."""
        bars = obs.bars(symbol, lookback=self.lookback)
        self._sources.add(bars.source)
        close = bars.close
        ok = np.isfinite(close) & (close > 0)
        if ok.sum() < 2:
            return None
        close, volume = close[ok], bars.volume[ok]
        news = obs.news([symbol], lookback=self.news_items) if self.news_items else None
        return _render(symbol=symbol, day=str(obs.time.astype("datetime64[D]")),
                       interval=obs.interval, close=close, volume=volume,
                       weight=obs.portfolio.weight(symbol),
                       headlines=[] if news is None else [
                           f"{np.datetime64(t, 'D')} {title}"
                           for t, title in zip(news.available_at, news.title)])

    def _typical_messages(self) -> list[dict[str, str]]:
        """A full prompt (system + user) with realistic numbers and placeholder headlines."""
        close = 100.0 * np.cumprod(1 + 0.013 * np.sin(np.arange(self.lookback) * 1.7))
        user = _render(symbol="XXXX", day="2020-01-01", interval="1d", close=close,
                       volume=np.full(self.lookback, 1e6), weight=0.0,
                       headlines=[_SAMPLE_HEADLINE] * self.news_items)
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

    def _decision(self, obs: Observation, results: dict[str, LLMResult]) -> Decision:
        """Target weights from the answers: buy w/N, sell -w/N (or flat when long-only), hold keeps."""
        scale = self.max_weight / len(obs.universe)
        weights: dict[str, float] = {}
        notes, confidences = [], []
        for symbol, result in results.items():
            td = result.decision()
            if td.action == "buy":
                weights[symbol] = td.weight * scale
            elif td.action == "sell":
                weights[symbol] = -td.weight * scale if self.allow_short else 0.0
            if not result.abstained:
                confidences.append(td.confidence)
            notes.append(f"{symbol}: {td.action} {td.weight:.2f} ({td.confidence:.2f}) "
                         f"{td.rationale}")
        return Decision(weights=weights,
                        confidence=float(np.mean(confidences)) if confidences else 0.0,
                        rationale=" | ".join(notes),
                        llm_calls=tuple(r.call_id for r in results.values()))



def _render(*, symbol: str, day: str, interval: str, close: np.ndarray, volume: np.ndarray,
            weight: float, headlines: list[str]) -> str:
    """The user prompt: fixed layout and rounding, so equal inputs give equal cache keys."""
    rets = np.diff(close) / close[:-1] * 100.0
    n = rets.shape[0]
    total = (close[-1] / close[0] - 1.0) * 100.0
    vs_mean = (close[-1] / close.mean() - 1.0) * 100.0
    prior = volume[:-1]
    volume_line = "Volume of the latest bar vs the prior average: n/a"
    if prior.size and prior.mean() > 0 and math.isfinite(volume[-1] / prior.mean()):
        volume_line = (f"Volume of the latest bar vs the prior {prior.shape[0]}-bar average: "
                       f"{(volume[-1] / prior.mean() - 1.0) * 100.0:+.1f}%.")
    lines = [
        f"Stock: {symbol}. Decision date: {day}, after the close of the latest {interval} bar.",
        f"Last {n} {interval} returns in %, oldest first: " + " ".join(f"{r:+.2f}" for r in rets),
        (f"Total return {total:+.2f}%, up bars {int((rets > 0).sum())}/{n}, volatility "
         f"{float(rets.std()):.2f}% per bar, last close {vs_mean:+.2f}% vs the "
         f"{close.shape[0]}-bar mean."),
        volume_line,
        f"Current position: {weight * 100.0:+.1f}% of equity.",
        "Recent headlines (newest last):" if headlines else "No recent headlines.",
        *(f"- {h}" for h in headlines),
        "Decide buy, sell or hold for this stock.",
    ]
    return "\n".join(lines)
