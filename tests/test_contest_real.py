"""The contest on real data: the AA articles with AA prices, the Benzinga headlines with GOOG.

Needs ``../shared/data`` (the ``shared_data`` fixture skips without it); nothing is copied.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tradesim.agents.contest import ContestAgent, ContestConfig, contest_allocations
from tradesim.agents.contest.predictor import PredictorConfig
from tradesim.data.bars import News
from tradesim.data.load import load_market
from tradesim.data.news import read_news
from tradesim.data.view import MarketData
from tradesim.engine.backtest import BacktestConfig, simulate
from tradesim.llm.testing import FakeOpenAIServer, Reply

BENZINGA = "benzinga_analyst_ratings_processed_filtered_AAPL_AMZN_GOOG_NVDA_TSLA.csv"
AA_COLUMNS = {"published_at": "Date", "title": "New_text", "source": "Url"}
DOC = re.compile(r"^\[(\d+)\] (\d{4}-\d{2}-\d{2}) (\S+): (.*)$", re.M)


@pytest.fixture(scope="module")
def aa(shared_data: Path) -> MarketData:
    """AA bars (files source, newest-first file sorted by the repair policy) plus the articles."""
    news = read_news(shared_data / "news" / "fnspid_AA_articles.csv", columns=AA_COLUMNS,
                     symbol="AA")
    bars = load_market(symbols=["AA"], source="files", quality="repair", news=False,
                       start="2016-01-01", end="2019-12-31",
                       source_options={"root": str(shared_data / "yahoo")})
    return MarketData({s: bars.full(s) for s in bars.symbols}, news.for_symbols(["AA"]))


def _scripted(body: dict[str, Any]) -> Reply:
    """Data analysts cite the first two documents (quoting them); raters and researchers buy
    after an up bar and sell after a down one."""
    system, prompt = body["messages"][0]["content"], body["messages"][-1]["content"]
    if "data analyst" in system:
        docs = DOC.findall(prompt)
        if not docs:
            return Reply(content="No documents: no view.", prompt_tokens=50)
        cited = " ".join(f"[{n}] \"{title[:40]}\"" for n, _, _, title in docs[:2])
        return Reply(content=f"Alcoa flow: {cited}.", prompt_tokens=len(prompt) // 4,
                     completion_tokens=20)
    rets = re.search(r"oldest first: (.*)", prompt)
    last = float(rets[1].split()[-1]) if rets and rets[1].split() else 0.0
    answer = {"action": "buy" if last > 0 else "sell", "weight": 0.5, "confidence": 0.5,
              "rationale": f"last {last:+.2f}%"}
    return Reply(content=json.dumps(answer), prompt_tokens=120, completion_tokens=20)


def _available(news: News) -> dict[str, list[np.datetime64]]:
    """Each item's whole title -> the available_at of every item with that title."""
    out: dict[str, list[np.datetime64]] = {}
    for title, at in zip(news.title, news.available_at):
        out.setdefault(str(title).strip(), []).append(at)
    return out


def _run_teams(data: MarketData, symbols: tuple[str, ...], start: str, end: str, tmp: Path,
               monkeypatch: pytest.MonkeyPatch) -> tuple[ContestAgent, Any]:
    monkeypatch.setenv("TRADESIM_CONTEST_KEY", "sk-test")
    with FakeOpenAIServer(default=_scripted) as server:
        gateway = {"provider": "openai", "base_url": server.base_url, "mode": "cached",
                   "api_key_env": "TRADESIM_CONTEST_KEY", "cache_path": str(tmp / "c.db")}
        agent = ContestAgent(entrants=["buy_and_hold"], every=5, samples=1, gateway=gateway,
                             data_agents=[{"name": "news", "news_items": 8}],
                             research_agents=[{"name": "growth", "belief": "momentum"}])
        config = BacktestConfig.build(symbols=symbols, start=start, end=end, costs="zero")
        result = simulate(config=config, agent=agent, data=data)
    return agent, result


def _check_prompts(agent: ContestAgent, news: News) -> int:
    """Every dated document in a data prompt and every headline in a research tool was
    available by the call's decision time, and the newest available one was shown."""
    when = _available(news)
    checked = 0
    for rec in agent.calls():
        t = np.datetime64(str(rec.decision_time).replace("+00:00", "")[:26], "ns")
        prompt = rec.messages[-1]["content"]
        if rec.tag.startswith("contest:data") and "Documents:" in prompt:
            docs = DOC.findall(prompt)
            assert docs, prompt[:300]
            for _, day, _, title in docs:  # the article with that text and that date
                ats = [a for a in when[title.strip()]
                       if a.astype("datetime64[D]") == np.datetime64(day)]
                assert ats and min(ats) <= t, f"{title[:60]!r} ({day}) shown at {t}"
                checked += 1
            newest = int(np.searchsorted(news.available_at, t, "right")) - 1
            assert str(news.title[newest])[:60] in prompt  # the latest item available was shown
    return checked


def test_aa_data_and_research_teams_see_only_available_articles_fake_openai_server(
        aa: MarketData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    agent, result = _run_teams(aa, ("AA",), "2019-03-01", "2019-04-30", tmp_path, monkeypatch)
    assert _check_prompts(agent, aa.news) > 20
    research = [r for r in agent.calls() if r.tag.startswith("contest:research")]
    for rec in research:  # the latest_news tool: titles available by the decision time
        t = np.datetime64(str(rec.decision_time).replace("+00:00", "")[:26], "ns")
        line = next(x for x in rec.messages[-1]["content"].splitlines() if "latest_news" in x)
        visible = [str(s)[:60] for s, at in zip(aa.news.title, aa.news.available_at) if at <= t]
        assert any(v[:40] in line for v in visible[-3:])
    # factors cite [n] documents by number, and the quoted text is a real article's
    titles = {str(s)[:40] for s in aa.news.title}
    factors = [f for step in agent.record()["factors"] for f in step.get("factors", {}).values()]
    cited = [q for f in factors for q in re.findall(r"\[\d+\] \"([^\"]*)\"", f)]
    assert len(cited) >= 10 and set(cited) <= titles
    assert len(research) == -(-len(result.equity) // 5)  # one call per team step (every=5)
    assert result.meta["contest"]["costs"]["team:data"]["calls"] > 0


def test_goog_benzinga_headlines_reach_the_data_team_point_in_time_fake_openai_server(
        shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = load_market(symbols=["GOOG"], source="files", quality="repair",
                       news=shared_data / "news" / BENZINGA, start="2019-02-06",
                       end="2019-06-28", source_options={"root": str(shared_data / "fnspid")})
    assert set(data.news.symbol) == {"GOOG"}
    agent, _ = _run_teams(data, ("GOOG",), "2019-04-01", "2019-05-31", tmp_path, monkeypatch)
    assert _check_prompts(agent, data.news) > 10


def test_rules_only_contest_on_aa_prices_is_lag_safe(aa: MarketData) -> None:
    agent = ContestAgent(data_agents=[], research_agents=[], refit_every=10)
    config = BacktestConfig.build(symbols=("AA",), start="2016-06-01", end="2017-09-29")
    result = simulate(config=config, agent=agent, data=aa)
    state = agent.state()
    weights = np.asarray([h["weights"] for h in state["history"]], dtype=float)
    signals = np.asarray(state["signals"], dtype=float)
    # the whole file's opens (later bars too): only `realise` decides what a step may use
    bars = aa.full("AA")
    clock = np.asarray([np.datetime64(h["time"]) for h in state["history"]], dtype="datetime64[ns]")
    opens = bars.open[np.searchsorted(bars.time, clock)][:, None]
    cfg = ContestConfig(predictor=PredictorConfig(refit_every=10))
    honest = contest_allocations(signals, opens, config=cfg, realise=2)
    leaky = contest_allocations(signals, opens, config=cfg, realise=1)
    np.testing.assert_allclose(weights, honest, atol=1e-12)
    assert not np.allclose(honest, leaky)
    assert len(result.equity) > 330 and np.isfinite(result.final_equity)
    assert {h["how"] for h in state["history"]} >= {"warmup", "lightgbm"}
