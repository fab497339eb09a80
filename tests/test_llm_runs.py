"""LLM runs as a researcher uses them: a live run replays itself, a run folder holds its own
answers only, the cache tells servers apart, an echoed key never reaches a record or the screen,
the budget refuses calls before they are sent, and the leakage warnings say what is true.

The only fake is the remote API (tradesim.llm.testing.FakeOpenAIServer on 127.0.0.1).
"""

from __future__ import annotations

import json
import re
import sqlite3
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tradesim.agents.llm_agent import LLMAnalyst
from tradesim.data.load import load_market
from tradesim.data.view import MarketData
from tradesim.errors import AgentDecisionError, BudgetExceededError, LLMProviderError
from tradesim.evaluate.backtest import BacktestConfig, run_backtest
from tradesim.llm import CACHE_FILE, Gateway, GatewayConfig
from tradesim.llm.budget import count_tokens
from tradesim.llm.leakage import compare_anonymised
from tradesim.llm.schema import TradeDecision
from tradesim.llm.testing import FakeOpenAIServer, Reply

KEY = "tsk_live_0123456789SECRETabcdefXYZ"  # not key-shaped: only knowing the key scrubs it
SYMBOLS = ("ALPHA", "BRAVO")
START, END = "2019-01-02", "2019-02-13"
_RETURNS = re.compile(r"oldest first: (.*)")


def _reply(*, invert: bool = False, remember: str | None = None):
    """A scripted analyst: buy after an up bar (sell if ``invert``); with ``remember`` set it
    buys whenever that name appears (a model that recognises the ticker)."""
    def answer(body: dict[str, Any]) -> Reply:
        prompt = body["messages"][-1]["content"]
        last = float(_RETURNS.search(prompt)[1].split()[-1])
        up = (last > 0) != invert
        if remember is not None and remember in prompt:
            up = True
        decision = {"action": "buy" if up else "sell", "weight": 0.8, "confidence": 0.6,
                    "rationale": f"last bar {last:+.2f}%"}
        text = "".join(m["content"] for m in body["messages"])
        return Reply(content=json.dumps(decision), prompt_tokens=count_tokens(text),
                     completion_tokens=30)
    return answer


@pytest.fixture(scope="module")
def data() -> MarketData:
    return load_market(symbols=list(SYMBOLS), source="sample")


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_BASE_URL", "TRADESIM_LLM"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def _gw(server: FakeOpenAIServer, cache: Path, **kw: Any) -> dict[str, Any]:
    return {"provider": "openai", "base_url": server.base_url, "cache_path": str(cache),
            "timeout_s": 5.0, "backoff_s": 0.01, **kw}


def _run(agent: LLMAnalyst, data: MarketData, folder: Path | None, **kw: Any):
    config = BacktestConfig.build(agent="llm_analyst", symbols=SYMBOLS, start=START, end=END, **kw)
    try:
        return run_backtest(config=config, agent=agent, data=data, save_to=folder)
    finally:
        agent.close()


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]


def test_live_run_on_a_shared_cache_replays_itself_bit_for_bit_fake_openai_server(data, tmp_path):
    shared = tmp_path / "shared.sqlite"
    with FakeOpenAIServer(default=_reply()) as server:  # an earlier run fills the shared cache
        first = _run(LLMAnalyst(gateway=_gw(server, shared, mode="cached")), data, tmp_path / "a")
    # unrelated answers in the shared cache must not travel with later runs
    with FakeOpenAIServer(default=Reply(content="{}")) as other, \
            Gateway(config=GatewayConfig(**_gw(other, shared))) as gw:
        gw.gather([{"messages": [{"role": "user", "content": f"other {i}"}]} for i in range(12)])
    with FakeOpenAIServer(default=_reply(invert=True)) as server:  # the model has changed
        live_gw = _gw(server, shared, mode="live")
        live = _run(LLMAnalyst(gateway=live_gw), data, tmp_path / "b")
        sent = len(server.requests)
    calls = live.meta["llm"]["calls"]
    assert sent == calls == live.meta["llm"]["model_calls"] > 0  # asked afresh, every call
    assert live.equity["equity"].iloc[-1] != first.equity["equity"].iloc[-1]
    assert _rows(tmp_path / "b" / CACHE_FILE) == calls  # its own answers, nothing else
    replay = _run(LLMAnalyst.from_run(tmp_path / "b"), data, tmp_path / "b-replay")
    assert replay.meta["llm"]["model_calls"] == 0
    for table in ("decisions", "fills", "equity"):
        pd.testing.assert_frame_equal(getattr(replay, table), getattr(live, table))
    # the shared cache now answers with the live run's (latest) answers, server gone
    again = _run(LLMAnalyst(gateway={**live_gw, "mode": "replay"}), data, None)
    pd.testing.assert_frame_equal(again.equity, live.equity)


def test_repeated_identical_live_calls_replay_in_order_fake_openai_server(tmp_path):
    answers = iter(["buy", "sell", "hold"])
    with FakeOpenAIServer(default=lambda body: Reply(content=json.dumps(
            {"action": next(answers), "weight": 0.5, "confidence": 0.5, "rationale": "x"}))) as srv:
        cfg = GatewayConfig(**_gw(srv, tmp_path / "c.sqlite", mode="live", temperature=1.0))
        with Gateway(config=cfg) as gw:
            msgs = [{"role": "user", "content": "same prompt"}]
            live = [gw.complete(msgs, schema=TradeDecision).decision().action for _ in range(3)]
            gw.save(tmp_path / "run")
    replay_cfg = cfg.model_copy(update={"mode": "replay",
                                        "cache_path": str(tmp_path / "run" / CACHE_FILE)})
    with Gateway(config=replay_cfg) as gw:
        replayed = [gw.complete(msgs, schema=TradeDecision).decision().action for _ in range(3)]
    assert live == replayed == ["buy", "sell", "hold"]


def test_cache_key_tells_two_servers_with_the_same_model_name_apart_fake_openai_server(tmp_path):
    shared = str(tmp_path / "shared.sqlite")
    msgs = [{"role": "user", "content": "ALPHA rose 3%"}]
    good = '{"action":"%s","weight":0.5,"confidence":0.5,"rationale":"x"}'
    with FakeOpenAIServer(default=Reply(content=good % "buy")) as one, \
            FakeOpenAIServer(default=Reply(content=good % "sell")) as two:
        answers = []
        for srv in (one, two, one):
            cfg = GatewayConfig(provider="openai-compatible", model="default",
                                base_url=srv.base_url, cache_path=shared)
            with Gateway(config=cfg) as gw:
                answers.append(gw.complete(msgs, schema=TradeDecision).decision().action)
                assert gw.describe()["endpoint"] == srv.base_url
        assert (len(one.requests), len(two.requests)) == (1, 1)  # the third call was a hit
    assert answers == ["buy", "sell", "buy"]


def test_echoed_api_key_reaches_no_record_and_no_screen_fake_openai_server(data, tmp_path,
                                                                           capsys):
    with FakeOpenAIServer(default=Reply(status=401, content="Incorrect API key provided"),
                          echo_key=True) as server:
        agent = LLMAnalyst(gateway=_gw(server, tmp_path / "c.sqlite"))
        with pytest.raises(AgentDecisionError) as info:
            _run(agent, data, tmp_path / "run")
        echoed = json.dumps(server.requests[0]["headers"])
    assert KEY in echoed  # the server did see (and echo) the key
    chain = "".join(traceback.format_exception(info.value))
    assert "HTTP 401" in chain and isinstance(info.value.__cause__, LLMProviderError)
    print(chain)  # what a console would show
    out = capsys.readouterr()
    texts = {"console": out.out + out.err, "exception": chain}
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            texts[path.name] = path.read_bytes().decode("utf-8", errors="replace")
    assert {"meta.json", "report.html", "llm_journal.jsonl"} <= set(texts)
    assert any(name.startswith("decisions") for name in texts)
    for name, text in texts.items():
        assert KEY not in text and "SECRETabcdef" not in text, name


def test_budget_refuses_every_call_that_cannot_fit_fake_openai_server(tmp_path):
    with FakeOpenAIServer(default=Reply(content="{}", prompt_tokens=5, completion_tokens=20)) as srv:
        msgs = [[{"role": "user", "content": f"day {i}"}] for i in range(7)]
        one_token = GatewayConfig(**_gw(srv, tmp_path / "a.sqlite", budget_tokens=1))
        with Gateway(config=one_token) as gw, \
                pytest.raises(BudgetExceededError, match="before sending"):
            gw.gather([{"messages": m} for m in msgs])
        assert srv.requests == []  # a 1-token budget sends nothing
        limit = 100
        cfg = GatewayConfig(**_gw(srv, tmp_path / "b.sqlite", budget_tokens=limit, max_tokens=20))
        with Gateway(config=cfg) as gw:
            sent = 0
            with pytest.raises(BudgetExceededError, match="before sending"):
                for m in msgs:
                    gw.complete(m)
                    sent += 1
            assert len(srv.requests) == sent > 0 and gw.budget.spent_tokens <= limit
            # the refused call's worst case (prompt bound + max_tokens) did not fit
            need = gw.token_counter().upper_bound(msgs[sent]) + cfg.max_tokens
            assert gw.budget.spent_tokens + need > limit
        srv.requests.clear()
        with Gateway(config=cfg.model_copy(update={"cache_path": str(tmp_path / "c.sqlite")})) as gw:
            with pytest.raises(BudgetExceededError):
                gw.gather([{"messages": m} for m in msgs])  # concurrently: same hard stop
            assert len(srv.requests) == sent and gw.budget.spent_tokens <= limit


def test_dollar_budget_reserves_before_sending_and_reports_real_spend_fake_openai_server(tmp_path):
    # gpt-4o-mini, 20 max tokens: a call reserves about $0.0000135, answers cost $0.0000127
    with FakeOpenAIServer(default=Reply(content="{}", prompt_tokens=5, completion_tokens=20)) as srv:
        cfg = GatewayConfig(**_gw(srv, tmp_path / "a.sqlite", budget_usd=0.00004, max_tokens=20))
        with Gateway(config=cfg) as gw:
            with pytest.raises(BudgetExceededError) as info:
                for i in range(10):
                    gw.complete([{"role": "user", "content": f"day {i}"}])
            spent = gw.budget.spent_usd
            assert 0 < spent <= 0.00004 and len(srv.requests) == gw.budget.calls
    assert f"${spent:.6f}" in str(info.value)


def _files_market(data: MarketData, root: Path) -> MarketData:
    """The sample's bars written as plain CSV files: a real-looking (non-synthetic) source."""
    for s in SYMBOLS:
        b = data.full(s)
        pd.DataFrame({"Date": pd.to_datetime(b.time).strftime("%Y-%m-%d"), "Open": b.open,
                      "High": b.high, "Low": b.low, "Close": b.close, "Volume": b.volume}
                     ).to_csv(root / f"{s}.csv", index=False)
    return load_market(symbols=list(SYMBOLS), source="files", source_options={"root": str(root)},
                       news=False)


def test_leakage_warning_only_for_real_data_and_changed_by_anonymisation_fake_openai_server(
        data, tmp_path):
    files = _files_market(data, tmp_path)
    metas = {}
    with FakeOpenAIServer(default=_reply()) as server:
        for name, market, anon in (("sample", data, False), ("files", files, False),
                                   ("files-anon", files, True)):
            agent = LLMAnalyst(anonymize=anon, every=10,
                               gateway=_gw(server, tmp_path / f"{name}.sqlite"))
            metas[name] = _run(agent, market, tmp_path / name).meta
    assert metas["sample"]["llm"]["leakage"] == [] and not metas["sample"].get("warnings")
    assert metas["sample"]["llm"]["data_sources"] == ["synthetic"]
    assert [f["level"] for f in metas["files"]["llm"]["leakage"]] == ["full"]
    assert any("may remember the outcomes" in w for w in metas["files"]["warnings"])
    report = (tmp_path / "files" / "report.html").read_text(encoding="utf-8")
    assert "knowledge cutoff 2023-10-01" in report
    assert "may remember" not in (tmp_path / "sample" / "report.html").read_text(encoding="utf-8")
    anon = metas["files-anon"]["llm"]["leakage"]
    assert [f["level"] for f in anon] == ["reduced"] and "anonymised" in anon[0]["message"]


def test_memorisation_probe_detects_a_model_that_recognises_the_ticker_fake_openai_server(
        data, tmp_path):
    def probe(server_reply) -> Any:
        with FakeOpenAIServer(default=server_reply) as server:
            runs = {anon: _run(LLMAnalyst(anonymize=anon, allow_short=True, gateway=_gw(
                        server, tmp_path / f"{anon}{id(server_reply)}.sqlite")), data, None,
                        allow_short=True)
                    for anon in (False, True)}
        return compare_anonymised(plain=runs[False], anonymised=runs[True], n_boot=500)

    honest = probe(_reply())
    remembers = probe(_reply(remember="ALPHA"))
    assert honest.agreement == 1.0 and not honest.remembers
    assert honest.return_diff_ci == (0.0, 0.0)
    assert remembers.remembers and remembers.agreement < 1.0
    assert remembers.agreement_ci[1] < 1.0 and "memorisation probe" in str(remembers)


def test_dry_run_says_price_unknown_counts_repairs_and_warns(data):
    unknown = LLMAnalyst(gateway={"provider": "openai-compatible", "model": "my-own-7b",
                                  "base_url": "http://127.0.0.1:9/v1"})
    est = unknown.estimate_run(n_steps=20, n_symbols=2, start=np.datetime64("2019-01-02"),
                               end=np.datetime64("2019-03-01"), sources=("files",))
    assert est.cost_usd is None and not est.price_known and "price unknown" in str(est)
    assert est.worst_calls == 2 * est.calls and est.worst_tokens > est.prompt_tokens
    assert any("knowledge cutoff" in w for w in est.warnings)
    priced = LLMAnalyst(gateway={"provider": "openai", "model": "gpt-4o"}).estimate_run(
        n_steps=20, n_symbols=2)
    assert priced.price_known and priced.cost_usd > 0 and priced.worst_cost_usd > priced.cost_usd
    assert priced.warnings == ()
