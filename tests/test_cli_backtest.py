"""`tradesim backtest`: a run folder with a report, dry runs that cost nothing, exact replays,
and failures as one message with the right exit code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tradesim.cli import app
from tradesim.contracts import BaseAgent, Decision, Observation
from tradesim.engine.backtest import BacktestConfig
from tradesim.engine.record import RunResult
from tradesim.llm.testing import FakeOpenAIServer, Reply

runner = CliRunner()
_RETURNS = re.compile(r"oldest first: (.*)")


def test_backtest_writes_a_loadable_run_folder_with_a_report(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["backtest", "--agent", "sma_cross", "--symbols", "ALPHA,BRAVO",
                                 "--start", "2018-01-01", "--end", "2019-06-30", "--param",
                                 "fast=5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Sharpe" in result.output
    run = RunResult.load(out)
    # resolved whole: the spec's slow and allow_short are recorded next to the override
    assert run.config["agent_params"] == {"fast": 5, "slow": 30, "allow_short": False}
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


def test_dry_run_json_prints_the_plan_and_the_resolved_config(tmp_path: Path) -> None:
    result = runner.invoke(app, ["backtest", "--agent", "sma_cross", "--symbols", "ALPHA,BRAVO",
                                 "--start", "2019-01-01", "--end", "2019-03-31", "--param",
                                 "fast=5", "--dry-run", "--json", "--out", str(tmp_path / "x")])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["symbols"] == ["ALPHA", "BRAVO"] and plan["steps"] > 50
    config = BacktestConfig.build(**plan["config"])  # the printed config is a whole, valid one
    assert config.agent_params == {"fast": 5, "slow": 30, "allow_short": False}
    assert (config.start, config.end, config.benchmark) == ("2019-01-01", "2019-03-31", "MKT")
    assert not (tmp_path / "x").exists()


def test_param_tables_merge_into_the_specs_table() -> None:
    result = runner.invoke(app, ["backtest", "--agent", "llm_analyst", "--symbols", "ALPHA",
                                 "--start", "2019-01-01", "--end", "2019-01-31", "--dry-run",
                                 "--json", "--param", 'gateway={"temperature": 0.2}',
                                 "--param", "gateway.max_tokens=99", "--param", "lookback=10"])
    assert result.exit_code == 0, result.output
    params = json.loads(result.stdout)["config"]["agent_params"]
    gateway = params["gateway"]
    assert (gateway["temperature"], gateway["max_tokens"]) == (0.2, 99)  # the overrides
    assert (gateway["concurrency"], gateway["mode"]) == (4, "cached")  # kept from the spec
    assert (params["lookback"], params["every"]) == (10, 5)  # override; spec's value


def test_replay_reruns_a_saved_run_and_fails_when_it_differs(tmp_path: Path) -> None:
    run, again = tmp_path / "run", tmp_path / "again"
    first = runner.invoke(app, ["backtest", "--agent", "sma_cross", "--symbols", "ALPHA",
                                "--start", "2018-01-01", "--end", "2018-12-31", "--param",
                                "fast=7", "--out", str(run)])
    assert first.exit_code == 0, first.output
    replay = runner.invoke(app, ["backtest", "--replay", str(run), "--out", str(again)])
    assert replay.exit_code == 0, replay.output
    saved, rerun = RunResult.load(run), RunResult.load(again)
    assert rerun.config == saved.config
    assert rerun.equity.equals(saved.equity) and rerun.fills.equals(saved.fills)
    config = json.loads((run / "config.json").read_text())
    config["agent_params"]["fast"] = 3  # no longer the run that was saved
    (run / "config.json").write_text(json.dumps(config))
    assert runner.invoke(app, ["backtest", "--replay", str(run)]).exit_code == 1


def test_replay_refuses_flags_that_would_change_the_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["backtest", "--replay", str(tmp_path), "--agent", "macd"])
    assert result.exit_code == 2
    assert "--agent" in result.output and "Traceback" not in result.output
    not_a_run = runner.invoke(app, ["backtest", "--replay", str(tmp_path)])
    assert not_a_run.exit_code == 2 and str(tmp_path) in not_a_run.output


def _decision(body: dict[str, Any]) -> Reply:
    """A scripted analyst: buy after an up bar, sell after a down one."""
    prompt = body["messages"][-1]["content"]
    up = float(_RETURNS.search(prompt)[1].split()[-1]) > 0
    text = json.dumps({"action": "buy" if up else "sell", "weight": 0.8, "confidence": 0.6,
                       "rationale": "scripted"})
    return Reply(content=text, prompt_tokens=100, completion_tokens=30)


def test_replay_of_an_llm_run_needs_no_server_and_no_key(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_BASE_URL", "TRADESIM_LLM"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-CLIREPLAY0123456789abcdef")
    run = tmp_path / "run"
    with FakeOpenAIServer(default=_decision) as server:
        gateway = json.dumps({"provider": "openai", "base_url": server.base_url,
                              "cache_path": str(tmp_path / "cache.sqlite"), "timeout_s": 5.0})
        first = runner.invoke(app, ["backtest", "--agent", "llm_analyst", "--symbols", "ALPHA",
                                    "--start", "2019-01-02", "--end", "2019-02-13",
                                    "--param", f"gateway={gateway}", "--out", str(run)])
        assert first.exit_code == 0, first.output
        assert server.requests  # the model was asked
    saved = RunResult.load(run)
    assert saved.config["agent_params"]["gateway"]["max_tokens"] == 200  # the spec's, merged
    monkeypatch.delenv("OPENAI_API_KEY")
    replay = runner.invoke(app, ["backtest", "--replay", str(run), "--out", str(tmp_path / "r")])
    assert replay.exit_code == 0, replay.output
    assert RunResult.load(tmp_path / "r").equity.equals(saved.equity)


class Broken(BaseAgent):
    """An agent that fails on its first decision."""

    name = "broken"

    def decide(self, obs: Observation) -> Decision:
        raise RuntimeError("no idea what to do")


class ShortEverything(BaseAgent):
    """Short the whole universe at full weight, every bar."""

    name = "short_everything"

    def decide(self, obs: Observation) -> Decision:
        return Decision(weights={s: -1.0 / len(obs.universe) for s in obs.universe})


def test_a_failed_run_exits_1_with_one_message_and_a_partial_record(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["backtest", "--agent", f"{__name__}:Broken", "--symbols",
                                 "ALPHA", "--start", "2019-01-02", "--end", "2019-02-13",
                                 "--out", str(out)])
    assert result.exit_code == 1
    assert "no idea what to do" in result.output and "Traceback" not in result.output
    assert RunResult.load(out).partial


def test_a_ruined_run_says_so_and_exits_1(tmp_path: Path) -> None:
    bars = tmp_path / "acme.csv"  # the price triples overnight under a full short
    rows = [f"2019-01-{d:02d},10,10.2,9.8,10,100000" for d in (2, 3, 4, 7)]
    rows += [f"2019-01-{d:02d},30,30.5,29.5,30,100000" for d in (8, 9, 10)]
    bars.write_text("Date,Open,High,Low,Close,Volume\n" + "\n".join(rows) + "\n")
    result = runner.invoke(app, ["backtest", "--agent", f"{__name__}:ShortEverything",
                                 "--data", str(bars), "--allow-short", "--quality", "warn",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert "ruined" in result.output and "Traceback" not in result.output


def test_isolate_runs_the_agent_in_its_own_process_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["backtest", "--agent", "sma_cross", "--symbols", "ALPHA", "--start", "2018-01-01",
            "--end", "2018-06-30"]
    result = runner.invoke(app, [*args, "--isolate", "--sandbox", "process", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "isolation" in result.output and "process" in result.output
    run = RunResult.load(out)
    assert run.meta["isolation"] == "process"
    plain = runner.invoke(app, [*args, "--out", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    assert RunResult.load(tmp_path / "plain").meta["isolation"] == "in-process"
    assert RunResult.load(tmp_path / "plain").final_equity == run.final_equity
    bad = runner.invoke(app, [*args, "--sandbox", "process", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "--isolate" in bad.output
