"""`tradesim backtest`: the main job writes a run folder with a report; dry runs cost nothing."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tradesim.cli import app
from tradesim.engine.record import RunResult

runner = CliRunner()


def test_backtest_writes_a_loadable_run_folder_with_a_report(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["backtest", "--agent", "sma_cross", "--symbols", "ALPHA,BRAVO",
                                 "--start", "2018-01-01", "--end", "2019-06-30", "--param",
                                 "fast=5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Sharpe" in result.output
    run = RunResult.load(out)
    assert run.config["agent_params"] == {"fast": 5}
    assert list(run.weights.columns) == ["ALPHA", "BRAVO"]
    assert run.config["benchmark"] == "MKT"
    assert (out / "report.html").stat().st_size > 10_000


def test_dry_run_estimates_llm_calls_without_running(tmp_path: Path) -> None:
    result = runner.invoke(app, ["backtest", "--agent", "llm_analyst", "--symbols", "ALPHA",
                                 "--start", "2019-01-01", "--end", "2019-01-31", "--dry-run",
                                 "--out", str(tmp_path / "never")])
    assert result.exit_code == 0, result.output
    assert "calls" in result.output
    assert not (tmp_path / "never").exists()


def test_bad_input_is_one_clear_error_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["backtest", "--symbols", "NOPE", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "NOPE" in result.output


def test_a_config_file_decides_and_only_typed_flags_override_it(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('agent = "macd"\nsymbols = ["ALPHA"]\nfill = "close"\ncosts = "zero"\n'
                      'max_leverage = 1.5\nstart = "2016-01-01"\nend = "2016-12-31"\n')
    out = tmp_path / "run"
    result = runner.invoke(app, ["backtest", "--config", str(config), "--end", "2016-06-30",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = RunResult.load(out).config
    assert (saved["agent"], saved["fill"], saved["max_leverage"]) == ("macd", "close", 1.5)
    assert saved["costs"]["commission_bps"] == 0.0
    assert (saved["start"], saved["end"]) == ("2016-01-01", "2016-06-30")  # the typed flag wins
