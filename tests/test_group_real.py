"""TradingGroup on real data: AA prices with the FNSPID AA articles, GOOG with Benzinga headlines.

Needs ``../shared/data`` (the ``shared_data`` fixture skips without it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tradesim.agents.group import STEPS_FILE, ReflectionMemory, lexicon
from tradesim.agents.group.memory import MEMORY_FILE
from tradesim.agents.group.realdata import market_with_news, read_articles
from tradesim.agents.registry import load_agent
from tradesim.data.bars import News
from tradesim.data.news import read_news
from tradesim.data.view import MarketData
from tradesim.engine.backtest import BacktestConfig, simulate
from tradesim.engine.record import RunResult
from tradesim.llm.testing import FakeOpenAIServer, Reply

BENZINGA = "benzinga_analyst_ratings_processed_filtered_AAPL_AMZN_GOOG_NVDA_TSLA.csv"
AA_START, AA_END = "2019-01-02", "2019-06-28"


@pytest.fixture(scope="module")
def aa(shared_data: Path) -> tuple[MarketData, News]:
    news = read_articles(shared_data / "news" / "fnspid_AA_articles.csv", symbol="AA")
    data = market_with_news(prices=shared_data / "yahoo", symbols=["AA"], news=news,
                            start="2018-09-01", end=AA_END)
    return data, news


@pytest.fixture(scope="module")
def goog(shared_data: Path) -> tuple[MarketData, News]:
    news = read_news(shared_data / "news" / BENZINGA, symbols=["GOOG"])
    data = market_with_news(prices=shared_data / "fnspid", symbols=["GOOG"], news=news,
                            start="2019-02-06", end="2019-12-31")
    return data, news


@pytest.fixture(scope="module")
def aa_run(aa: tuple[MarketData, News], tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[RunResult, Path]:
    folder = tmp_path_factory.mktemp("aa") / "run"
    config = BacktestConfig.build(symbols=("AA",), start=AA_START, end=AA_END, costs="zero")
    return simulate(config=config, agent=load_agent("tradinggroup"), data=aa[0],
                    save_to=folder), folder


def _steps(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (folder / STEPS_FILE).read_text().splitlines()]


def _ns(stamp: str) -> np.datetime64:
    return np.datetime64(stamp, "ns")


def _visible(news: News, t: np.datetime64, *, last: int = 8, days: float = 5.0) -> list[str]:
    """Titles the news role should read at ``t``: the latest ``last`` items available by ``t``,
    of which those at most ``days`` old (computed here from the file, not by the agent)."""
    n = int(np.searchsorted(news.available_at, t, "right"))
    lo = max(0, n - last)
    return [str(news.title[i]) for i in range(lo, n)
            if (t - news.available_at[i]) <= np.timedelta64(int(days * 86400), "s")]


# --- the news role sees only what was available ---------------------------------------------

def test_aa_articles_map_onto_news_and_wait_for_the_open(aa: tuple[MarketData, News]) -> None:
    _, news = aa
    assert len(news) > 1400 and set(news.symbol) == {"AA"}
    assert all(str(s).startswith("https://") for s in news.source[:20])
    assert (news.available_at >= news.published_at).all()
    late = news.available_at > news.published_at  # published outside trading hours
    assert 0.2 < late.mean() < 0.95


def test_quant_team_on_aa_reads_only_news_available_at_decision_time(
        aa: tuple[MarketData, News], aa_run: tuple[RunResult, Path]) -> None:
    _, news = aa
    result, folder = aa_run
    steps = _steps(folder)
    assert len(steps) == len(result.equity) > 100
    with_news = hidden = 0
    for step in steps:
        t = _ns(step["time"])
        read = [item["title"] for item in step["symbols"]["AA"]["news"]]
        assert read == _visible(news, t)
        with_news += bool(read)
        # an article published on the decision day but after the close is not read that day
        day = t.astype("datetime64[D]")
        same_day_later = [str(news.title[i]) for i in range(len(news))
                          if news.published_at[i].astype("datetime64[D]") == day
                          and news.available_at[i] > t]
        hidden += len(same_day_later)
        assert not set(same_day_later) & set(read)
    assert with_news > 30 and hidden > 0
    scores = [s["symbols"]["AA"]["roles"]["news"]["score"] for s in steps]
    assert any(x > 0 for x in scores) and any(x < 0 for x in scores)


def test_quant_team_on_goog_reads_only_benzinga_headlines_available_by_then(
        goog: tuple[MarketData, News], tmp_path: Path) -> None:
    data, news = goog
    config = BacktestConfig.build(symbols=("GOOG",), start="2019-04-01", end="2019-12-31")
    simulate(config=config, agent=load_agent("tradinggroup"), data=data, save_to=tmp_path)
    steps = _steps(tmp_path)
    read = 0
    for step in steps:
        titles = [item["title"] for item in step["symbols"]["GOOG"]["news"]]
        assert titles == _visible(news, _ns(step["time"]))
        read += len(titles)
    assert read > 50


def test_the_lexicon_scores_real_headlines_with_sensible_signs(
        aa: tuple[MarketData, News], shared_data: Path) -> None:
    """Hand-checked headlines from the Benzinga file and AA articles from the FNSPID file."""
    benzinga = set(read_news(shared_data / "news" / BENZINGA).title)
    articles = list(aa[1].title)
    positive = ["Wells Fargo Upgrades Apple to Overweight, Announces $315 Price Target",
                "Deutsche Bank Upgrades Apple to Buy, Announces $270 Price Target",
                "Apple Q2 EPS $2.550 Beats $2.260 Estimate, Sales $58.300B Beat $54.540B "
                "Estimate",
                "Vetr Crowd Upgrades Nvidia To Strong Buy"]
    negative = ["Goldman Sachs Downgrades Apple to Sell, Lowers Price Target to $233",
                "Daiwa Capital Downgrades Apple to Outperform, Lowers Price Target to $297",
                "Under Armour Gets Torn Up As Earnings Disappoint, But Coronavirus Fears "
                "Retreat Slightly"]
    mixed = "Amazon.com Q1 EPS $5.010 Misses $6.250 Estimate, Sales $75.500B Beat $73.610B " \
            "Estimate"
    assert set(positive + negative + [mixed]) <= benzinga  # real rows, copied verbatim
    assert all(lexicon.score(h)[0] > 0 for h in positive)
    assert all(lexicon.score(h)[0] < 0 for h in negative)
    assert lexicon.score(mixed)[0] == 0.0  # a miss and a beat cancel
    on_fire = next(a for a in articles if "shares are on fire Friday, jumping" in a)
    strong_sell = next(a for a in articles if "Zacks Rank #5 (Strong Sell)" in a)
    assert lexicon.score(on_fire)[0] > 0 and lexicon.score(strong_sell)[0] < 0


# --- stops, targets and memory on AA ----------------------------------------------------------

def test_stops_and_targets_on_aa_fill_as_the_engine_promises(
        aa: tuple[MarketData, News], aa_run: tuple[RunResult, Path]) -> None:
    """Every exit fills at its level, or at the open when the bar gapped through it."""
    data, _ = aa
    result, _ = aa_run
    bars = data.full("AA")
    stamps = pd.DatetimeIndex(bars.time).tz_localize("UTC")
    exits = result.fills[result.fills["reason"].isin(["stop_loss", "take_profit"])]
    assert "stop_loss" in set(exits["reason"])
    for _, fill in exits.iterrows():
        i = stamps.get_loc(fill["time"])
        before = result.decisions[result.decisions["step"] < fill["step"]]
        column = "stop_loss" if fill["reason"] == "stop_loss" else "take_profit"
        levels = [json.loads(x).get("AA") for x in before[column]]
        level = next(x for x in reversed(levels) if x is not None)
        assert bars.low[i] <= fill["price"] <= bars.high[i]
        want = (min(bars.open[i], level) if column == "stop_loss"
                else max(bars.open[i], level))
        assert fill["price"] == pytest.approx(want) and fill["quantity"] < 0


def test_memory_outcomes_on_aa_are_realised_exactly_horizon_bars_later(
        aa_run: tuple[RunResult, Path]) -> None:
    result, folder = aa_run
    rows = ReflectionMemory(folder / MEMORY_FILE).rows()
    clock = result.equity.index.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    pos = {int(t): i for i, t in enumerate(clock.astype(np.int64))}
    realised = [r for r in rows if r["realised_at"] is not None]
    assert len(realised) > 200
    aa = [r for r in realised if r["symbol"] == "AA"]
    for r in realised:
        assert pos[r["realised_at"]] - pos[r["time"]] == r["horizon"] == 5
    # the outcome is the call's return from its decision close to the close `horizon` bars on
    price = {int(r["time"]): r["price"] for r in aa}
    checked = 0
    for r in aa:
        later = price.get(int(r["realised_at"]))
        if later is not None and r["direction"] != 0:
            assert r["pnl"] == pytest.approx(r["direction"] * (later / r["price"] - 1.0))
            checked += 1
    assert checked > 50
    still_open = [r for r in rows if r["realised_at"] is None]
    assert {pos[r["time"]] for r in still_open} == set(range(len(clock) - 5, len(clock)))


# --- the LLM roles on AA against a scripted local model --------------------------------------

def _scripted(prompts: list[dict[str, str]]) -> Any:
    def reply(body: dict[str, Any]) -> Reply:
        system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
        role = re.search(r"\[role:(\w+)\]", system)[1]  # type: ignore[index]
        prompts.append({"role": role, "user": user})
        up = "close vs SMA-20 +" in user
        answer = {
            "news": {"sentiment": -0.5 if "fell" in user else 0.3, "probability": 0.6,
                     "rationale": "read the articles"},
            "report": {"score": 0.0, "rationale": "none"},
            "trend": {"direction": "up" if up else "down", "confidence": 0.7, "rationale": "sma"},
            "style": {"style": "balanced", "rationale": "normal"},
            "decision": {"action": "buy" if up else "hold", "size": 0.8, "confidence": 0.6,
                         "rationale": "trend"},
        }[role]
        return Reply(content=json.dumps(answer), prompt_tokens=120, completion_tokens=20)
    return reply


def test_llm_team_on_aa_news_prompts_hold_only_available_articles_fake_openai_server(
        aa: tuple[MarketData, News], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_TEST_KEY", "sk-test")
    data, news = aa
    prompts: list[dict[str, str]] = []
    config = BacktestConfig.build(symbols=("AA",), start=AA_START, end=AA_END, costs="zero")
    with FakeOpenAIServer(default=_scripted(prompts)) as server:
        agent = load_agent("tradinggroup", quant_only=False, every=5, gateway={
            "provider": "openai", "base_url": server.base_url, "api_key_env": "TG_TEST_KEY",
            "mode": "cached", "cache_path": str(tmp_path / "c.sqlite")})
        result = simulate(config=config, agent=agent, data=data, save_to=tmp_path / "run")
    steps = {s["time"][:10]: s for s in _steps(tmp_path / "run")}
    news_prompts = [p for p in prompts if p["role"] == "news"]
    assert len(news_prompts) >= 5 and {p["role"] for p in prompts} >= {"trend", "decision"}
    window = news.available_at.astype("datetime64[D]")
    quoted = 0
    for p in news_prompts:
        day = re.search(r"decision date (\d{4}-\d\d-\d\d)", p["user"])[1]  # type: ignore[index]
        t = _ns(steps[day]["time"])
        near = np.abs(window - np.datetime64(day, "D")) <= np.timedelta64(10, "D")
        for i in np.flatnonzero(near):
            if str(news.title[i]) in p["user"]:
                quoted += 1
                assert news.available_at[i] <= t  # never an article from after the decision
        assert [x["title"] for x in steps[day]["symbols"]["AA"]["news"]] == _visible(news, t)
    assert quoted >= len(news_prompts)
    paths = {s["symbols"]["AA"]["roles"]["news"]["path"] for s in steps.values()
             if s["symbols"]["AA"]["news"] and s["llm_calls"]}
    assert paths == {"llm"}
    assert result.meta["llm"]["model_calls"] == len(prompts)
    assert len(result.fills) > 0
