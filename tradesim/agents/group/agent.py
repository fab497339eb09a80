"""The TradingGroup-inspired team: five roles, lag-safe reflection, a risk manager.

Per decision step and symbol the news, report and trend roles read the point-in-time view; the
style role sets one style for the step; the decision role merges the signals and the style into
buy, sell or hold with a size; the risk manager sizes by style and attaches stop-loss and
take-profit levels from trailing volatility. Each role answers through the LLM gateway (one
pydantic schema per role) or, with ``quant_only`` (or when the model abstains), from numbers:
a finance lexicon, an indicator forecaster, a style rule and a signal merge. Forecasting, style
and decision calls go into a :class:`~tradesim.agents.group.memory.ReflectionMemory`; their
outcomes are written ``horizon`` bars later, and retrieval sees only outcomes realised by the
decision time. See docs/tradinggroup.md for every choice the paper leaves open.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from tradesim.agents._llm_params import LLMAgentParams
from tradesim.agents.group import roles
from tradesim.agents.group.embed import TextEmbedder, load_embedder, situation_text
from tradesim.agents.group.indicators import features, situation_vector, trailing_vol
from tradesim.agents.group.memory import MEMORY_FILE, Experience, ReflectionMemory
from tradesim.agents.group.reports import ReportSource, describe, report_score
from tradesim.agents.group.risk import exit_levels
from tradesim.contracts import (
    BaseAgent,
    Decision,
    Feedback,
    Observation,
    RunContext,
)
from tradesim.errors import ConfigError
from tradesim.llm.gateway import (
    CACHE_FILE,
    JOURNAL_FILE,
    Gateway,
    LLMResult,
    SpendMeter,
)
from tradesim.llm.leakage import Anonymizer, leakage_flags, model_info

STEPS_FILE = "tradinggroup_steps.jsonl"  # per-step trajectories, read by `tradesim synth`
AGENT_FILE = "tradinggroup.json"  # the agent's resolved parameters
_PORTFOLIO = "_portfolio"  # memory symbol of the style role (its outcome is the account's)
_NEWS_WINDOW_DAYS = 5.0


class TradingGroup(BaseAgent):
    """Five-role team agent (news, report, trend, style, decision) with reflection and risk."""

    name = "tradinggroup"
    lookback = 21

    class Params(LLMAgentParams):
        quant_only: bool = Field(True, description="every role on its quantitative path "
                                 "(no model); false asks the gateway, falling back on abstain")
        horizon: int = Field(5, ge=1, le=250, description="bars until a call's outcome is "
                             "realised (reflection labels, stop/target width)")
        every: int = Field(1, ge=1, description="decide on every k-th bar, hold between")
        reflection: bool = Field(True, description="retrieve realised experience into the "
                                 "forecasting, style and decision roles")
        risk_manager: bool = Field(True, description="attach volatility stops and targets")
        style: Literal["auto", "aggressive", "balanced", "conservative"] = Field(
            "auto", description="auto: the style role decides; else a fixed style")
        max_weight: float = Field(1.0, gt=0, le=10, description="total weight of full-size "
                                  "buys, spread 1/N over the universe")
        allow_short: bool = Field(False, description="a sell goes short instead of flat")
        news_items: int = Field(8, ge=0, description="latest headlines per symbol and step")
        reports: str | None = Field(None, description="fundamentals file (CSV/Parquet: symbol, "
                                    "period_end[, filed_at], numeric columns)")
        report_lag_days: int = Field(1, ge=0, description="days after filed_at a report is "
                                     "visible")
        report_fallback_days: int = Field(45, ge=0, description="days after period_end when "
                                          "the file has no filed_at")
        memory_k: int = Field(5, ge=1, description="similar past situations retrieved")
        min_similar: int = Field(3, ge=1, description="realised matches needed before "
                                 "experience changes a quantitative answer")
        flat_band: float = Field(0.005, ge=0, description="|move| below which an outcome is "
                                 "flat")
        carry_memory: str | None = Field(None, description="a memory file of an earlier run "
                                         "to start from (refused if it holds outcomes realised "
                                         "after this run starts)")
        anonymize: bool = Field(False, description="hide tickers and dates from the model")
        embeddings: Literal["none", "minilm"] = Field(
            "none", description="text embeddings of the headlines and report read, blended "
            "into memory retrieval (minilm: the group extra's all-MiniLM-L6-v2)")
        text_weight: float = Field(0.5, ge=0, le=1, description="weight of the text "
                                   "similarity against the numeric one in retrieval")

    def __init__(self, **params: Any) -> None:
        given = params.get("gateway")
        self._gateway = given if isinstance(given, Gateway) else None
        if self._gateway is not None:
            params = {**params, "gateway": self._gateway.config}
        self.p = self._configure(params)
        self._owns_gateway = self._gateway is None
        self._reports = (ReportSource(self.p.reports, lag_days=self.p.report_lag_days,
                                      fallback_days=self.p.report_fallback_days)
                         if self.p.reports else None)
        self._memory: ReflectionMemory | None = None
        self._embedder: TextEmbedder | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._closed: Gateway | None = None
        self._reset()

    def _reset(self) -> None:
        self._steps = 0
        self._peak = 0.0
        self._log: list[dict[str, Any]] = []
        self._sources: set[str] = set()
        self._checked_carry = False
        self._account_pnl: list[float] = []  # realised P&L of the account, per feedback
        self._spend = SpendMeter()  # LLM dollars since the last decision (charge_llm_cost)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, context: RunContext) -> None:
        """A new run: fresh memory (in the run folder, else a temporary file), carry if asked."""
        super().start(context)
        self._reset()
        self._spend.restart(self._gateway)
        if self._embedder is None and self.p.embeddings != "none":
            self._embedder = load_embedder(self.p.embeddings)
        self._close_memory()
        if context.run_folder is not None:
            path = Path(context.run_folder) / MEMORY_FILE
            path.unlink(missing_ok=True)
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="tradinggroup-")
            path = Path(self._tmp.name) / MEMORY_FILE
        if self.p.carry_memory:
            source = Path(self.p.carry_memory).expanduser()
            if not source.is_file():
                raise ConfigError(f"carry_memory={source} does not exist; pass the "
                                  f"{MEMORY_FILE} of an earlier run folder or leave it unset")
            ReflectionMemory.copy_file(source, path)
        self._memory = ReflectionMemory(path, run=str(context.start or "live"))
        if self.p.carry_memory and context.start is not None:
            self._memory.check_carry(context.start)
            self._checked_carry = True

    def stop(self, *, error: BaseException | None = None) -> None:
        """Close the gateway this agent built; the memory file is flushed for save_artifacts."""
        if self._memory is not None:
            self._memory.flush()
        if self._gateway is not None and self._owns_gateway:
            self._gateway.close()
            self._closed, self._gateway = self._gateway, None

    def update(self, feedback: Feedback) -> None:
        """The account's realised return per period (its ledger outcome), for the record."""
        self._account_pnl.append(float(feedback.period_return))

    def state(self) -> dict[str, Any]:
        return {"steps": self._steps, "peak": self._peak,
                "memory": self.memory.snapshot(), "account_pnl": self._account_pnl,
                "checked_carry": self._checked_carry}

    def load_state(self, state: dict[str, Any]) -> None:
        self._steps = int(state.get("steps", 0))
        self._peak = float(state.get("peak", 0.0))
        self._account_pnl = [float(x) for x in state.get("account_pnl", [])]
        self._checked_carry = bool(state.get("checked_carry", False))
        self.memory.restore(state.get("memory", []))
        self._spend.restart(self._gateway)

    @property
    def memory(self) -> ReflectionMemory:
        if self._memory is None:
            raise ConfigError("tradinggroup: start(context) must run before decide/state; "
                              "the session calls it")
        return self._memory

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:
            self._gateway = Gateway(config=self.p.gateway)
        return self._gateway

    # --- the team -------------------------------------------------------------------------

    def decide(self, obs: Observation) -> Decision:
        p, memory = self.p, self.memory
        if not self._checked_carry and p.carry_memory:
            memory.check_carry(obs.time)
            self._checked_carry = True
        closes = {s: obs.market.last_close(s) for s in obs.universe}
        equity = obs.portfolio.equity
        self._peak = max(self._peak, equity)
        memory.realise(step=obs.step, now=obs.time, flat_band=p.flat_band,
                       prices={**closes, _PORTFOLIO: equity})
        step = self._steps
        self._steps += 1
        if step % p.every:
            return Decision.hold("tradinggroup: not a decision step")
        ctx = {s: c for s in obs.universe if (c := self._symbol_context(obs, s)) is not None}
        if not ctx:
            return Decision.hold("tradinggroup: not enough history yet")
        anonymizer = (Anonymizer(symbols=sorted({*obs.universe, *obs.market}), anchor=obs.time)
                      if p.anonymize else None)
        calls: list[str] = []
        self._analysts(obs, ctx, anonymizer, calls)
        drawdown = 1.0 - equity / self._peak if self._peak > 0 else 0.0
        vol = float(np.nanmean([c["feat"]["vol20"] for c in ctx.values()]))
        style = self._style(obs, drawdown, vol, anonymizer, calls)
        self._decisions(obs, ctx, style, anonymizer, calls)
        return self._finish(obs, ctx, style, drawdown, vol, tuple(calls))

    def _symbol_context(self, obs: Observation, symbol: str) -> dict[str, Any] | None:
        bars = obs.bars(symbol, lookback=80)
        self._sources.add(bars.source)
        close = bars.close[np.isfinite(bars.close) & (bars.close > 0)]
        if close.shape[0] < 21:
            return None
        items = obs.news([symbol], lookback=self.p.news_items) if self.p.news_items else None
        news: list[tuple[str, float]] = []
        if items is not None:
            for t, title in zip(items.available_at, items.title):
                age = float((obs.time - t) / np.timedelta64(1, "D"))
                if age <= _NEWS_WINDOW_DAYS:
                    news.append((str(title), age))
        reports = (self._reports.visible(symbol, obs.time) if self._reports is not None else [])
        return {"close": float(close[-1]), "feat": features(close), "news": news,
                "reports": reports, "sigma": trailing_vol(close)}

    def _analysts(self, obs: Observation, ctx: dict[str, dict[str, Any]],
                  anonymizer: Anonymizer | None, calls: list[str]) -> None:
        """News, report and trend roles for every symbol (quantitative, then the model)."""
        for c in ctx.values():
            titles = [t for t, _ in c["news"]]
            ages = [a for _, a in c["news"]]
            score, influence, summary = roles.news_quant(titles, ages)
            c["news_out"] = {"score": score, "influence": influence, "summary": summary,
                             "path": "quant"}
            rscore, rsummary = report_score(c["reports"])
            c["report_out"] = {"score": rscore, "summary": rsummary, "path": "quant"}
            c["vec"] = situation_vector(c["feat"], news=score, report=rscore)
        self._embed(ctx)
        for c in ctx.values():
            direction, conf, tscore = roles.trend_quant(c["feat"])
            exp = self._recall("trend", obs, c["vec"], c["emb"])
            c["trend_exp"] = exp.note()
            conf, why = self._scaled(conf, exp)
            c["trend_out"] = {"direction": direction, "confidence": conf, "score": tscore,
                              "summary": why, "path": "quant"}
        if self.p.quant_only:
            return
        requests: list[tuple[str, str, type[BaseModel], str]] = []
        for s, c in ctx.items():
            if c["news"]:
                requests.append((s, "news", roles.NewsView, _news_prompt(s, obs, c)))
            if c["reports"]:
                requests.append((s, "report", roles.ReportView, _report_prompt(s, obs, c)))
            requests.append((s, "trend", roles.TrendView, _trend_prompt(s, obs, c, self.p)))
        for (s, role, _, _), result in zip(requests, self._ask(obs, requests, anonymizer, calls)):
            c = ctx[s]
            parsed = None if result.abstained else result.parsed
            if isinstance(parsed, roles.NewsView):
                age = float(np.mean([a for _, a in c["news"]]))
                n = roles.influence_score(abs(parsed.sentiment), parsed.probability, age)
                c["news_out"] = {"score": math.copysign(n, parsed.sentiment)
                                 if parsed.sentiment else 0.0, "influence": n,
                                 "summary": parsed.rationale, "path": "llm"}
            elif isinstance(parsed, roles.ReportView):
                c["report_out"] = {"score": parsed.score, "summary": parsed.rationale,
                                   "path": "llm"}
            elif isinstance(parsed, roles.TrendView):
                sign = {"up": 1.0, "down": -1.0, "flat": 0.0}[parsed.direction]
                c["trend_out"] = {"direction": parsed.direction,
                                  "confidence": parsed.confidence,
                                  "score": sign * parsed.confidence,
                                  "summary": parsed.rationale, "path": "llm"}
            else:
                c[f"{role}_out"]["summary"] += f" (model abstained: {result.error})"

    def _style(self, obs: Observation, drawdown: float, vol: float,
               anonymizer: Anonymizer | None, calls: list[str]) -> dict[str, Any]:
        vec = np.array([drawdown / 0.05, (vol if math.isfinite(vol) else 0.02) / 0.02 - 1.0])
        exp = self._recall("style", obs, vec)
        if self.p.style != "auto":
            return {"style": self.p.style, "summary": "fixed by parameter", "path": "fixed",
                    "vec": vec, "exp": exp.note()}
        style, why = roles.style_quant(drawdown=drawdown, vol=vol, hit_rate=exp.hit_rate,
                                       n_past=exp.n)
        out = {"style": style, "summary": why, "path": "quant", "vec": vec, "exp": exp.note()}
        if not self.p.quant_only:
            user = (f"Decision date {_day(obs)}. Account drawdown from its peak {drawdown:.1%}; "
                    f"mean daily volatility of the universe {vol:.2%}.\n"
                    f"Experience:\n{exp.note()}\nChoose the style.")
            result = self._ask(obs, [(_PORTFOLIO, "style", roles.StyleView, user)], anonymizer,
                               calls)[0]
            if isinstance(result.parsed, roles.StyleView) and not result.abstained:
                out.update(style=result.parsed.style, summary=result.parsed.rationale,
                           path="llm")
        return out

    def _decisions(self, obs: Observation, ctx: dict[str, dict[str, Any]],
                   style: dict[str, Any], anonymizer: Anonymizer | None,
                   calls: list[str]) -> None:
        for c in ctx.values():
            signal = roles.merge_signals(c["news_out"]["score"], c["report_out"]["score"],
                                         c["trend_out"]["score"])
            action, size, conf = roles.decision_quant(signal, style["style"])
            exp = self._recall("decision", obs, c["vec"], c["emb"])
            c["decision_exp"] = exp.note()
            note = ""
            same = [r for r in exp.similar if r.output.get("action") == action]
            if (self.p.reflection and action != "hold" and len(same) >= self.p.min_similar
                    and sum(r.outcome == "win" for r in same) / len(same) < 0.4):
                size *= 0.5
                note = (f"; halved: similar past {action}s won "
                        f"{sum(r.outcome == 'win' for r in same)}/{len(same)}")
            c["signal"] = signal
            c["decision_out"] = {"action": action, "size": round(size, 6),
                                 "confidence": round(conf, 6),
                                 "summary": f"merged signal {signal:+.3f}, {style['style']}"
                                            + note, "path": "quant"}
        if self.p.quant_only:
            return
        requests: list[tuple[str, str, type[BaseModel], str]] = [(s, "decision", roles.TeamDecision,
                     _decision_prompt(s, obs, c, style["style"])) for s, c in ctx.items()]
        for (s, *_), result in zip(requests, self._ask(obs, requests, anonymizer, calls)):
            if isinstance(result.parsed, roles.TeamDecision) and not result.abstained:
                d = result.parsed
                ctx[s]["decision_out"] = {"action": d.action, "size": d.size,
                                          "confidence": d.confidence,
                                          "summary": d.rationale, "path": "llm"}

    def _finish(self, obs: Observation, ctx: dict[str, dict[str, Any]], style: dict[str, Any],
                drawdown: float, vol: float, calls: tuple[str, ...]) -> Decision:
        """Weights, exits, memory entries and the step's trajectory record."""
        p, memory = self.p, self.memory
        cap = p.max_weight / len(obs.universe)
        rule = roles.STYLE_RULES[style["style"]]
        weights: dict[str, float] = {}
        stops: dict[str, float] = {}
        targets: dict[str, float] = {}
        notes, confs = [], []
        for s, c in ctx.items():
            d = c["decision_out"]
            held = obs.portfolio.positions.get(s, 0.0)
            size = min(1.0, d["size"]) * (rule["size"] if d["path"] == "llm" else 1.0)
            side = 0.0
            if d["action"] == "buy" and size > 0:
                weights[s], side = cap * size, 1.0
            elif d["action"] == "sell":
                if p.allow_short and size > 0:
                    weights[s], side = -cap * size, -1.0
                elif held:
                    weights[s] = 0.0
            if side and p.risk_manager:
                levels = exit_levels(close=c["close"], sigma=c["sigma"], style=style["style"],
                                     horizon=p.horizon, side=side)
                if levels is not None:
                    stops[s], targets[s] = levels.stop_loss, levels.take_profit
            c["weight"] = weights.get(s)
            confs.append(d["confidence"])
            notes.append(f"{s}: {d['action']} {size:.2f} ({d['path']}) {d['summary']}")
            digest = _digest(c)
            direction = {"buy": 1.0, "sell": -1.0, "hold": 0.0}[d["action"]]
            tdir = {"up": 1.0, "down": -1.0, "flat": 0.0}[c["trend_out"]["direction"]]
            memory.add(role="trend", symbol=s, time=obs.time, step=obs.step, horizon=p.horizon,
                       situation=c["vec"], inputs_digest=digest,
                       output={"direction": c["trend_out"]["direction"],
                               "confidence": round(c["trend_out"]["confidence"], 4)},
                       direction=tdir, price=c["close"], embedding=c["emb"])
            memory.add(role="decision", symbol=s, time=obs.time, step=obs.step,
                       horizon=p.horizon, situation=c["vec"], inputs_digest=digest,
                       output={"action": d["action"], "size": round(size, 4)},
                       direction=direction, price=c["close"], embedding=c["emb"])
        _fit_gross(weights, obs, p.max_weight)
        for s in list(stops):
            if not weights.get(s):
                stops.pop(s)
                targets.pop(s, None)
        memory.add(role="style", symbol=_PORTFOLIO, time=obs.time, step=obs.step,
                   horizon=p.horizon, situation=style["vec"], inputs_digest=style["style"],
                   output={"style": style["style"]}, direction=1.0, price=obs.portfolio.equity)
        self._log.append(_record(obs, ctx, style, drawdown, vol, weights, stops, targets, calls))
        return Decision(weights=weights, stop_loss=stops, take_profit=targets,
                        confidence=float(np.mean(confs)) if confs else 0.0,
                        rationale=f"style {style['style']} | " + " | ".join(notes),
                        llm_calls=calls,
                        expense=self._spend.read(self._gateway) if p.charge_llm_cost else 0.0)

    # --- helpers --------------------------------------------------------------------------

    def _recall(self, role: str, obs: Observation, vec: np.ndarray,
                emb: np.ndarray | None = None) -> Experience:
        """Realised experience for ``role`` as of the decision time (empty without reflection)."""
        if not self.p.reflection:
            return Experience((), (), ())
        return self.memory.retrieve(role=role, as_of=obs.time, situation=vec,
                                    k=self.p.memory_k, embedding=emb,
                                    text_weight=self.p.text_weight)

    def _embed(self, ctx: dict[str, dict[str, Any]]) -> None:
        """Each symbol's situation text embedded in one batch (None without text or model)."""
        texts = {s: situation_text([t for t, _ in c["news"]], c["report_out"]["summary"])
                 if self._embedder is not None else None for s, c in ctx.items()}
        wanted = [t for t in texts.values() if t is not None]
        found: dict[str, np.ndarray] = {}
        if self._embedder is not None and wanted:
            found = dict(zip(wanted, self._embedder.embed(wanted)))
        for s, c in ctx.items():
            text = texts[s]
            c["emb"] = found[text] if text is not None else None

    def _scaled(self, conf: float, exp: Experience) -> tuple[float, str]:
        """Forecast confidence scaled by the past hit rate in similar situations."""
        if exp.n < self.p.min_similar:
            return conf, "indicators only"
        factor = min(1.5, max(0.5, 0.5 + exp.hit_rate))
        return min(1.0, conf * factor), (f"confidence x{factor:.2f}: similar past forecasts "
                                         f"hit {exp.hit_rate:.0%}")

    def _ask(self, obs: Observation, requests: list[tuple[str, str, type[BaseModel], str]],
             anonymizer: Anonymizer | None, calls: list[str]) -> list[LLMResult]:
        if not requests:
            return []
        results = self.gateway.gather([
            {"messages": [{"role": "system", "content": roles.SYSTEM[role]},
                          {"role": "user", "content": user}],
             "schema": schema, "decision_time": obs.time, "tag": f"{self.name}:{role}:{s}",
             "anonymizer": anonymizer} for s, role, schema, user in requests])
        calls.extend(r.call_id for r in results)
        return results

    def _close_memory(self) -> None:
        if self._memory is not None:
            self._memory.close()
            self._memory = None

    # --- RunArtifacts ---------------------------------------------------------------------

    def run_meta(self, *, start: np.datetime64, end: np.datetime64) -> dict[str, Any]:
        """Settings and, with a model, knowledge-cutoff flags and call totals."""
        meta: dict[str, Any] = {"tradinggroup": {
            "quant_only": self.p.quant_only, "horizon": self.p.horizon,
            "memory_entries": self.memory.count() if self._memory else 0,
            "memory_realised": self.memory.count(realised=True) if self._memory else 0}}
        if self.p.quant_only:
            return meta
        cfg = self.p.gateway
        flags = leakage_flags(cfg.model_name, start, end, sources=self._sources,
                              anonymized=self.p.anonymize)
        info = model_info(cfg.model_name)
        gw = self._gateway or self._closed
        records = gw.journal.records if gw is not None else []
        meta["llm"] = {"provider": cfg.provider, "model": cfg.model_name, "mode": cfg.mode,
                       "knowledge_cutoff": str(info.cutoff) if info else None,
                       "anonymized": self.p.anonymize, "data_sources": sorted(self._sources),
                       "calls": len(records),
                       "model_calls": gw.model_calls if gw is not None else 0,
                       "cache_hits": sum(r.cache_hit for r in records),
                       "abstained": sum(r.abstained for r in records)}
        meta["warnings"] = [f"LLM knowledge-cutoff leakage ({f.level}): {f.message}"
                            for f in flags]
        return meta

    def save_artifacts(self, folder: Path) -> list[Path]:
        """Trajectories, settings, memory (and the LLM cache and journal) into ``folder``, and
        the team page ``tradinggroup.html`` (:mod:`tradesim.report.group`)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out = [folder / STEPS_FILE, folder / AGENT_FILE]
        with out[0].open("w", encoding="utf-8") as fh:
            for row in self._log:
                fh.write(json.dumps(row, sort_keys=True) + "\n")
        settings = self.p.model_dump(mode="json", exclude={"gateway"})
        settings["gateway"] = self.p.gateway.model_dump(mode="json", exclude={"cache_path"})
        settings["sources"] = sorted(self._sources)
        out[1].write_text(json.dumps(settings, indent=2, sort_keys=True), encoding="utf-8")
        if self._memory is not None and self._memory.path.parent != folder:
            self._memory.copy_to(folder / MEMORY_FILE)
        if (folder / MEMORY_FILE).is_file():
            out.append(folder / MEMORY_FILE)
        if not self.p.quant_only:
            gw = self._gateway or self._closed or self.gateway
            out.extend(gw.save(folder)[::-1])
        from tradesim.report.group import write_group_report  # a page: reads the files above

        out.append(write_group_report(folder, steps_file=STEPS_FILE, memory_file=MEMORY_FILE,
                                      settings_file=AGENT_FILE, journal_file=JOURNAL_FILE))
        return out



def _fit_gross(weights: dict[str, float], obs: Observation, cap: float) -> None:
    """Scale new positions down so new plus kept weights stay within ``cap`` gross (kept
    positions drift with prices; the engine refuses a decision beyond its leverage cap)."""
    kept = sum(abs(w) for s, w in obs.portfolio.weights.items() if s not in weights)
    room = max(0.0, cap * (1 - 1e-6) - kept)
    total = sum(abs(w) for w in weights.values())
    if total > room:
        for s in weights:
            weights[s] *= room / total


def _day(obs: Observation) -> str:
    return str(obs.time.astype("datetime64[D]"))


def _fmt_feat(feat: dict[str, float]) -> str:
    return (f"RSI-14 {feat['rsi14']:.1f}; close vs SMA-20 {feat['dev_sma20']:+.2%}; close vs "
            f"20-bar high {feat['dist_high20']:+.2%}; 20-bar daily volatility "
            f"{feat['vol20']:.2%}; 5-bar return {feat['ret5']:+.2%}; 20-bar return "
            f"{feat['ret20']:+.2%}")


def _news_prompt(symbol: str, obs: Observation, c: dict[str, Any]) -> str:
    lines = [f"Stock {symbol}, decision date {_day(obs)}. Headlines (age in days):"]
    lines += [f"- ({age:.1f}d) {title}" for title, age in c["news"]]
    return "\n".join(lines + ["Rate the sentiment for this stock."])


def _report_prompt(symbol: str, obs: Observation, c: dict[str, Any]) -> str:
    rows = describe(c["reports"])
    return (f"Stock {symbol}, decision date {_day(obs)}. Fundamentals visible today, oldest "
            f"first:\n" + "\n".join(json.dumps(r, sort_keys=True) for r in rows)
            + "\nRate the fundamentals.")


def _trend_prompt(symbol: str, obs: Observation, c: dict[str, Any],
                  p: TradingGroup.Params) -> str:
    return (f"Stock {symbol}, decision date {_day(obs)}, horizon {p.horizon} bars.\n"
            f"Indicators: {_fmt_feat(c['feat'])}.\nExperience:\n{c['trend_exp']}\n"
            "Forecast the direction.")


def _decision_prompt(symbol: str, obs: Observation, c: dict[str, Any], style: str) -> str:
    return "\n".join([
        f"Stock {symbol}, decision date {_day(obs)}. Style: {style}.",
        f"Current position: {obs.portfolio.weight(symbol) * 100:+.1f}% of equity.",
        f"News analyst: score {c['news_out']['score']:+.2f} ({c['news_out']['summary']}).",
        f"Report analyst: score {c['report_out']['score']:+.2f} "
        f"({c['report_out']['summary']}).",
        f"Trend forecaster: {c['trend_out']['direction']} with confidence "
        f"{c['trend_out']['confidence']:.2f} ({c['trend_out']['summary']}).",
        f"Indicators: {_fmt_feat(c['feat'])}.",
        f"Experience:\n{c['decision_exp']}",
        "Decide buy, sell or hold and the size."])


def _digest(c: dict[str, Any]) -> str:
    """A short hash of a symbol's role inputs (what the memory says the call was made from)."""
    payload = json.dumps({"feat": {k: round(v, 6) for k, v in c["feat"].items()},
                          "news": c["news"], "reports": describe(c["reports"])},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _record(obs: Observation, ctx: dict[str, dict[str, Any]], style: dict[str, Any],
            drawdown: float, vol: float, weights: dict[str, float], stops: dict[str, float],
            targets: dict[str, float], calls: tuple[str, ...]) -> dict[str, Any]:
    """One step's trajectory: market summary, role inputs/outputs, style, account, decision."""
    pf = obs.portfolio
    symbols = {}
    for s, c in ctx.items():
        symbols[s] = _clean({
            "close": c["close"], "features": c["feat"],
            "news": [{"title": t, "age_days": a} for t, a in c["news"]],
            "reports": describe(c["reports"]),
            "roles": {"news": c["news_out"], "report": c["report_out"],
                      "trend": c["trend_out"], "decision": c["decision_out"]},
            "experience": {"trend": c["trend_exp"], "decision": c["decision_exp"]},
            "signal": c["signal"], "weight": c.get("weight"),
            "stop_loss": stops.get(s), "take_profit": targets.get(s)})
    return {"time": str(np.asarray(obs.time).astype("datetime64[s]")), "step": int(obs.step),
            "style": _clean({k: v for k, v in style.items() if k != "vec"}),
            "account": _clean({"cash": pf.cash, "equity": pf.equity, "drawdown": drawdown,
                               "mean_vol": vol, "weights": pf.weights}),
            "symbols": symbols, "llm_calls": list(calls)}


__all__ = ["STEPS_FILE", "TradingGroup", "CACHE_FILE"]
