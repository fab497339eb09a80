"""The hack audit: every canary meets its goal on real SPY data and on the synthetic market."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from tradesim.data.load import load_market
from tradesim.data.view import MarketData
from tradesim.engine.backtest import BacktestConfig
from tradesim.errors import ConfigError
from tradesim.evaluate.audit import CANARIES, Auditor, AuditReport, run_audit
from tradesim.evaluate.canaries import NoiseTrader, lock_limit_moves, shuffled_market
from tradesim.rewards.scores import load_score_config


@pytest.fixture(scope="module")
def spy(shared_data: Path) -> MarketData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the file's known quirks (a missing session) pass
        return load_market(symbols=["SPY"], source="files", quality="warn",
                           source_options={"root": shared_data / "daily" / "spy.us.txt"},
                           start="2013-01-01", end="2016-12-31")


@pytest.fixture(scope="module")
def synthetic() -> MarketData:
    return load_market(symbols=["ALPHA", "BRAVO", "CHARLIE"], source="sample",
                       start="2017-01-01", end="2019-12-31")


@pytest.fixture(scope="module")
def spy_audit(spy: MarketData) -> AuditReport:
    return run_audit(data=spy, noise_seeds=3)


@pytest.fixture(scope="module")
def synthetic_audit(synthetic: MarketData) -> AuditReport:
    return run_audit(data=synthetic, noise_seeds=3)


@pytest.mark.slow
@pytest.mark.parametrize("canary", CANARIES)
def test_every_row_meets_its_goal_on_shared_spy(spy_audit: AuditReport, canary: str) -> None:
    row = next(r for r in spy_audit.rows if r.canary == canary)
    assert row.met, row.reason


@pytest.mark.slow
@pytest.mark.parametrize("canary", CANARIES)
def test_every_row_meets_its_goal_on_synthetic_market(synthetic_audit: AuditReport,
                                                      canary: str) -> None:
    row = next(r for r in synthetic_audit.rows if r.canary == canary)
    assert row.met, row.reason


@pytest.mark.slow
def test_oracle_beats_buy_and_hold_on_raw_and_hardened_score(spy_audit: AuditReport) -> None:
    oracle = next(r for r in spy_audit.rows if r.canary == "oracle")
    bh = spy_audit.references["buy_and_hold"]
    assert oracle.hardened > bh["hardened"] and oracle.raw_return > bh["raw_return"]


@pytest.mark.slow
def test_hacks_score_no_better_than_buy_and_hold(synthetic_audit: AuditReport) -> None:
    by_score = [r for r in synthetic_audit.rows
                if r.canary in ("same_bar_filler", "churner", "ruin_gambler", "self_reporter")]
    assert by_score and all(r.hardened <= r.reference + 1e-12 for r in by_score)


def test_without_a_participation_cap_the_illiquid_exploiter_gets_through(
        synthetic: MarketData) -> None:
    capped = run_audit(data=synthetic, canaries=["illiquid_exploiter"])
    uncapped = run_audit(data=synthetic, costs="zero", canaries=["illiquid_exploiter"])
    assert capped.rows[0].met
    assert not uncapped.rows[0].met and uncapped.rows[0].raw_return > 0


def test_leverage_maximiser_is_stopped_by_a_named_error(synthetic: MarketData) -> None:
    row = run_audit(data=synthetic, canaries=["leverage_maximiser"]).rows[0]
    assert row.met and row.error.startswith("AgentDecisionError")


def test_report_saves_json_csv_html_and_loads_back(synthetic: MarketData, tmp_path: Path) -> None:
    report = run_audit(data=synthetic, canaries=["self_reporter", "oracle"])
    folder = report.save(tmp_path / "audit")
    assert {p.name for p in folder.iterdir()} == {"audit.json", "audit.csv", "audit.html"}
    again = AuditReport.load(folder)
    assert again.rows == report.rows and again.passed == report.passed
    assert json.loads((folder / "audit.json").read_text())["passed"] is report.passed
    page = (folder / "audit.html").read_text()
    assert 'id=verdict' in page and "self_reporter" in page and 'class="chart-spec"' in page


def test_unknown_canary_is_named(synthetic: MarketData) -> None:
    with pytest.raises(ValueError, match="peekr"):
        run_audit(data=synthetic, canaries=["peekr"])


def test_lock_limit_moves_zeroes_volume_on_the_largest_moves(synthetic: MarketData) -> None:
    locked, stamps = lock_limit_moves(synthetic, share=0.02)
    for s in synthetic.symbols:
        before, after = synthetic.full(s), locked.full(s)
        hit = np.isin(after.time, stamps[s])
        assert hit.sum() >= round(0.02 * len(before)) and (after.volume[hit] == 0).all()
        assert np.array_equal(after.volume[~hit], before.volume[~hit])
        assert np.array_equal(after.close, before.close)


def test_shuffled_market_has_no_drift_and_valid_bars(synthetic: MarketData) -> None:
    shuffled = shuffled_market(synthetic, seed=3)
    for s in synthetic.symbols:
        b = shuffled.full(s)
        assert np.isclose(b.close[-1], b.close[0])  # mean log return removed
        assert (b.low <= np.minimum(b.open, b.close)).all()
        assert (b.high >= np.maximum(b.open, b.close)).all()
        assert not np.allclose(b.close, synthetic.full(s).close)


def test_auditor_passes_the_seed_to_the_agent_and_refuses_unknown_overrides(
        synthetic: MarketData) -> None:
    aud = Auditor(config=BacktestConfig.build(), score=load_score_config("balanced"),
                  progress=None)
    first, again, other = (aud.run(NoiseTrader(), synthetic, seed=k) for k in (4, 4, 5))
    assert np.array_equal(first.weights, again.weights)  # same seed, same coin flips
    assert not np.array_equal(first.weights, other.weights)
    with pytest.raises(ConfigError, match="sed"):
        aud.run(NoiseTrader(), synthetic, sed=4)
