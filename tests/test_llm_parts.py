"""The gateway's parts on their own: cache keys, budget, schema parsing, leakage, redaction, config."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradesim.errors import BudgetExceededError, ConfigError
from tradesim.llm.budget import Budget, PriceTable, Usage, estimate
from tradesim.llm.cache import CachedAnswer, LLMCache, cache_key
from tradesim.llm.gateway import GatewayConfig
from tradesim.llm.journal import REDACTED, redact
from tradesim.llm.leakage import Anonymizer, leakage_flags
from tradesim.llm.schema import TradeDecision, parse, response_format

BASE = {"provider": "openai", "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "AAPL?"}],
        "params": {"temperature": 0.0, "max_tokens": 64, "seed": 0}, "schema": None}


@pytest.mark.parametrize("field, value", [
    ("provider", "openai-compatible"), ("model", "gpt-4o"),
    ("messages", [{"role": "user", "content": "AAPL!"}]),
    ("params", {"temperature": 0.1, "max_tokens": 64, "seed": 0}),
    ("schema", {"type": "object"}),
])
def test_cache_key_changes_with_everything_that_decides_the_answer(field, value):
    assert cache_key(**{**BASE, field: value}) != cache_key(**BASE)


def test_cache_key_ignores_dict_order():
    reordered = {**BASE, "params": {"seed": 0, "max_tokens": 64, "temperature": 0.0}}
    assert cache_key(**reordered) == cache_key(**BASE)


def test_cache_round_trip_and_copy(tmp_path):
    cache = LLMCache(tmp_path / "c.sqlite")
    answer = CachedAnswer('{"a": "ü"}', 10, 3, "stop")
    cache.put("k", provider="openai", model="m", request={}, answer=answer)
    copy = LLMCache(cache.copy_to(tmp_path / "run" / "c.sqlite"))
    assert copy.get("k") == answer and copy.get("other") is None and len(copy) == 1


def test_price_table_matches_dated_snapshots_and_overrides():
    table = PriceTable({"my-model": (1.0, 2.0)})
    assert table.cost("gpt-4o-mini-2024-07-18", 1_000_000, 0) == pytest.approx(0.15)
    assert table.cost("openai/gpt-4o", 0, 1_000_000) == pytest.approx(10.0)
    assert table.cost("my-model", 500_000, 500_000) == pytest.approx(1.5)
    assert table.cost("unknown-model", 10**6, 10**6) == 0.0 and not table.knows("unknown-model")


def test_budget_raises_on_the_call_that_goes_over_and_before_the_next():
    budget = Budget(max_tokens=100)
    budget.charge(Usage(40, 10, 0.0), "c1")
    with pytest.raises(BudgetExceededError, match="after call c2"):
        budget.charge(Usage(50, 10, 0.0), "c2")
    with pytest.raises(BudgetExceededError, match="before call c3"):
        budget.check("c3")
    assert budget.spent_tokens == 110 and budget.calls == 2


def test_estimate_is_calls_times_tokens_times_price():
    est = estimate(model="gpt-4.1-mini", calls=10, prompt_tokens=2000, completion_tokens=200)
    assert est.cost_usd == pytest.approx(10 * (2000 * 0.4 + 200 * 1.6) / 1e6)


def test_parse_accepts_fenced_json_and_names_bad_fields():
    ok, err = parse('```json\n{"action":"sell","weight":0.2,"confidence":0.9,"rationale":"x"}\n```',
                    TradeDecision)
    assert err is None and ok.action == "sell"
    bad, err = parse('{"action":"sell","weight":2,"confidence":0.9,"rationale":"x"}', TradeDecision)
    assert bad is None and "weight" in err
    assert parse("no json here", TradeDecision)[1].startswith("no JSON object")


def test_response_format_is_strict_and_closed():
    schema = response_format(TradeDecision)["json_schema"]["schema"]
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(schema["properties"])


def test_trade_decision_signed_weight_and_abstain():
    assert TradeDecision(action="sell", weight=0.3, confidence=1, rationale="").signed_weight(0.1) == -0.3
    held = TradeDecision.abstain("bad json")
    assert held.signed_weight(0.25) == 0.25 and held.confidence == 0.0


def test_leakage_flags_by_cutoff():
    assert leakage_flags("gpt-4o-mini", "2022-01-01", "2023-01-01")[0].level == "full"
    assert leakage_flags("gpt-4o-mini-2024-07-18", "2023-06-01", "2024-06-01")[0].level == "partial"
    assert leakage_flags("gpt-4o", np.datetime64("2024-01-02"), "2024-12-31") == []
    assert leakage_flags("someone/mystery-7b", "2020-01-01", "2021-01-01")[0].level == "unknown"


_TICKERS = st.lists(st.from_regex(r"[A-Z]{2,5}", fullmatch=True), min_size=1, max_size=5, unique=True)


@settings(max_examples=60, deadline=None)
@given(tickers=_TICKERS, offsets=st.lists(st.integers(-400, 400), min_size=1, max_size=4))
def test_anonymizer_hides_tickers_and_dates_and_round_trips(tickers, offsets):
    anchor = np.datetime64("2024-03-04")
    dates = [str(anchor + np.timedelta64(o, "D")) for o in offsets]
    text = " ".join(f"{t} closed up on {d}." for t, d in zip(tickers * 4, dates, strict=False))
    anon = Anonymizer(symbols=tickers, anchor=anchor)
    hidden = anon.anonymize(text)
    assert not any(d in hidden for d in dates)
    assert all(f" {t} " not in f" {hidden} " for t in tickers if not t.startswith("STOCK"))
    assert anon.restore(hidden) == text


def test_anonymizer_aliases_are_consistent_and_names_map_too():
    anon = Anonymizer(symbols=["MSFT", "AAPL"], anchor="2024-03-04", names={"AAPL": "Apple"})
    assert anon.anonymize("Apple (AAPL) beat MSFT on 2024-03-05") == \
        "STOCK_A (STOCK_A) beat STOCK_B on D+1"


def test_redact_removes_known_secrets_and_key_shapes(monkeypatch):
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "tok-abcdef-123456")
    text = "keys: sk-proj-AbCdEf0123456789 and tok-abcdef-123456 and Bearer abc.def.ghi.jkl"
    clean = redact({"a": [text]}, secrets=["nothing-here"])
    assert clean == {"a": [f"keys: {REDACTED} and {REDACTED} and {REDACTED}"]}


@pytest.mark.parametrize("env, provider, model", [
    ({}, "local", "smollm2-135m-instruct"),
    ({"OPENAI_API_KEY": "sk-x"}, "openai", "gpt-4o-mini"),
    ({"OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": "http://h/v1"}, "openai-compatible", "default"),
    ({"TRADESIM_LLM": "openai:gpt-4.1"}, "openai", "gpt-4.1"),
    ({"TRADESIM_LLM": "local:/models/qwen.gguf"}, "local", "qwen"),
])
def test_config_from_environment(env, provider, model):
    cfg = GatewayConfig.from_env(env)
    assert (cfg.provider, cfg.model_name) == (provider, model)


def test_config_rejects_unknown_provider():
    with pytest.raises(ConfigError, match="TRADESIM_LLM='claude'"):
        GatewayConfig.from_env({"TRADESIM_LLM": "claude"})


def test_anonymizer_covers_company_names_date_formats_years_and_lower_case_tickers():
    from tradesim.llm.leakage import COMPANY_NAMES, register_company_names

    register_company_names({"ACME": ["Acme Rockets Ltd", "Acme"]})
    try:
        anon = Anonymizer(symbols=["AAPL", "ACME"], anchor="2019-03-04")
        text = ("Apple Inc. and acme: aapl rose on March 3, 2019, 03/03/2019 and 3 Mar 2019 "
                "after Acme Rockets Ltd lost 2.5% in 2018; all is well")
        hidden = anon.anonymize(text)
    finally:
        COMPANY_NAMES.pop("ACME")
    assert hidden == ("STOCK_A and STOCK_B: STOCK_A rose on D-1, D-1 and D-1 after STOCK_B "
                      "lost 2.5% in Y-1; all is well")
    assert anon.restore(hidden).count("2019-03-03") == 3 and "in 2018" in anon.restore(hidden)


def test_one_device_choice_for_torch_and_llama():
    from tradesim.device import pick_device
    from tradesim.llm.local import gpu_layers

    assert pick_device("cpu").type == "cpu" and gpu_layers("cpu") == 0
    assert gpu_layers("auto") == (0 if pick_device("auto").type == "cpu" else -1)
    with pytest.raises(ConfigError, match="not a torch device"):
        pick_device("tpu-9000")
