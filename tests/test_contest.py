"""The contest: lag-safe scoring, allocation, a rules-only run, QTNet plus rules, report, replay."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from golden_runs import CHECKPOINT

from tradesim.agents.contest import ContestAgent, ContestConfig, allocate, contest_allocations
from tradesim.agents.contest.book import (
    REALISE,
    Scorer,
    centred_scores,
    factor_rewards,
    feature_matrix,
    known_at,
    open_moves,
    reference_rewards,
    signal_rewards,
)
from tradesim.agents.contest.predictor import MuSigmaPredictor, PredictorConfig
from tradesim.agents.registry import load_agent
from tradesim.data.load import load_market
from tradesim.data.view import MarketData
from tradesim.engine.backtest import BacktestConfig, simulate
from tradesim.evaluate.backtest import run_backtest
from tradesim.llm.testing import FakeOpenAIServer, Reply

RULES = {"data_agents": [], "research_agents": []}
SYMBOLS = ("ALPHA", "BRAVO")


@pytest.fixture(scope="module")
def market() -> MarketData:
    return load_market(symbols=list(SYMBOLS), source="sample", end="2018-12-31")


def _config(start: str, end: str, **kw: Any) -> BacktestConfig:
    return BacktestConfig.build(symbols=SYMBOLS, start=start, end=end, **kw)


def test_allocation_is_positive_scores_over_their_sum_and_cash_when_none() -> None:
    np.testing.assert_allclose(allocate(np.array([1.0, -1.0, 3.0, np.nan])), [0.25, 0, 0.75, 0])
    assert allocate(np.array([-1.0, 0.0, np.nan])).tolist() == [0.0, 0.0, 0.0]


def test_rewards_use_next_open_to_open_and_reject_suspect_moves() -> None:
    opens = np.array([[10.0, 10.0], [10.0, 10.0], [11.0, 20.0], [11.0, 20.0]])
    moves = open_moves(opens)
    assert moves[0, 0] == pytest.approx(0.1) and np.isnan(moves[0, 1])  # +100% rejected
    assert np.isnan(moves[2:]).all()  # not realised within the data
    signals = np.zeros((4, 2, 2))
    signals[0] = [[1.0, 0.0], [-1.0, 0.0]]
    r = signal_rewards(signals, moves)
    assert r[0].tolist() == pytest.approx([0.1, -0.1])
    assert signal_rewards(signals, moves, mode="positive_only")[0].tolist() == pytest.approx(
        [0.1, 0.0])


def test_factor_reward_positive_only_ignores_sells_and_signed_charges_them() -> None:
    opens = np.array([[100.0, 100.0], [100.0, 100.0], [90.0, 150.0]])
    ratings = np.zeros((3, 1, 2))
    ratings[0, 0] = [2.0, -1.0]  # buy the faller, sell the riser: wrong twice
    pos = factor_rewards(ratings, opens, mode="positive_only")[0, 0]
    signed = factor_rewards(ratings, opens, mode="signed")[0, 0]
    assert pos == pytest.approx(2 * -10.0 / 2)  # the wrong sell costs nothing
    assert signed == pytest.approx((2 * -10.0 + -1 * 20.0) / 2)  # +50% clipped to 20


def test_features_at_a_step_use_only_rewards_realised_by_then() -> None:
    rewards = np.arange(20, dtype=float)[:, None]
    feats = feature_matrix(known_at(rewards, 10), history=5)
    assert feats[10, 0, 0] == 8.0  # mean1 at step 10 = reward of decision 8 (realised at 10)
    assert feats[10, 0, 3] == pytest.approx(np.mean([4, 5, 6, 7, 8]))
    assert np.isnan(feats[1, 0]).all()  # nothing realised before step 2


def _full_recompute(rewards: np.ndarray, *, config: ContestConfig, realise: int = REALISE,
                    extra: np.ndarray | None = None,
                    reference: np.ndarray | None = None) -> np.ndarray:
    """The former scorer, kept as the oracle: at every step features, samples and the centred
    window are recomputed over the whole history from rewards masked to what is known then."""
    cfg, pc = config, config.predictor
    out, model = [], None
    for k in range(rewards.shape[0]):
        R = known_at(rewards, k, realise=realise)
        feats = feature_matrix(R, realise=realise, history=cfg.history)
        if extra is not None:
            feats = np.concatenate([feats, extra[: k + 1]], axis=2)
        now = feats[k]
        if not np.isfinite(now[:, :5]).all(axis=1).any():
            out.append(np.full(R.shape[1], 1.0 / R.shape[1]))
            continue
        if cfg.scoring == "centred":
            lo = max(0, k - realise - cfg.centred_window + 1)
            hi = max(lo, k - realise + 1)
            ref = reference[: k + 1][lo:hi] if reference is not None else np.zeros(hi - lo)
            out.append(allocate(centred_scores(R[lo:hi], ref, cfg=cfg)))
            continue
        at = k - k % pc.refit_every
        if pc.kind == "lightgbm" and (model is None or model[0] != at):
            Ra = known_at(R, at, realise=realise)
            X, y_mu, y_sd = [], [], []
            for m in range(max(0, at - cfg.window), at - realise - cfg.horizon + 2):
                for e in range(R.shape[1]):
                    t = Ra[m: m + cfg.horizon, e]
                    t = t[np.isfinite(t)]
                    if t.shape[0] >= 2 and np.isfinite(feats[m, e, :5]).all():
                        X.append(feats[m, e])
                        y_mu.append(float(t.mean()))
                        y_sd.append(float(t.std()))
            Xa = np.asarray(X, dtype=float).reshape(len(X), feats.shape[2])
            model = (at, MuSigmaPredictor.fit(Xa, np.asarray(y_mu), np.asarray(y_sd), config=pc))
        if pc.kind == "lightgbm" and model is not None and model[1] is not None:
            mu, sigma = model[1].predict(now)
        else:
            mu, sigma = now[:, 3], now[:, 4]
        scores = mu / np.maximum(sigma, cfg.sigma_floor)
        scores[~np.isfinite(now[:, :5]).all(axis=1)] = np.nan
        out.append(allocate(scores))
    return np.stack(out)


@pytest.mark.parametrize("scoring,kind", [("sharpe", "lightgbm"), ("sharpe", "mean"),
                                          ("centred", "mean")])
def test_incremental_scorer_equals_the_full_recompute(scoring: str, kind: str) -> None:
    rng = np.random.default_rng(3)
    rewards = rng.normal(0.0005, 0.01, size=(90, 4))
    rewards[rng.random(rewards.shape) < 0.08] = np.nan  # missing days take the window median
    rewards[30:33, 2] = np.nan  # a whole empty window for one entrant
    reference = rng.normal(0.0003, 0.008, size=90)
    extra = rng.uniform(60, 100, size=(90, 4, 1))
    config = ContestConfig(predictor=PredictorConfig(kind=kind, refit_every=4), scoring=scoring,
                           window=40)
    for ex in (None, extra):
        scorer = Scorer(config)
        new = np.stack([scorer.score(k, rewards, extra=ex, reference=reference).weights
                        for k in range(90)])
        old = _full_recompute(rewards, config=config, extra=ex, reference=reference)
        np.testing.assert_array_equal(new, old)
        assert (new.max(axis=1) < 1).any()  # past the warm-up: not all equal weights
        # a scorer asked only every 7th step catches up and gives the same weights
        sparse = Scorer(config)
        for k in range(0, 90, 7):
            np.testing.assert_array_equal(
                sparse.score(k, rewards, extra=ex, reference=reference).weights, new[k])


def test_lag_safety_a_reward_used_one_bar_early_changes_the_weights(market) -> None:
    agent = ContestAgent(**RULES, predictor="lightgbm", refit_every=3)
    simulate(config=_config("2018-01-01", "2018-06-30"), agent=agent, data=market)
    state = agent.state()
    signals = np.asarray(state["signals"], dtype=float)
    real = np.asarray([h["weights"] for h in state["history"]], dtype=float)
    # the full opens of the run, later bars included: the offline twin sees the whole future
    # and only `realise` decides which rewards it may use at each step
    clock = [np.datetime64(h["time"]) for h in state["history"]]
    opens = np.stack([[market.full(s).open[np.searchsorted(market.full(s).time, t)]
                       for s in SYMBOLS] for t in clock])
    assert np.allclose(opens, np.asarray(state["opens"]), equal_nan=True)
    config = ContestConfig(predictor=PredictorConfig(refit_every=3))
    honest = contest_allocations(signals, opens, config=config, realise=2)
    leaky = contest_allocations(signals, opens, config=config, realise=1)
    np.testing.assert_allclose(real, honest, atol=1e-12)
    moves = open_moves(opens)
    oracle = _full_recompute(signal_rewards(signals, moves), config=config,
                             reference=reference_rewards(moves))
    np.testing.assert_array_equal(real, oracle)  # the incremental agent = the full recompute
    assert not np.allclose(honest, leaky)  # so the agent's weights are those of the lag-safe path
    assert {h["how"] for h in state["history"]} >= {"warmup", "lightgbm"}


def test_rules_only_contest_runs_in_seconds(market) -> None:
    began = time.perf_counter()
    result = simulate(config=_config("2018-01-01", "2018-12-31"),
                      agent=load_agent("contest", **RULES), data=market)
    elapsed = time.perf_counter() - began
    assert elapsed < 15, f"rules-only contest took {elapsed:.1f}s"
    assert np.isfinite(result.final_equity) and len(result.equity) > 240
    assert result.meta["contest"]["entrants"] == ["sma_cross", "macd", "momentum",
                                                  "buy_and_hold"]


def test_equal_allocation_weights_every_signal_alike(market) -> None:
    agent = ContestAgent(**RULES, allocation="equal", predictor="mean")
    simulate(config=_config("2018-01-01", "2018-03-31"), agent=agent, data=market)
    assert all(h["weights"] == [0.25] * 4 for h in agent.state()["history"])


def test_contest_over_qtnet_and_rule_baselines_writes_its_report(market, tmp_path: Path) -> None:
    from tradesim.errors import ConfigError

    try:
        load_agent("qtnet", checkpoint=str(CHECKPOINT))
    except ConfigError as exc:  # the golden checkpoint predates a cost-model change elsewhere
        pytest.skip(f"tests/golden/qtnet_tiny.pt does not load in this tree: {exc}")
    entrants = [{"agent": "qtnet", "params": {"checkpoint": str(CHECKPOINT)}}, "sma_cross",
                "buy_and_hold"]
    config = BacktestConfig.build(agent="contest", symbols=SYMBOLS, start="2018-03-01",
                                  end="2018-08-31",
                                  agent_params={**RULES, "entrants": entrants})
    result = run_backtest(config=config, data=market, save_to=tmp_path)
    record = json.loads((tmp_path / "contest.json").read_text())
    assert record["entrants"] == ["qtnet", "sma_cross", "buy_and_hold"]
    w = np.asarray([h["weights"] for h in record["history"]], dtype=float)
    assert w.shape[1] == 3 and (w.sum(axis=1) < 1 + 1e-9).all() and (w >= 0).all()
    page = (tmp_path / "contest.html").read_text()
    for anchor in ("contest-setup", "contest-weights", "contest-scores", "contest-costs"):
        assert f"id={anchor}" in page
    assert "qtnet" in page and result.meta["contest"]["costs"]["total"]["calls"] == 0


def test_report_page_shows_weights_scores_and_costs_in_the_run_folder(market,
                                                                     tmp_path: Path) -> None:
    config = BacktestConfig.build(agent="contest", symbols=SYMBOLS, start="2018-03-01",
                                  end="2018-06-30", agent_params=RULES)
    run_backtest(config=config, data=market, save_to=tmp_path)
    page = (tmp_path / "contest.html").read_text()
    for anchor in ("contest-setup", "contest-weights", "contest-scores", "contest-entrants",
                   "contest-costs"):
        assert f"id={anchor}" in page
    assert page.count('class="chart-spec"') == 2 and "buy_and_hold" in page


def _scripted(body: dict[str, Any]) -> Reply:
    """Scripted model: free-text factors, buy/sell by the last return, judges score 80."""
    import re

    prompt = body["messages"][-1]["content"]
    system = body["messages"][0]["content"]
    if "judge" in system:
        n = prompt.count("Signal ")
        return Reply(content=json.dumps({"scores": [80] * n}), prompt_tokens=90)
    if "data analyst" in system:
        return Reply(content="Momentum names lead [1]; watch earnings [2].", prompt_tokens=400,
                     completion_tokens=12)
    last = float(re.search(r"oldest first: (.*)", prompt)[1].split()[-1])
    answer = {"action": "buy" if last > 0 else "sell", "weight": 0.6, "confidence": 0.5,
              "rationale": f"last {last:+.2f}%"}
    return Reply(content=json.dumps(answer), prompt_tokens=120, completion_tokens=25)


def test_llm_teams_replay_with_zero_calls_fake_openai_server(market, tmp_path: Path,
                                                             monkeypatch) -> None:
    monkeypatch.setenv("TRADESIM_CONTEST_KEY", "sk-test")
    with FakeOpenAIServer(default=_scripted) as server:
        gateway = {"provider": "openai", "base_url": server.base_url, "mode": "cached",
                   "api_key_env": "TRADESIM_CONTEST_KEY", "cache_path": str(tmp_path / "c.db"),
                   "prices": {"gpt-4o-mini": (0.15, 0.6)}, "concurrency": 8}
        params = {"every": 5, "judges": 2, "gateway": gateway, "entrants": ["sma_cross"],
                  "charge_llm_cost": True}
        config = _config("2018-05-01", "2018-06-29")
        first = simulate(config=config, agent=load_agent("contest", **params), data=market)
        n_first = len(server.requests)
        again = simulate(config=config, agent=load_agent("contest", **params), data=market)
        assert n_first > 0 and len(server.requests) == n_first  # the re-run asked nobody
        assert server.max_in_flight > 1  # the team's calls ran concurrently
    cols = ["step", "weights", "rationale", "llm_calls"]
    assert first.decisions[cols].equals(again.decisions[cols])
    np.testing.assert_array_equal(first.equity["equity"], again.equity["equity"])
    costs = first.meta["contest"]["costs"]
    assert costs["team:data"]["prompt_tokens"] > 0 and costs["team:research"]["cost_usd"] > 0
    assert costs["research:growth"]["calls"] > 0 and costs["team:judges"]["calls"] > 0
    assert again.meta["contest"]["costs"]["total"]["model_calls"] == 0
    # the LLM dollars are debited from the account, at list price also when the cache answered
    charged = first.meta["contest"]["llm_cost_charged_usd"]
    assert charged >= costs["total"]["cost_usd"] > 0
    assert first.meta["costs_paid"]["expense"] == pytest.approx(charged, rel=1e-12)
    assert first.decisions["expense"].sum() == pytest.approx(charged, rel=1e-12)
    assert again.meta["contest"]["llm_cost_charged_usd"] == charged


class OnlineLearner:
    """A small entrant that learns online: long the first symbol while its own realised
    returns sum to >= 0, else cash; it keeps every Feedback it is given."""

    name = "online_learner"

    def __init__(self, **params: Any) -> None:
        self.seen: list[Any] = []
        self.times: list[np.datetime64] = []
        self.total = 0.0

    def start(self, context: Any) -> None:
        self.seen, self.times, self.total = [], [], 0.0

    def decide(self, obs: Any) -> Any:
        from tradesim.contracts import Decision

        self.times.append(np.datetime64(obs.time, "ns"))
        for fb in self.seen:  # delivered before this decision, never later than realised
            assert fb.time <= obs.time
        w = 1.0 if self.total >= 0 else 0.0
        return Decision(weights={obs.universe[0]: w}, rebalance_missing=True)

    def update(self, feedback: Any) -> None:
        self.seen.append(feedback)
        self.total += feedback.period_return

    def stop(self, *, error: BaseException | None = None) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {"total": self.total}

    def load_state(self, state: dict[str, Any]) -> None:
        self.total = float(state["total"])


def test_a_learning_entrant_gets_its_own_feedback_once_realised(market) -> None:
    agent = ContestAgent(entrants=["test_contest:OnlineLearner", "buy_and_hold"], **RULES,
                         predictor="mean")
    simulate(config=_config("2018-01-01", "2018-06-30"), agent=agent, data=market)
    learner = agent.entrant_agents[0]
    state = agent.state()
    opens = np.asarray(state["opens"], dtype=float)
    signals = np.asarray(state["signals"], dtype=float)
    assert len(learner.seen) >= len(learner.times) - 3
    for fb in learner.seen:  # decision j is reported at step j + 2, with its open-to-open return
        j = learner.times.index(np.datetime64(fb.decision_time, "ns"))
        assert fb.time == learner.times[j + REALISE]
        move = opens[j + 2, 0] / opens[j + 1, 0] - 1
        assert fb.period_return == pytest.approx(signals[j, 0, 0] * move, abs=1e-15)
    held = signals[:, 0, 0]
    assert (held == 0).any() and (held == 1).any()  # it acted on what it learned
    quiet = ContestAgent(entrants=["test_contest:OnlineLearner"], **RULES, predictor="mean",
                         entrant_feedback=False)
    simulate(config=_config("2018-01-01", "2018-06-30"), agent=quiet, data=market)
    assert quiet.entrant_agents[0].seen == []
