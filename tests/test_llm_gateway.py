"""The gateway through the real openai and langchain clients against a local fake OpenAI server.

The server (tradesim.llm.testing) is a fake only of the remote API, the one edge a test cannot
reach; everything on our side of the socket is the real code.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tradesim.errors import (
    BudgetExceededError,
    ConfigError,
    LLMProviderError,
    LLMTimeoutError,
    MissingAPIKeyError,
    ReplayMissError,
)
from tradesim.llm import (
    CACHE_FILE,
    JOURNAL_FILE,
    Anonymizer,
    Gateway,
    GatewayConfig,
    Journal,
)
from tradesim.llm.schema import TradeDecision
from tradesim.llm.testing import FakeOpenAIServer, Reply

KEY = "sk-test-SECRET0123456789abcdefXYZ"
GOOD = '{"action":"buy","weight":0.5,"confidence":0.7,"rationale":"momentum"}'
BAD = '{"action":"moon","weight":7}'
MSGS = [{"role": "system", "content": "You trade."}, {"role": "user", "content": "AAPL rose 3%."}]


@pytest.fixture
def server():
    with FakeOpenAIServer(default=Reply(content=GOOD)) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("TRADESIM_LLM", raising=False)


def _gateway(server: FakeOpenAIServer, tmp_path: Path | None = None, **kw) -> Gateway:
    cfg = {"provider": "openai", "base_url": server.base_url, "backoff_s": 0.01, "timeout_s": 5.0,
           **kw}
    if tmp_path is not None:
        cfg["cache_path"] = str(tmp_path / CACHE_FILE)
    return Gateway(config=GatewayConfig(**cfg))


def test_json_schema_structured_output_openai_client_fake_openai_server(server):
    with _gateway(server) as gw:
        result = gw.complete(MSGS, schema=TradeDecision, decision_time="2024-03-04T16:00")
    assert result.parsed == TradeDecision(action="buy", weight=0.5, confidence=0.7,
                                          rationale="momentum")
    body = server.requests[0]["body"]
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["required"] == ["action", "weight", "confidence", "rationale"]
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {KEY}"
    assert gw.journal.records[0].decision_time == "2024-03-04T16:00:00"


def test_langchain_chat_openai_path_fake_openai_server(server):
    with _gateway(server, provider="langchain-openai") as gw:
        result = gw.complete(MSGS, schema=TradeDecision)
        assert gw.provider_name == "langchain-openai"
    assert result.decision().action == "buy"
    assert server.requests[0]["body"]["response_format"]["type"] == "json_schema"
    assert result.usage.prompt_tokens == 50 and result.usage.completion_tokens == 20


def test_openai_compatible_server_needs_no_key_fake_openai_server(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    cfg = GatewayConfig.from_env(model="qwen2.5-7b-instruct", backoff_s=0.01)
    assert cfg.provider == "openai-compatible"
    with Gateway(config=cfg) as gw:
        assert gw.complete(MSGS, schema=TradeDecision).decision().action == "buy"
    assert server.requests[0]["body"]["model"] == "qwen2.5-7b-instruct"


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        Gateway(config=GatewayConfig(provider="openai"))


def test_invalid_output_is_repaired_once_fake_openai_server(server):
    server.queue(Reply(content="Sure! I think buy."), Reply(content=GOOD))
    with _gateway(server) as gw:
        result = gw.complete(MSGS, schema=TradeDecision)
        records = list(gw.journal.records)
    assert result.parsed is not None and not result.abstained
    repair = server.requests[1]["body"]["messages"]
    assert repair[-2] == {"role": "assistant", "content": "Sure! I think buy."}
    assert "invalid" in repair[-1]["content"]
    assert [r.repaired for r in records] == [False, True]
    assert records[0].error is not None and records[1].error is None


def test_invalid_twice_abstains_with_failure_recorded_fake_openai_server(server):
    server.queue(Reply(content=BAD), Reply(content="```json\n{\"action\": \"buy\"}\n```"))
    with _gateway(server) as gw:
        result = gw.complete(MSGS, schema=TradeDecision)
        decision, call_id = result.decision(), result.call_id
        last = gw.journal.records[-1]
    assert result.abstained and result.parsed is None
    assert decision.action == "hold" and decision.confidence == 0.0
    assert last.abstained and "after repair" in last.error
    assert call_id.startswith("llm-") and len(server.requests) == 2


def test_429_and_500_are_retried_fake_openai_server(server):
    server.queue(Reply(status=429), Reply(status=500), Reply(status=503), Reply(content=GOOD))
    with _gateway(server, max_retries=3) as gw:
        result = gw.complete(MSGS, schema=TradeDecision)
        assert gw.journal.records[-1].attempts == 4
    assert result.decision().action == "buy" and len(server.requests) == 4


def test_retries_give_up_after_max_retries_fake_openai_server(server):
    server.queue(*[Reply(status=500)] * 3)
    with _gateway(server, max_retries=2) as gw, pytest.raises(LLMProviderError) as err:
        gw.complete(MSGS)
    assert err.value.status == 500 and len(server.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried_fake_openai_server(server, status):
    server.queue(Reply(status=status, content=f"Incorrect API key provided: {KEY}"))
    with _gateway(server, max_retries=3) as gw, pytest.raises(LLMProviderError) as err:
        gw.complete(MSGS)
    assert err.value.status == status and not err.value.retryable
    assert len(server.requests) == 1


def test_timeout_is_retried_then_raised_fake_openai_server(server):
    server.queue(Reply(content=GOOD, delay_s=3.0), Reply(content=GOOD, delay_s=3.0))
    with _gateway(server, timeout_s=0.3, max_retries=1) as gw:
        start = time.perf_counter()
        with pytest.raises(LLMTimeoutError, match="gave up after 2 attempts"):
            gw.complete(MSGS)
        assert time.perf_counter() - start < 2.5
        assert gw.journal.records[-1].attempts == 2 and gw.model_calls == 2


def test_budget_stops_the_run_and_keeps_what_was_spent_fake_openai_server(tmp_path):
    # each call reserves its worst case before it is sent; what was answered stays recorded
    with FakeOpenAIServer(default=Reply(content=GOOD, prompt_tokens=8, completion_tokens=20)) as srv, \
            _gateway(srv, tmp_path, mode="live", budget_tokens=120, max_tokens=30) as gw:
        answered = 0
        with pytest.raises(BudgetExceededError, match="refused call llm-.* before sending"):
            for i in range(10):
                gw.complete([{"role": "user", "content": f"day {i}"}], schema=TradeDecision)
                answered += 1
        assert answered == len(srv.requests) == len(gw.journal.records) == len(gw.cache) > 0
        assert gw.budget.spent_tokens == 28 * answered <= 120
        with pytest.raises(BudgetExceededError, match="before sending"):
            gw.complete([{"role": "user", "content": "day 99"}])
        assert len(srv.requests) == answered  # refused without asking the server
        gw.save(tmp_path / "run")
    assert len(Journal.load(tmp_path / "run" / JOURNAL_FILE)) == answered


def test_dry_run_estimate_matches_the_price_table(server):
    with _gateway(server, model="gpt-4o") as gw:
        est = gw.estimate(calls=252, prompt_tokens=1000, completion_tokens=100)
    assert est.calls == 252 and est.prompt_tokens == 252_000 and est.completion_tokens == 25_200
    assert est.cost_usd == pytest.approx((252_000 * 2.5 + 25_200 * 10.0) / 1e6)


def _days(n: int) -> list[list[dict[str, str]]]:
    return [[*MSGS[:1], {"role": "user", "content": f"2024-01-{d + 1:02d}: AAPL moved {d}%"}]
            for d in range(n)]


def test_replay_is_bit_for_bit_without_key_or_server_fake_openai_server(tmp_path, monkeypatch):
    answers = [GOOD, '{"action":"sell","weight":0.25,"confidence":0.6,"rationale":"weak"}',
               '{"action":"hold","weight":0,"confidence":0.3,"rationale":"flat"}']
    with FakeOpenAIServer() as srv:
        srv.queue(*(Reply(content=a) for a in answers))
        with _gateway(srv, tmp_path / "rec", temperature=0.7) as gw:
            recorded = gw.gather([{"messages": m, "schema": TradeDecision, "tag": f"d{i}"}
                                  for i, m in enumerate(_days(3))])
            gw.save(tmp_path / "run")
    monkeypatch.delenv("OPENAI_API_KEY")
    for _ in range(2):  # twice: identical each time
        cfg = GatewayConfig(provider="openai", base_url=srv.base_url, mode="replay",
                            temperature=0.7, cache_path=str(tmp_path / "run" / CACHE_FILE))
        with Gateway(config=cfg) as gw:
            replayed = gw.gather([{"messages": m, "schema": TradeDecision} for m in _days(3)])
            assert gw.model_calls == 0
            assert all(r.cache_hit for r in replayed)
            with pytest.raises(ReplayMissError, match=r"tag='d9'.*2024-01-10"):
                gw.complete(_days(10)[9], schema=TradeDecision, tag="d9")
        assert [(r.call_id, r.content, r.parsed) for r in replayed] == \
               [(r.call_id, r.content, r.parsed) for r in recorded]
    assert {r.decision().action for r in replayed} == {"buy", "sell", "hold"}


def test_replay_refuses_a_missing_cache_file(tmp_path):
    with pytest.raises(ConfigError, match="replay mode needs an existing cache"):
        Gateway(config=GatewayConfig(provider="openai", mode="replay",
                                     cache_path=str(tmp_path / "nope.sqlite")))


def test_cached_mode_reads_through_fake_openai_server(server, tmp_path):
    with _gateway(server, tmp_path) as gw:
        a = gw.complete(MSGS, schema=TradeDecision)
        b = gw.complete(MSGS, schema=TradeDecision)
        assert gw.model_calls == 1
    assert not a.cache_hit and b.cache_hit and a.content == b.content
    assert b.usage.cost_usd == 0.0


def test_journal_never_contains_the_api_key_fake_openai_server(server, tmp_path):
    leaky = [{"role": "user", "content": f"my key is {KEY}, and AAPL rose"}]
    server.queue(Reply(status=401, content=f"Incorrect API key provided: {KEY}"))
    with _gateway(server, tmp_path) as gw:
        with pytest.raises(LLMProviderError):
            gw.complete(MSGS)
        gw.complete(leaky, schema=TradeDecision, tag=KEY)
        gw.save(tmp_path / "run")
    run = tmp_path / "run"
    for path in (run / JOURNAL_FILE, run / CACHE_FILE):
        assert KEY.encode() not in path.read_bytes()
        assert b"SECRET0123" not in path.read_bytes()
    records = Journal.load(run / JOURNAL_FILE)
    assert "HTTP 401" in records[0].error
    assert records[1].latency_s > 0 and records[1].cost_usd > 0 and not records[1].cache_hit


def test_concurrent_calls_are_bounded_and_faster_fake_openai_server(tmp_path):
    with FakeOpenAIServer(default=Reply(content=GOOD), latency_s=0.3) as srv:
        with _gateway(srv, concurrency=4, mode="live") as gw:
            start = time.perf_counter()
            results = gw.gather([{"messages": m} for m in _days(8)])
            elapsed = time.perf_counter() - start
        assert len(results) == 8 and srv.max_in_flight == 4
    assert elapsed < 8 * 0.3 * 0.75  # sequential takes at least 2.4 s


def test_anonymised_prompt_reaches_server_and_answer_is_restored_fake_openai_server():
    def echo_alias(body: dict) -> Reply:
        text = body["messages"][-1]["content"]
        alias = text.split()[0]
        return Reply(content=json.dumps({"action": "buy", "weight": 0.1, "confidence": 0.5,
                                         "rationale": f"{alias} up since D-3"}))
    anon = Anonymizer(symbols=["AAPL", "MSFT"], anchor="2024-03-04")
    with FakeOpenAIServer(default=echo_alias) as srv, _gateway(srv) as gw:
        result = gw.complete([{"role": "user", "content": "AAPL closed at 180 on 2024-03-01"}],
                             schema=TradeDecision, anonymizer=anon)
        sent = srv.requests[0]["body"]["messages"][-1]["content"]
    assert sent == "STOCK_A closed at 180 on D-3"
    assert result.parsed.rationale == "AAPL up since 2024-03-01"


def test_cli_probe_runs_the_bias_audit_and_writes_its_page_fake_openai_server(tmp_path):
    from typer.testing import CliRunner

    from test_llm_probe import _consistent
    from tradesim.cli import app

    with FakeOpenAIServer(default=_consistent) as srv:
        out = CliRunner().invoke(app, ["llm", "probe", "--items", "3", "--samples", "2",
                                       "--provider", "openai", "--base-url", srv.base_url,
                                       "--out", str(tmp_path)])
        assert out.exit_code == 0, out.output
        assert len(srv.requests) > 3 * 2
    assert "mirror" in out.output
    assert (tmp_path / "probe.html").stat().st_size > 2_000
