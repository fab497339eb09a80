"""The contest as an Agent: entrants (any agents) signal, realised rewards score them, the top
performers' signals are combined by their scores.

Every step each entrant decides on the same point-in-time Observation (with its own virtual
book), its target weights are its signal; the contest records the visible opens, scores every
entrant from rewards realised by now (:mod:`tradesim.agents.contest.book`) and trades
``sum_i weight_i x signal_i``. With ``research_agents`` (and ``data_agents``) the ContestTrade
teams join as entrants (:mod:`tradesim.agents.contest.teams`); their model calls go through one
gateway, concurrently.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tradesim.agents._llm_params import LLMAgentParams
from tradesim.agents.contest.book import (
    REALISE,
    ContestConfig,
    Scorer,
    StepScores,
    factor_rewards,
    move_between,
    reference_rewards,
    signal_rewards,
)
from tradesim.agents.contest.predictor import PredictorConfig
from tradesim.contracts import (
    Agent,
    BaseAgent,
    Decision,
    Feedback,
    Observation,
    Portfolio,
    RunContext,
)
from tradesim.errors import ConfigError
from tradesim.llm.gateway import Gateway, SpendMeter

CONTEST_FILE = "contest.json"


class EntrantSpec(BaseModel):
    """One entrant: an agent name (built-in, spec, ``module:Class``) with parameter overrides."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent: str
    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    isolate: bool = False  # run it in its own process (tradesim.agents.isolation)


class DataAgentSpec(BaseModel):
    """A data agent: what it reads (a focus) and how many news items it batches."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    focus: str = "company news that could move the price over the next trading day"
    news_items: int = Field(30, ge=1)


class BeliefSpec(BaseModel):
    """A research agent: its belief (investment style), as in ContestTrade's belief list."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    belief: str


class ContestAgent(BaseAgent):
    """A lag-safe internal contest over entrant agents, optionally with the LLM teams."""

    name = "contest"

    class Params(LLMAgentParams):
        entrants: list[EntrantSpec] = Field(default_factory=lambda: [
            EntrantSpec(agent=a) for a in ("sma_cross", "macd", "momentum", "buy_and_hold")])
        allocation: Literal["contest", "equal"] = Field(
            "contest", description="contest: weight by score; equal: every signal 1/E (ablation)")
        scoring: Literal["sharpe", "centred"] = Field(
            "sharpe", description="sharpe: mu/max(sigma,0.01) (ContestTrade); centred: the rewards "
            "module's bounded score against holding the universe")
        reward: Literal["signed", "positive_only"] = Field(
            "signed", description="signal reward: full direction, or long weights only")
        predictor: Literal["lightgbm", "mean"] = "lightgbm"
        history: int = Field(5, ge=1, description="trading days of reward features")
        horizon: int = Field(5, ge=2, description="rewards per predictor target")
        window: int = Field(180, ge=10, description="trading days of training samples")
        min_samples: int = Field(10, ge=1)
        refit_every: int = Field(5, ge=1)
        sigma_floor: float = Field(0.01, gt=0)
        reject: float = Field(0.40, gt=0, description="|open-to-open move| above this is suspect")
        warmup: Literal["equal", "cash"] = "equal"
        allow_short: bool = False
        max_gross: float = Field(1.0, gt=0)
        rebalance_threshold: float = Field(0.02, ge=0)
        # --- the ContestTrade teams (empty lists: a rules-only contest) ---
        data_agents: list[DataAgentSpec] = Field(default_factory=list)
        research_agents: list[BeliefSpec] = Field(default_factory=list)
        samples: int = Field(2, ge=1, description="reasoning paths per research decision")
        top_k: int = Field(3, ge=1, description="factors passed from the data contest")
        factor_reward: Literal["positive_only", "signed"] = "positive_only"
        judges: int = Field(0, ge=0, description="LLM judges (0: none)")
        every: int = Field(1, ge=1, description="LLM teams decide every k-th bar, hold between")
        lookback: int = Field(10, ge=2, description="bars of returns in team prompts")
        context_tokens: int = Field(28_000, ge=256, description="data agent input budget")
        factor_tokens: int = Field(4_000, ge=16, description="data agent output budget")
        entrant_feedback: bool = Field(
            True, description="deliver each entrant the Feedback of its own virtual book once "
            "realised (decision j at step j+2), so entrants that learn online can learn")

        @field_validator("entrants", mode="before")
        @classmethod
        def _entrants(cls, value: Any) -> Any:
            return [{"agent": v} if isinstance(v, str) else v for v in (value or [])]

    params: Params  # narrowed from AgentParams
    _teams: Any
    _virtual: list[np.ndarray]
    _opens: list[list[float]]
    _signals: list[list[list[float]]]
    _judges: list[list[float]]
    _ratings: list[Any]
    _history: list[dict[str, Any]]
    _factor_log: list[dict[str, Any]]
    _emitted: np.ndarray | None
    _universe: list[str]
    _entrants: list[Agent]
    _rewards: list[np.ndarray]
    _reference: list[float]
    _spend: SpendMeter

    def __init__(self, **params: Any) -> None:
        given = params.get("gateway")
        self._gateway = given if isinstance(given, Gateway) else None
        self._owns_gateway = self._gateway is None
        if self._gateway is not None:
            params = {**params, "gateway": self._gateway.config}
        p = self._configure(params)
        if not p.entrants and not p.research_agents:
            raise ConfigError("contest: no entrants; list agents in [agent.params] entrants "
                              "(e.g. [\"sma_cross\", \"macd\"]) or add research_agents")
        self.config = ContestConfig(
            predictor=PredictorConfig(kind=p.predictor, min_samples=p.min_samples,
                                      refit_every=p.refit_every),
            scoring=p.scoring, history=p.history, horizon=p.horizon, window=p.window,
            sigma_floor=p.sigma_floor, warmup=p.warmup)
        self.entrant_names = _unique([e.name or e.agent for e in p.entrants]
                                     + [f"research:{b.name}" for b in p.research_agents])
        self.lookback = max([0, *(int(getattr(a, "lookback", 0) or 0)
                                  for a in self._build_entrants())])
        self._closed: Gateway | None = None
        self._reset()

    # --- Agent ----------------------------------------------------------------------------

    def start(self, context: RunContext) -> None:
        """A new run: fresh entrants (each started with this context) and empty books."""
        super().start(context)
        self._reset()
        self._entrants = self._build_entrants()
        for e in self._entrants:
            e.start(context)
        if self.params.research_agents:
            from tradesim.agents.contest.teams import Teams

            self._teams = Teams(params=self.params, gateway=self.gateway)

    def decide(self, obs: Observation) -> Decision:
        p = self.params
        k = self._step
        self._step += 1
        universe = obs.universe
        if not self._universe:
            self._universe = list(universe)
        self._opens.append([_open_at(obs, s) for s in universe])
        self._realise(k)
        if p.entrant_feedback:
            self._feed_entrants(k, obs)
        calls: list[str] = []
        signals = [self._entrant_signal(i, e, obs) for i, e in enumerate(self._entrants)]
        extra_row: list[float] = []
        if self._teams is not None:
            decide_now = k % p.every == 0
            team = self._teams.step(obs, k=k, decide=decide_now, ratings_book=self._ratings,
                                    opens=self._opens,
                                    virtual=self._virtual[len(self._entrants):])
            calls.extend(team.call_ids)
            self._ratings.append(team.ratings)
            self._factor_log.append(team.factor_info)
            base = len(self._entrants)
            while len(self._virtual) < base + len(team.signals):
                self._virtual.append(np.zeros(len(universe)))
            for j, w in enumerate(team.signals):
                self._virtual[base + j] = w
                signals.append(w)
            if team.judge_scores:  # judges score the research entrants only
                extra_row = [math.nan] * len(self._entrants) + list(team.judge_scores)
        self._signals.append([list(map(float, s)) for s in signals])
        self._judges.append(extra_row)
        scores = self._score(k)
        weights = (np.full(len(signals), 1.0 / len(signals)) if p.allocation == "equal"
                   else scores.weights)
        self._history.append({"step": k, "time": str(obs.time)[:19], "how": (
            "equal" if p.allocation == "equal" else scores.how),
            "scores": _jsonable(scores.scores), "mu": _jsonable(scores.mu),
            "sigma": _jsonable(scores.sigma), "weights": _jsonable(weights)})
        combined = np.asarray(weights) @ np.asarray(signals, dtype=float).reshape(
            len(signals), len(universe))
        if not p.allow_short:
            combined = np.maximum(combined, 0.0)
        gross = float(np.abs(combined).sum())
        if gross > p.max_gross:
            combined *= p.max_gross / gross
        expense = self._expense()
        last = self._emitted
        if last is not None and float(np.max(np.abs(combined - last))) <= p.rebalance_threshold:
            return (Decision(llm_calls=tuple(calls), rationale="contest: allocation unchanged",
                             expense=expense)
                    if calls or expense else Decision.hold("contest: allocation unchanged"))
        self._emitted = combined
        label = ", ".join(f"{n} {w:.2f}" for n, w in zip(self.entrant_names, weights) if w > 0)
        return Decision(weights={s: float(w) for s, w in zip(universe, combined)},
                        rebalance_missing=True, llm_calls=tuple(calls), expense=expense,
                        rationale=f"contest ({self._history[-1]['how']}): {label or 'cash'}")

    def update(self, feedback: Feedback) -> None:
        """The contest scores entrants from prices, not from the account's feedback."""

    def stop(self, *, error: BaseException | None = None) -> None:
        for e in self._entrants:
            e.stop(error=error)
        if self._gateway is not None and self._owns_gateway:
            self._gateway.close()
            self._closed, self._gateway = self._gateway, None

    def state(self) -> dict[str, Any]:
        return {"step": self._step, "opens": _jsonable(self._opens),
                "signals": _jsonable(self._signals), "virtual": _jsonable(self._virtual),
                "judges": _jsonable(self._judges), "ratings": _jsonable(self._ratings),
                "emitted": None if self._emitted is None else _jsonable(self._emitted),
                "history": self._history, "factors": self._factor_log,
                "universe": self._universe, "charged": self._charged,
                "entrants": [e.state() for e in self._entrants]}

    def load_state(self, state: dict[str, Any]) -> None:
        self._step = int(state["step"])
        self._opens = _floats(state["opens"])
        self._signals = _floats(state["signals"])
        self._virtual = [np.asarray(_floats(v), dtype=float) for v in state["virtual"]]
        self._judges = _floats(state["judges"])
        self._ratings = _floats(state["ratings"])
        em = state.get("emitted")
        self._emitted = None if em is None else np.asarray(_floats(em), dtype=float)
        self._history = list(state["history"])
        self._factor_log = list(state.get("factors", []))
        self._universe = list(state.get("universe", []))
        self._charged = float(state.get("charged", 0.0))
        self._spend.restart(self._gateway)
        self._rewards, self._reference = [], []
        self._scorer = Scorer(self.config, entrants=len(self.entrant_names))
        for k in range(self._step):  # the realised rows again; the scorer catches up from them
            self._realise(k)
        for e, s in zip(self._entrants, state["entrants"]):
            e.load_state(s)

    # --- RunArtifacts -----------------------------------------------------------------------

    def run_meta(self, *, start: np.datetime64, end: np.datetime64) -> dict[str, Any]:
        """Allocation summary plus every entrant's and team's calls, tokens and dollars."""
        costs = self.costs()
        meta: dict[str, Any] = {"contest": {
            "entrants": self.entrant_names, "allocation": self.params.allocation,
            "scoring": self.params.scoring, "predictor": self.params.predictor,
            "reward": self.params.reward, "steps": self._step, "realise_steps": REALISE,
            "mean_weight": self._mean_weights(), "costs": costs,
            "llm_cost_charged_usd": self._charged}}
        for e in self._entrants:  # an LLM entrant's own record (llm_analyst) comes along
            if hasattr(e, "run_meta"):
                sub = e.run_meta(start=start, end=end)
                meta["contest"].setdefault("entrant_meta", {})[e.name] = sub.get("llm", sub)
        return meta

    def save_artifacts(self, folder: Path) -> list[Path]:
        """contest.json (scores and weights per step), contest.html, and the gateway's record."""
        from tradesim.report.contest import write_contest_page

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        record = self.record()
        out = folder / CONTEST_FILE
        out.write_text(json.dumps(record, indent=1, sort_keys=True, default=str),
                       encoding="utf-8")
        paths = [out, write_contest_page(folder / "contest.html", record=record)]
        gw = self._gateway or self._closed
        if gw is not None:
            paths.extend(gw.save(folder))
        return paths

    def record(self) -> dict[str, Any]:
        """What the report shows: entrants, per-step scores and weights, costs."""
        return {"entrants": self.entrant_names, "history": self._history,
                "params": self.params.model_dump(mode="json", exclude={"gateway"}),
                "costs": self.costs(), "factors": self._factor_log}

    def costs(self) -> dict[str, Any]:
        """Calls, tokens and dollars per entrant and per team, from the gateway's journal."""
        gw = self._gateway or self._closed
        records = gw.journal.records if gw is not None else []
        per: dict[str, dict[str, float]] = {}
        for r in records:
            tag = (r.tag or "untagged").split(":")
            team = tag[1] if len(tag) > 1 else tag[0]
            who = ":".join(tag[2:]) if len(tag) > 2 else team
            for key in (f"team:{team}", who, "total"):
                row = per.setdefault(key, {"calls": 0, "model_calls": 0, "prompt_tokens": 0,
                                           "completion_tokens": 0, "cost_usd": 0.0})
                row["calls"] += 1
                row["model_calls"] += 0 if r.cache_hit else 1
                row["prompt_tokens"] += r.prompt_tokens
                row["completion_tokens"] += r.completion_tokens
                row["cost_usd"] = round(row["cost_usd"] + r.cost_usd, 10)
        per.setdefault("total", {"calls": 0, "model_calls": 0, "prompt_tokens": 0,
                                 "completion_tokens": 0, "cost_usd": 0.0})
        for name in self.entrant_names:
            per.setdefault(name, {"calls": 0, "model_calls": 0, "prompt_tokens": 0,
                                  "completion_tokens": 0, "cost_usd": 0.0})
        return per

    @property
    def model_calls(self) -> int:
        """Requests that reached a model this run (cache and replay hits do not count)."""
        gw = self._gateway or self._closed
        return int(gw.model_calls) if gw is not None else 0

    def calls(self) -> list[Any]:
        """The gateway journal's records of this run (messages, decision time, tag, usage)."""
        gw = self._gateway or self._closed
        return list(gw.journal.records) if gw is not None else []

    @property
    def gateway(self) -> Gateway:
        """The gateway, built on first use (a rules-only contest never builds one)."""
        if self._gateway is None:
            self._gateway = Gateway(config=self.params.gateway)
        return self._gateway

    # --- internals --------------------------------------------------------------------------

    def _reset(self) -> None:
        self._step = 0
        self._opens = []
        self._signals = []
        self._judges = []
        self._ratings = []
        self._history = []
        self._factor_log = []
        self._emitted = None
        self._universe = []
        self._entrants = getattr(self, "_entrants", [])
        self._virtual = []
        self._teams = None
        self._rewards = []  # reward row j, realised at step j + REALISE
        self._reference = []  # holding the universe: mean known move of row j
        self._scorer = Scorer(self.config, entrants=len(self.entrant_names))
        self._charged = 0.0  # LLM dollars debited from the account in this run
        self._spend = SpendMeter()
        self._spend.restart(self._gateway)

    def _build_entrants(self) -> list[Agent]:
        from tradesim.agents.registry import load_agent

        out: list[Agent] = []
        for spec, name in zip(self.params.entrants, self.entrant_names):
            if spec.agent in ("contest",) or spec.agent.endswith("contest.toml"):
                raise ConfigError("contest: an entrant cannot be the contest itself; list other "
                                  "agents as entrants")
            agent = load_agent(spec.agent, **spec.params)
            if spec.isolate:  # the isolation room's public wrapper: own process, only the obs
                from tradesim.agents.isolation import isolate_agent

                agent = isolate_agent(agent)
            agent.name = name
            out.append(agent)
        return out

    def _entrant_signal(self, i: int, agent: Agent, obs: Observation) -> np.ndarray:
        """Ask entrant ``i`` on its own virtual book; its target weights are its signal."""
        n = len(obs.universe)
        while len(self._virtual) <= i:
            self._virtual.append(np.zeros(n))
        w = self._virtual[i]
        prices = dict(obs.portfolio.prices)
        eq = obs.portfolio.equity
        positions = {s: float(w[j] * eq / prices[s]) for j, s in enumerate(obs.universe)
                     if w[j] and prices.get(s, 0) and math.isfinite(prices[s])}
        book = Portfolio(cash=eq * (1 - float(w.sum())), positions=positions, prices=prices,
                         equity=eq)
        mine = Observation(time=obs.time, step=obs.step, universe=obs.universe,
                           market=obs.market, portfolio=book, interval=obs.interval)
        d = agent.decide(mine)
        new = np.zeros(n) if d.rebalance_missing else w.copy()
        for j, s in enumerate(obs.universe):
            v = d.weights.get(s)
            if v is not None and math.isfinite(float(v)):
                new[j] = float(v)
        self._virtual[i] = new
        return new

    @property
    def entrant_agents(self) -> list[Agent]:
        """The entrants of the current run, in the order of ``entrant_names``."""
        return list(self._entrants)

    def _feed_entrants(self, k: int, obs: Observation) -> None:
        """Each entrant's Feedback for its signal of step ``k - REALISE``, realised now: the
        open-to-open return of its virtual book (no fills, no costs: a book of weights)."""
        j = k - REALISE
        if j < 0 or j >= len(self._rewards):
            return
        decided = np.datetime64(self._history[j]["time"], "ns")
        for i, entrant in enumerate(self._entrants):
            r = float(self._rewards[j][i])
            if not math.isfinite(r):
                continue  # a suspect or unknown move: no outcome to report
            entrant.update(Feedback(time=obs.time, decision_time=decided, fills=(),
                                    equity=float(obs.portfolio.equity), period_return=r,
                                    costs=0.0, reward=math.log1p(r) if r > -1 else -math.inf))

    def _realise(self, k: int) -> None:
        """At step ``k`` the move of decision ``k - REALISE`` is visible: its reward row (O(1))."""
        j = k - REALISE
        if j < 0 or j < len(self._rewards):
            return
        move = move_between(np.asarray(self._opens[k - 1], dtype=float),
                            np.asarray(self._opens[k], dtype=float), reject=self.params.reject)
        signals = np.asarray(self._signals[j], dtype=float)
        self._rewards.append(signal_rewards(signals[None], move[None],
                                            mode=self.params.reward)[0])
        self._reference.append(float(reference_rewards(move[None])[0]))

    def _score(self, k: int) -> StepScores:
        """Entrants' scores at step ``k`` from rewards realised by now (lag-safe by construction:
        reward rows exist only up to ``k - REALISE``, built from the opens seen so far)."""
        extra = self._judges if self._judges and self._judges[-1] else None
        return self._scorer.score(k, self._rewards, extra=extra, reference=self._reference)

    def _expense(self) -> float:
        """The LLM dollars spent since the last decision when they are charged (else 0)."""
        if not self.params.charge_llm_cost:
            return 0.0
        usd = self._spend.read(self._gateway)
        self._charged += usd
        return usd

    def _mean_weights(self) -> dict[str, float]:
        if not self._history:
            return {}
        w = np.asarray([h["weights"] for h in self._history], dtype=float)
        return {n: float(x) for n, x in zip(self.entrant_names, np.nanmean(w, axis=0))}


def factor_scores(ratings: np.ndarray, opens: np.ndarray, *, k: int, config: ContestConfig,
                  mode: Literal["positive_only", "signed"]) -> StepScores:
    """The data contest at step ``k``: factor rewards realised by then, scored like entrants."""
    rewards = factor_rewards(ratings, opens, mode=mode)
    return Scorer(config).score(k, rewards)


def _open_at(obs: Observation, symbol: str) -> float:
    """The open of ``symbol``'s bar at ``obs.time`` (NaN when it has no bar then)."""
    bars = obs.bars(symbol, lookback=1)
    if not len(bars.time) or bars.time[-1] != obs.time:
        return math.nan
    return float(bars.open[-1])


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


def _jsonable(x: Any) -> Any:
    """Arrays and lists with NaN as None (JSON has no NaN in strict readers)."""
    arr = np.asarray(x, dtype=float) if not isinstance(x, list) or x else np.asarray([])
    return np.where(np.isfinite(arr), arr, np.nan).tolist() if arr.size else []


def _floats(x: Any) -> Any:
    return np.asarray(x, dtype=float).tolist() if len(x) else []
