"""ContestTrade's two LLM teams, run through one gateway with their calls gathered concurrently.

Data team: each data agent batches the point-in-time news (newest first, ``[n]`` references)
within the context budget and writes one text factor. Data contest: each factor is rated per
symbol in {-2..2}; the ratings' rewards on realised open-to-open moves score the data agents and
the top k factors go to research. Research team: each research agent holds a belief from the
spec and makes ``samples`` reasoning paths per symbol (different sampling seeds) on the factors
plus read-only tools over the point-in-time view (price summary, latest headlines); the paths'
mean is its signal. Optional judges see the research signals anonymised and shuffled.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tradesim.agents.contest.book import (
    REALISE,
    ContestConfig,
    Scorer,
    factor_reward_rows,
    move_between,
)
from tradesim.contracts import Observation
from tradesim.llm.gateway import Gateway, LLMResult
from tradesim.llm.schema import TradeDecision

DATA_SYSTEM = ("You are a data analyst on a trading desk. From the numbered documents, pick the "
               "informative ones and write one short factor: what matters for the next trading "
               "day, citing documents as [n]. Use only the documents given.")
RATE_SYSTEM = ("You rate one stock from a text factor. Reply with one JSON object: action (buy, "
               "sell or hold), weight (0 to 1, conviction), confidence (0 to 1), rationale.")
RESEARCH_SYSTEM = ("You are a research analyst with this belief: {belief}\nJudge one stock from "
                   "the factors and tool outputs given and nothing else. Reply with one JSON "
                   "object: action (buy, sell or hold), weight (0 to 1), confidence (0 to 1), "
                   "rationale (at most two sentences).")
JUDGE_SYSTEM = ("You judge anonymous research signals. Each starts at 100 and loses points for "
                "weak evidence, missing risks, inconsistency, vagueness, overconfidence, stale "
                "data and poor reasoning. Reply with one JSON object: scores, a list of integers "
                "0..100, one per signal in the order given.")


class JudgeScores(BaseModel):
    """A judge's scores, one per anonymised signal in the order shown."""

    model_config = ConfigDict(extra="forbid")

    scores: list[int] = Field(max_length=64)


@dataclass
class TeamStep:
    """What the teams produced at one step."""

    signals: list[np.ndarray]
    ratings: list[list[float]]
    judge_scores: list[float]
    call_ids: list[str] = field(default_factory=list)
    factor_info: dict[str, Any] = field(default_factory=dict)


class Teams:
    """The data team, the data contest and the research team (with optional judges)."""

    def __init__(self, *, params: Any, gateway: Gateway) -> None:
        self.p = params
        self.gateway = gateway
        self.data_config = ContestConfig(scoring="sharpe", history=params.history,
                                         horizon=params.horizon, window=params.window)
        self._scorer = Scorer(self.data_config, entrants=len(params.data_agents))
        self._rewards: list[np.ndarray] = []  # data-contest reward row j (realised at j + 2)

    def step(self, obs: Observation, *, k: int, decide: bool, ratings_book: list[Any],
             opens: Sequence[Sequence[float]], virtual: list[np.ndarray]) -> TeamStep:
        """One tick: on decision steps, factors -> ratings -> research (+ judges); else hold."""
        p = self.p
        n_sym, n_data = len(obs.universe), len(p.data_agents)
        if not decide:
            held = [v if v is not None else np.zeros(n_sym) for v in virtual]
            held += [np.zeros(n_sym)] * (len(p.research_agents) - len(held))
            return TeamStep(signals=held, ratings=[[0.0] * n_sym for _ in range(n_data)],
                            judge_scores=[math.nan] * len(p.research_agents) if p.judges else [])
        calls: list[str] = []
        factors: list[str] = []
        chosen: list[int] = []
        ratings = [[0.0] * n_sym for _ in range(n_data)]
        if n_data:
            answers = self.gateway.gather([self._data_call(obs, a) for a in p.data_agents])
            factors = [r.content.strip() for r in answers]
            calls += [r.call_id for r in answers]
            rated = self.gateway.gather([self._rate_call(obs, a.name, f, s)
                                         for a, f in zip(p.data_agents, factors)
                                         for s in obs.universe])
            calls += [r.call_id for r in rated]
            for i in range(n_data):
                for j in range(n_sym):
                    td = rated[i * n_sym + j].decision()
                    sign = 1 if td.action == "buy" else -1 if td.action == "sell" else 0
                    ratings[i][j] = float(sign * max(1, round(2 * td.weight)) if sign else 0)
            chosen = self._top_factors(k, ratings_book, ratings, opens)
        research_calls = [(b, s, path) for b in p.research_agents for s in obs.universe
                          for path in range(p.samples)]
        picked = [f"({i + 1}) {factors[i]}" for i in chosen]
        answers = self.gateway.gather([self._research_call(obs, b, s, path, picked)
                                       for b, s, path in research_calls])
        calls += [r.call_id for r in answers]
        signals = []
        per_agent = n_sym * p.samples
        for a in range(len(p.research_agents)):
            mine = answers[a * per_agent:(a + 1) * per_agent]
            w = np.zeros(n_sym)
            for j in range(n_sym):
                paths = [_signed(r) for r in mine[j * p.samples:(j + 1) * p.samples]]
                w[j] = float(np.mean(paths)) / n_sym
            if not p.allow_short:
                w = np.maximum(w, 0.0)
            signals.append(w)
        judge_scores = self._judge(obs, k, signals, calls) if p.judges else []
        info = {"step": k, "chosen": [p.data_agents[i].name for i in chosen],
                "factors": {a.name: f[:400] for a, f in zip(p.data_agents, factors)}}
        return TeamStep(signals=signals, ratings=ratings, judge_scores=judge_scores,
                        call_ids=calls, factor_info=info)

    # --- the data contest -----------------------------------------------------------------

    def _top_factors(self, k: int, book: list[Any], now: list[list[float]],
                     opens: Sequence[Sequence[float]]) -> list[int]:
        """Top k data agents by score on ratings realised by step k (warm-up: the first k)."""
        n = len(now)
        for j in range(len(self._rewards), k - REALISE + 1):  # rows realised since last time
            row = book[j] if j < len(book) else now
            ratings = np.asarray(row if len(row) == n else [[0.0] * len(now[0])] * n,
                                 dtype=float)
            move = move_between(np.asarray(opens[j + 1], dtype=float),
                                np.asarray(opens[j + 2], dtype=float), reject=math.inf) * 100.0
            move = np.clip(move, -20.0, 20.0)
            self._rewards.append(factor_reward_rows(ratings[None], move[None],
                                                    mode=self.p.factor_reward)[0])
        scores = self._scorer.score(k, self._rewards).scores
        order = sorted(range(n), key=lambda i: (-(scores[i] if math.isfinite(scores[i])
                                                  else -math.inf), i))
        return sorted(order[: self.p.top_k])

    # --- requests -------------------------------------------------------------------------

    def _data_call(self, obs: Observation, agent: Any) -> dict[str, Any]:
        budget = self.p.context_tokens * 4  # characters (about four per token)
        news = obs.news(list(obs.universe), lookback=agent.news_items)
        docs: list[str] = []
        used = 0
        for i, idx in enumerate(range(len(news.title) - 1, -1, -1)):  # newest first
            body = str(news.body[idx])[:600]
            line = (f"[{i + 1}] {np.datetime64(news.available_at[idx], 'D')} "
                    f"{news.symbol[idx]}: {news.title[idx]} {body}").strip()
            if used + len(line) > budget:
                break
            docs.append(line)
            used += len(line)
        user = "\n".join([f"Focus: {agent.focus}.", _prices(obs, self.p.lookback),
                          "Documents:" if docs else "No documents.", *docs,
                          "Write the factor."])
        return {"messages": [{"role": "system", "content": DATA_SYSTEM},
                             {"role": "user", "content": user}],
                "decision_time": obs.time, "tag": f"contest:data:data:{agent.name}"}

    def _rate_call(self, obs: Observation, name: str, factor: str, symbol: str) -> dict[str, Any]:
        user = "\n".join([f"Stock: {symbol}.", _prices(obs, self.p.lookback, [symbol]),
                          f"Factor: {factor[:2000]}", "Rate this stock for the next day."])
        return {"messages": [{"role": "system", "content": RATE_SYSTEM},
                             {"role": "user", "content": user}],
                "schema": TradeDecision, "decision_time": obs.time,
                "tag": f"contest:data:data:{name}"}

    def _research_call(self, obs: Observation, belief: Any, symbol: str, path: int,
                       factors: list[str]) -> dict[str, Any]:
        tools = [f"tool price_summary({symbol}): " + _prices(obs, self.p.lookback, [symbol]),
                 f"tool latest_news({symbol}): " + "; ".join(
                     str(t) for t in obs.news([symbol], lookback=3).title) or "none"]
        user = "\n".join([f"Stock: {symbol}. Decision date: "
                          f"{str(obs.time)[:10]}, after the close.", *tools,
                          "Factors:" if factors else "No factors.", *factors,
                          f"Reasoning path {path + 1}. Decide buy, sell or hold."])
        return {"messages": [{"role": "system",
                              "content": RESEARCH_SYSTEM.format(belief=belief.belief)},
                             {"role": "user", "content": user}],
                "schema": TradeDecision, "decision_time": obs.time, "seed": path,
                "tag": f"contest:research:research:{belief.name}"}

    def _judge(self, obs: Observation, k: int, signals: list[np.ndarray],
               calls: list[str]) -> list[float]:
        """Each judge scores the research signals anonymised (letters) in a shuffled order."""
        n = len(signals)
        order = list(range(n))
        random.Random(k).shuffle(order)  # seeded by the step: replays identically
        lines = [f"Signal {chr(65 + pos)}: " + ", ".join(
            f"{s} {w:+.3f}" for s, w in zip(obs.universe, signals[i]))
            for pos, i in enumerate(order)]
        user = "\n".join([_prices(obs, self.p.lookback), *lines, "Score each signal."])
        answers = self.gateway.gather([
            {"messages": [{"role": "system", "content": JUDGE_SYSTEM},
                          {"role": "user", "content": user}],
             "schema": JudgeScores, "decision_time": obs.time, "seed": j,
             "tag": f"contest:judges:judge{j}"} for j in range(self.p.judges)])
        calls += [r.call_id for r in answers]
        table = np.full((self.p.judges, n), np.nan)
        for j, r in enumerate(answers):
            if isinstance(r.parsed, JudgeScores) and len(r.parsed.scores) >= n:
                for pos, i in enumerate(order):
                    table[j, i] = float(min(100, max(0, r.parsed.scores[pos])))
        with np.errstate(all="ignore"):
            mean = [float(np.nanmean(table[:, i])) if np.isfinite(table[:, i]).any()
                    else math.nan for i in range(n)]
        return mean


def _signed(result: LLMResult) -> float:
    td = result.decision()
    return td.weight if td.action == "buy" else -td.weight if td.action == "sell" else 0.0


def _prices(obs: Observation, lookback: int, symbols: list[str] | None = None) -> str:
    """Read-only price tool: returns in % per symbol, oldest first (point-in-time)."""
    lines = []
    for s in symbols or list(obs.universe):
        close = obs.bars(s, lookback=lookback + 1).close
        close = close[np.isfinite(close) & (close > 0)]
        rets = np.diff(close) / close[:-1] * 100.0 if close.shape[0] >= 2 else np.zeros(1)
        lines.append(f"{s}: last {rets.shape[0]} returns in %, oldest first: "
                     + " ".join(f"{r:+.2f}" for r in rets))
    return "\n".join(lines)
