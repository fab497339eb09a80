"""Baselines: the vectorised target_weights equals decide() stepped through point-in-time views."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradesim.agents.baselines import (
    BuyAndHold,
    DualThrust,
    EqualWeight,
    Macd,
    SmaCross,
    TimeSeriesMomentum,
)
from tradesim.agents.registry import BUILTINS, available_agents, load_agent, spec_dirs
from tradesim.contracts import Agent, Decision, Observation, Portfolio
from tradesim.data.bars import Bars
from tradesim.data.view import MarketData
from tradesim.errors import ConfigError

FLAT = Portfolio(cash=1.0, positions={}, prices={}, equity=1.0)


def _daily(shared_data: Path, symbol: str, start: str, end: str) -> Bars:
    frame = pd.read_csv(shared_data / "daily" / f"{symbol}.us.txt", parse_dates=["Date"])
    frame = frame[(frame["Date"] >= start) & (frame["Date"] <= end)]
    frame.index = pd.DatetimeIndex(frame["Date"]).tz_localize("UTC") + pd.Timedelta(hours=21)
    return Bars.from_frame(frame.rename(columns=str.lower), symbol=symbol.upper(), interval="1d",
                           adjusted=True, source="test-csv")


def _minute(shared_data: Path, days: int) -> Bars:
    frame = pd.read_csv(shared_data / "intraday" / "nt-spy-minute-2011.csv", sep=";",
                        header=None, names=["time", "open", "high", "low", "close", "volume"])
    frame.index = pd.DatetimeIndex(pd.to_datetime(frame.pop("time"), format="%Y%m%d %H%M%S",
                                                  utc=True))
    frame = frame[frame.index < frame.index[0].normalize() + pd.Timedelta(days=days)]
    return Bars.from_frame(frame, symbol="SPY", interval="1m", adjusted=False, source="test-csv")


@pytest.fixture(scope="module")
def daily_data(shared_data: Path) -> MarketData:
    # QQQ starts before SPY in the files; GLD starts mid-window: symbols join at different times
    return MarketData({"SPY": _daily(shared_data, "spy", "2004-01-01", "2007-12-31"),
                       "QQQ": _daily(shared_data, "qqq", "2004-01-01", "2007-12-31"),
                       "GLD": _daily(shared_data, "gld", "2004-01-01", "2007-12-31")})


def _stepped(agent: Agent, data: MarketData) -> pd.DataFrame:
    """decide() at every stamp of the timeline on a flat book; absent symbol = NaN (hold)."""
    timeline = data.timeline()
    rows = []
    for step, t in enumerate(timeline):
        obs = Observation(time=t, step=step, universe=data.symbols, market=data.as_of(t),
                          portfolio=FLAT)
        decision = agent.decide(obs)
        assert isinstance(decision, Decision) and not decision.bad_weights()
        missing = 0.0 if decision.rebalance_missing else np.nan
        rows.append([decision.weights.get(s, missing) for s in data.symbols])
    index = pd.DatetimeIndex(timeline, name="time").tz_localize("UTC")
    return pd.DataFrame(rows, index=index, columns=list(data.symbols))


@pytest.mark.parametrize("make", [
    lambda: SmaCross(fast=10, slow=30),
    lambda: SmaCross(fast=5, slow=20, allow_short=True),
    lambda: Macd(),
    lambda: Macd(fast=5, slow=15, signal=4, allow_short=True),
    lambda: TimeSeriesMomentum(lookback=60, vol_target=0.1, vol_window=20),
    lambda: TimeSeriesMomentum(lookback=20, vol_target=None, allow_short=False),
    lambda: BuyAndHold(),
    lambda: EqualWeight(every=21),
], ids=["sma", "sma_short", "macd", "macd_short", "tsmom_vol", "tsmom_sign", "bnh", "ew"])
def test_target_weights_equal_stepped_decisions(make, daily_data: MarketData) -> None:
    stepped = _stepped(make(), daily_data)
    fast = make().target_weights(daily_data)
    pd.testing.assert_frame_equal(fast, stepped, check_exact=False, rtol=1e-12, atol=1e-15,
                                  check_names=False, check_freq=False, check_index_type=False)
    assert np.isfinite(fast.to_numpy()).any()


def test_dual_thrust_equals_stepped_decisions_on_minute_bars(shared_data: Path) -> None:
    data = MarketData({"SPY": _minute(shared_data, days=8)})
    for agent in (DualThrust(k1=0.3, k2=0.3, lookback_days=2),
                  DualThrust(k1=0.2, k2=0.4, lookback_days=1, flat_at_close=False,
                             allow_short=False)):
        fast = agent.target_weights(data)
        stepped = _stepped(agent, data)
        pd.testing.assert_frame_equal(fast, stepped, check_names=False, check_freq=False,
                                      check_index_type=False)
        assert (fast["SPY"].abs() == 1).any()  # it did trade


def test_dual_thrust_uses_completed_days_and_goes_flat_at_close() -> None:
    # day 1 range: HH-LC = 110-100 = 10, HC-LL = 105-95 = 10 -> range 10; day 2 opens at 100
    index = pd.DatetimeIndex(["2021-03-01 15:00", "2021-03-01 16:00", "2021-03-02 15:00",
                              "2021-03-02 16:00", "2021-03-02 20:57", "2021-03-02 20:58"],
                             tz="UTC")
    bars = Bars.from_frame(pd.DataFrame({
        "open": [100, 104, 100, 101, 106, 106], "high": [110, 106, 101, 107, 107, 107],
        "low": [95, 100, 99, 100, 105, 105], "close": [104, 100, 100.5, 106, 106, 106],
        "volume": 1.0}, index=index), symbol="X", interval="1h", adjusted=False, source="t")
    weights = DualThrust(k1=0.5, k2=0.5, lookback_days=1, bars_per_day=24,
                         close_time="15:58").target_weights(MarketData({"X": bars}))["X"]
    # day 1 has no completed day before it; 100.5 < 105 holds flat; 106 > 105 goes long;
    # 15:57 New York (20:57 UTC, EST) still long; 15:58 flat at the close
    assert weights.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("agent", [SmaCross(fast=3, slow=8), Macd(fast=3, slow=6, signal=2),
                                   TimeSeriesMomentum(lookback=10, vol_window=5)],
                         ids=["sma", "macd", "tsmom"])
def test_decision_depends_only_on_the_lookback_window(agent, daily_data: MarketData) -> None:
    t = daily_data.timeline()[-40]
    full = daily_data.as_of(t)
    window = MarketData({s: full.bars(s, lookback=agent.lookback) for s in daily_data.symbols})
    decisions = [copy.deepcopy(agent).decide(Observation(time=t, step=0, universe=daily_data.symbols,
                                                         market=market, portfolio=FLAT))
                 for market in (full, window.as_of(t))]
    assert decisions[0].weights == decisions[1].weights
    assert any(w != 0 for w in decisions[0].weights.values())


def test_stateful_baselines_save_and_resume(daily_data: MarketData) -> None:
    timeline = daily_data.timeline()
    first, resumed = EqualWeight(every=5), EqualWeight(every=5)
    for step, t in enumerate(timeline[:12]):
        obs = Observation(time=t, step=step, universe=daily_data.symbols,
                          market=daily_data.as_of(t), portfolio=FLAT)
        if step == 7:
            resumed.load_state(first.state())
        expected = first.decide(obs)
        if step >= 7:
            assert resumed.decide(obs) == expected


@pytest.mark.parametrize("make, name", [
    (lambda: SmaCross(fast=20, slow=10), "slow"),
    (lambda: Macd(signal=0), "signal"),
    (lambda: TimeSeriesMomentum(vol_target=-1.0), "vol_target"),
    (lambda: EqualWeight(every=0), "every"),
    (lambda: DualThrust(timezone="Mars/Olympus"), "timezone"),
])
def test_bad_params_name_the_parameter(make, name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        make()


# --- registry --------------------------------------------------------------------------------


_REQUIRED_PARAM = {"qtnet": "checkpoint"}  # trained agents cannot load without their weights


def test_every_builtin_and_shipped_spec_loads() -> None:
    for name in BUILTINS:
        if name in _REQUIRED_PARAM:
            with pytest.raises(ConfigError, match=_REQUIRED_PARAM[name]):
                load_agent(name)
            continue
        assert isinstance(load_agent(name), Agent)
        assert (spec_dirs()[-1] / f"{name}.toml").is_file()
    assert set(BUILTINS) <= set(available_agents())
    for spec in spec_dirs()[-1].glob("*.toml"):
        assert isinstance(load_agent(str(spec)), Agent)


def test_spec_params_and_overrides() -> None:
    agent = load_agent("sma_cross", slow=50)
    assert (agent.fast, agent.slow) == (10, 50)  # fast from agents/sma_cross.toml
    assert load_agent("tradesim.agents.baselines:Macd", fast=5).fast == 5


def test_user_agent_plugs_in_by_module_path_and_toml(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_agents.py").write_text(
        "from tradesim.contracts import BaseAgent, Decision\n"
        "class Contrarian(BaseAgent):\n"
        "    def __init__(self, *, size: float = 1.0) -> None:\n"
        "        self.size = size\n"
        "    def decide(self, obs):\n"
        "        return Decision(weights={s: -self.size for s in obs.universe})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_agent("my_agents:Contrarian", size=0.5).size == 0.5
    spec = tmp_path / "contra.toml"
    spec.write_text('[agent]\nclass = "my_agents:Contrarian"\nname = "contra"\n'
                    '[agent.params]\nsize = 0.25\n')
    agent = load_agent(str(spec))
    assert (agent.name, agent.size) == ("contra", 0.25)


def test_registry_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="available: .*sma_cross"):
        load_agent("sma_crosss")
    with pytest.raises(ConfigError, match="windw"):
        load_agent("sma_cross", windw=3)
    with pytest.raises(ConfigError, match="slow"):
        load_agent("sma_cross", slow=5)
    with pytest.raises(ConfigError, match="no_such_module"):
        load_agent("no_such_module:Agent")
    with pytest.raises(ConfigError, match="has no 'Nope'"):
        load_agent("tradesim.agents.baselines:Nope")
    bad = tmp_path / "bad.toml"
    bad.write_text('[agent]\nparams = {fast = 1}\n')
    with pytest.raises(ConfigError, match="class"):
        load_agent(str(bad))
    with pytest.raises(ConfigError, match="does not exist"):
        load_agent(str(tmp_path / "missing.toml"))


def test_momentum_keeps_the_book_within_the_default_account_leverage() -> None:
    """Per-symbol sizes add up past 1x on five symbols; the agent scales the book to max_gross
    (the default account's 1x) instead of sending weights the session refuses."""
    from tradesim.data.load import load_market
    from tradesim.engine.backtest import BacktestConfig, simulate

    symbols = ("ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO")
    data = load_market(symbols=list(symbols), source="sample")
    run = simulate(config=BacktestConfig.build(symbols=symbols, agent="momentum"),
                   agent=load_agent("momentum"), data=data)
    assert not run.meta["partial"] and len(run.fills) > 100
    assert run.equity["gross_exposure"].max() <= 1.0 + 1e-6
    raw = load_agent("momentum", max_gross=10.0).target_weights(data).abs().sum(axis=1)
    capped = load_agent("momentum").target_weights(data).abs().sum(axis=1)
    assert raw.max() > 1.0 and capped.max() <= 1.0 + 1e-12
