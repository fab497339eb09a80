"""Executors: the local process pool and Ray reproduce the sequential run exactly."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tradesim.agents.qtnet.env import EnvConfig
from tradesim.agents.qtnet.train import TrainConfig
from tradesim.data.load import load_market
from tradesim.data.view import MarketData
from tradesim.engine.backtest import BacktestConfig
from tradesim.errors import ConfigError
from tradesim.evaluate.executor import (
    LocalExecutor,
    RayExecutor,
    SequentialExecutor,
    check_executor,
    make_executor,
)
from tradesim.evaluate.leaderboard import Leaderboard, evaluate_agents
from tradesim.evaluate.oos import OOSReport, evaluate_out_of_sample
from tradesim.evaluate.sweep import SweepResult, sweep

AGENTS = ["sma_cross", "buy_and_hold"]
GRID = {"fast": [5, 20], "slow": [60, 120]}
_TINY = TrainConfig(env=EnvConfig(n_envs=4, episode_len=8, warmup=30), iterations=2, updates=1,
                    batch_size=4, hidden=8, eval_every=1)


@pytest.fixture(scope="module")
def sample() -> MarketData:
    return load_market(symbols=["ALPHA", "BRAVO"], source="sample", start="2017-01-01",
                       end="2018-12-31")


def _board(data: MarketData, executor: Any, progress: list[str] | None = None) -> Leaderboard:
    return evaluate_agents(agents=AGENTS, data=data, seeds=2, windows=2, n_boot=100,
                           executor=executor, progress=None if progress is None
                           else progress.append)


def _sweep(data: MarketData, executor: Any) -> SweepResult:
    config = BacktestConfig.build(agent="sma_cross", symbols=["ALPHA", "BRAVO"],
                                  start="2018-01-01")
    return sweep(agent="sma_cross", grid=GRID, data=data, config=config, executor=executor)


def _oos(executor: Any, out: Path) -> OOSReport:
    alpha = load_market(symbols=["ALPHA"], source="sample", start="2016-01-01",
                        end="2018-12-31")
    return evaluate_out_of_sample(market=alpha, split="2018-06-01", config=_TINY, seeds=(0, 1),
                                  out_dir=out, n_boot=100, executor=executor)


@pytest.fixture(scope="module")
def sequential(sample: MarketData) -> Leaderboard:
    return _board(sample, "sequential")


@pytest.fixture(scope="module")
def sequential_sweep(sample: MarketData) -> SweepResult:
    return _sweep(sample, "sequential")


@pytest.fixture(scope="module")
def sequential_oos(tmp_path_factory: pytest.TempPathFactory) -> OOSReport:
    return _oos("sequential", tmp_path_factory.mktemp("seq"))


def _same_board(a: Leaderboard, b: Leaderboard) -> None:
    pd.testing.assert_frame_equal(a.table, b.table, check_exact=True)
    pd.testing.assert_frame_equal(a.runs, b.runs, check_exact=True)
    pd.testing.assert_frame_equal(a.equity, b.equity, check_exact=True)
    differ = {"registry", "executor"}  # a temporary registry per call; the executor's name
    assert {k: v for k, v in a.meta.items() if k not in differ} == {
        k: v for k, v in b.meta.items() if k not in differ}


def _same_oos(a: OOSReport, b: OOSReport) -> None:
    pd.testing.assert_frame_equal(a.runs, b.runs, check_exact=True)
    pd.testing.assert_frame_equal(a.summary, b.summary, check_exact=True)
    pd.testing.assert_frame_equal(a.equity, b.equity, check_exact=True)


def test_the_sequential_board_runs_every_agent_seed_and_window(sequential: Leaderboard) -> None:
    runs = sequential.runs
    assert len(runs) == len(AGENTS) * 2 * 2 and set(runs["window"]) == {0, 1}
    assert (runs["error"] == "").all()
    assert (sequential.table["lookahead"] == "clean").all()
    assert sequential.meta["executor"] == "sequential" and len(sequential.meta["windows"]) == 2
    first, second = sequential.meta["windows"]
    assert first[1] < second[0]  # consecutive, not overlapping


def test_local_pool_gives_the_sequential_leaderboard_exactly(sample: MarketData,
                                                             sequential: Leaderboard) -> None:
    seen: list[str] = []
    with LocalExecutor(2) as ex:
        board = _board(sample, ex, seen)
    _same_board(sequential, board)
    assert board.meta["executor"] == "local"
    # two references here, then every run and look-ahead check as it finished in a worker
    assert sorted(seen[2:]) == sorted([*(a for a in AGENTS for _ in range(4)),
                                       *(f"look-ahead check {a}" for a in AGENTS)])


def test_local_pool_gives_the_sequential_sweep_exactly(sample: MarketData,
                                                       sequential_sweep: SweepResult) -> None:
    result = _sweep(sample, "local:2")
    pd.testing.assert_frame_equal(sequential_sweep.table, result.table, check_exact=True)
    pd.testing.assert_frame_equal(sequential_sweep.returns, result.returns, check_exact=True)
    table = result.table
    assert table[["fast", "slow"]].values.tolist() == [[5, 60], [5, 120], [20, 60], [20, 120]]
    assert (table["engine"] == "fastpath").all() and (table["error"] == "").all()
    assert result.best() in [dict(zip(("fast", "slow"), p, strict=True))
                             for p in table[["fast", "slow"]].values.tolist()]


def test_local_pool_gives_the_sequential_qtnet_seeds_exactly(sequential_oos: OOSReport,
                                                            tmp_path: Path) -> None:
    report = _oos("local:2", tmp_path)
    _same_oos(sequential_oos, report)
    assert (tmp_path / "seed1" / "best.pt").is_file()  # written by a worker, where asked


def test_a_sweep_records_every_configuration_in_grid_order(sample: MarketData,
                                                           tmp_path: Path) -> None:
    from tradesim.rewards.stats import TrialRegistry

    path = tmp_path / "trials.sqlite"
    config = BacktestConfig.build(agent="sma_cross", symbols=["ALPHA"], start="2018-01-01")
    result = sweep(agent="sma_cross", grid=[{"fast": 5}, {"fast": 10}, {"fast": 20}],
                   data=sample, config=config, registry=path, experiment="s", fast=False)
    assert TrialRegistry(path).n_trials("s") == 3
    assert (result.table["engine"] == "event loop").all()
    assert list(result.returns.columns) == list(result.table["label"])


@pytest.mark.parametrize(("spec", "fix"), [
    ("threads", "use one of local"), ("local:0", "N >= 1"), ("local:x", "N >= 1"),
    ("ray://", "ray://HEAD:10001"), ("ray:", "ray:auto"),
])
def test_a_bad_executor_spec_names_the_accepted_forms(spec: str, fix: str) -> None:
    with pytest.raises(ConfigError, match=f"--executor '{spec}'.*{fix.split()[0]}"):
        make_executor(spec)


def test_executor_specs_name_their_executors() -> None:
    assert isinstance(make_executor("sequential"), SequentialExecutor)
    assert isinstance(make_executor(None), LocalExecutor)
    assert make_executor("local:3").workers == 3
    assert check_executor("ray://head:10001") == ("ray", "ray://head:10001")


def test_ray_missing_simulated_by_hiding_the_module_gives_the_install_hint(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    for spec in ("ray", "ray://head:10001"):
        with pytest.raises(ConfigError, match=r"pip install 'tradesim\[ray\]'"):
            make_executor(spec)
    with pytest.raises(ConfigError, match=r"pip install 'tradesim\[ray\]'"):
        RayExecutor()


def test_ray_missing_simulated_cli_exits_2_with_the_hint_before_loading_data(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tradesim.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)
    result = CliRunner().invoke(app, ["evaluate", "--executor", "ray", "--data", "nowhere/",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "tradesim[ray]" in result.output and "nowhere" not in result.output


def test_cli_evaluate_names_the_executor_values_in_its_help() -> None:
    from typer.testing import CliRunner

    from tradesim.cli import app

    for command in (["evaluate"], ["oos"]):
        text = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"}).output
        assert "--executor" in text and "ray://HOST:PORT" in text and "local:N" in text


# --- a real local Ray instance (skipped where Ray is not installed) ---------------------------

@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def test_ray_gives_the_sequential_leaderboard_sweep_and_seeds_exactly(
        ray_instance: Any, sample: MarketData, sequential: Leaderboard,
        sequential_sweep: SweepResult, sequential_oos: OOSReport, tmp_path: Path) -> None:
    with make_executor("ray") as ex:  # joins the running instance and leaves it up
        assert isinstance(ex, RayExecutor) and ex.workers == 2
        _same_board(sequential, _board(sample, ex))
        result = _sweep(sample, ex)
        _same_oos(sequential_oos, _oos(ex, tmp_path))
    pd.testing.assert_frame_equal(sequential_sweep.table, result.table, check_exact=True)
    pd.testing.assert_frame_equal(sequential_sweep.returns, result.returns, check_exact=True)
    assert ray_instance.is_initialized()
