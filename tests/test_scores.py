"""Hardened terminal scores: bounded, centred on references, conjunctive, robust to lucky bars."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tradesim.errors import ConfigError
from tradesim.rewards import scores as sc


@pytest.fixture
def market() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(21)
    asset = rng.normal(0.0003, 0.01, 756)
    return {"asset": asset, "agent": 0.6 * asset + rng.normal(0.0004, 0.004, 756)}


def test_level_with_the_references_scores_one_half():
    assert sc.preference_score(value=1.0, references={"bh": 1.0, "ew": 1.0}, scale=0.5) == 0.5
    high = sc.preference_score(value=1e9, references={"bh": 0.3, "teacher": 1.2}, scale=0.5)
    low = sc.preference_score(value=-1e9, references={"bh": 0.3, "teacher": 1.2}, scale=0.5)
    assert 0.0 <= low < 0.01 and 0.99 < high <= 1.0


def test_preference_rises_with_the_metric_and_averages_over_references():
    refs = {"buy_and_hold": 0.4, "equal_weight": 0.6, "teacher": 1.1}
    values = [sc.preference_score(value=v, references=refs, scale=0.5) for v in (0.0, 0.5, 1.0)]
    assert values == sorted(values)
    one = sc.preference_score(value=0.8, references={"t": 1.1}, scale=0.5)
    assert one == pytest.approx(1 / (1 + np.exp(0.6)))


def test_a_single_lucky_bar_does_not_carry_the_score(market):
    refs = sc.reference_values(references={"buy_and_hold": market["asset"]})
    base = sc.hardened_score(returns=market["agent"], references=refs)
    lucky = market["agent"].copy()
    lucky[400] = 3.0  # one +300% bar
    raw_before, raw_after = np.prod(1 + market["agent"]), np.prod(1 + lucky)
    assert raw_after > 3.5 * raw_before
    after = sc.hardened_score(returns=lucky, references=refs)
    assert abs(after.value - base.value) < 0.1
    # the median of 8 blocks moves at most to the next block's value, not by log(4) x 252 / 756
    blocks = [b.mean() * 252 for b in np.array_split(np.log1p(market["agent"]), 8)]
    assert after.metrics["log_growth"] <= sorted(blocks)[5] + 1e-12
    whole = sc.robust_metrics(returns=lucky, config=sc.ScoreConfig(n_blocks=1))["log_growth"]
    assert whole - base.metrics["log_growth"] > 0.4


def test_one_blown_budget_sinks_the_score_in_both_aggregations(market):
    refs = sc.reference_values(references={"buy_and_hold": market["asset"]})
    crash = market["agent"] * 3 + 0.002
    crash[300:330] = -0.03  # ~60% drawdown despite a strong trend
    for aggregate in ("logsigmoid", "min"):
        cfg = sc.ScoreConfig(aggregate=aggregate)
        s = sc.hardened_score(returns=crash, references=refs, config=cfg)
        assert s.preference > 0.8
        assert s.margins["drawdown"] < -5 and s.value < 0.01


def test_churning_is_caught_by_the_turnover_budget(market):
    n = market["agent"].shape[0] + 1
    calm = np.full((n, 1), 0.6)
    churn = np.where(np.arange(n)[:, None] % 2 == 0, 1.0, -1.0)
    refs = {"buy_and_hold": 0.5}
    a = sc.hardened_score(returns=market["agent"], references=refs, weights=calm)
    b = sc.hardened_score(returns=market["agent"], references=refs, weights=churn)
    assert a.margins["turnover"] > 0 > b.margins["turnover"]
    assert b.value < 0.01 * a.value


@settings(max_examples=40, deadline=None)
@given(returns=arrays(np.float64, st.integers(2, 200), elements=st.floats(-0.5, 2.0)),
       ref=st.floats(-10, 10), aggregate=st.sampled_from(["logsigmoid", "min"]))
def test_scores_are_bounded_for_any_returns(returns, ref, aggregate):
    s = sc.hardened_score(returns=returns, references={"r": ref},
                          config=sc.ScoreConfig(aggregate=aggregate))
    assert 0.0 <= s.value <= 1.0 and 0.0 <= s.budget <= 1.0


def test_configs_load_by_preset_name_toml_file_and_mapping(tmp_path, market):
    assert sc.load_score_config("strict").aggregate == "min"
    path = tmp_path / "score.toml"
    path.write_text('[score]\npreset = "strict"\ndrawdown_max = 0.3\n')
    cfg = sc.load_score_config(path)
    assert cfg.drawdown_max == 0.3 and cfg.turnover_max == sc.PRESETS["strict"].turnover_max
    by_file = sc.score_from_config(path, returns=market["agent"], references={"bh": 0.5})
    by_obj = sc.score_from_config(cfg, returns=market["agent"], references={"bh": 0.5})
    assert by_file == by_obj
    assert sc.load_score_config({"metric": "log_growth"}).metric == "log_growth"


def test_bad_configs_name_the_file_and_the_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("drawdown_maxx = 0.3\n")
    with pytest.raises(ConfigError, match="bad.toml.*drawdown_maxx"):
        sc.load_score_config(path)
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        sc.load_score_config({"preset": "nope"})
    with pytest.raises(ConfigError, match="neither a preset"):
        sc.load_score_config("no-such-preset")
    with pytest.raises(ConfigError, match=r"returns\[2\]"):
        sc.hardened_score(returns=np.array([0.0, 0.1, np.nan]), references={"bh": 0.0})
    with pytest.raises(ConfigError, match="at least one reference"):
        sc.preference_score(value=1.0, references={}, scale=1.0)
