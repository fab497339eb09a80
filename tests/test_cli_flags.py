"""One flag vocabulary across every command, and errors that reach users as one message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tradesim.cli import app
from tradesim.cli._common import parse_params, parse_symbols, resolve_data
from tradesim.errors import ConfigError

runner = CliRunner()
# commands that read market data: each takes the shared data flags
_DATA_COMMANDS = ("data", "data fetch", "data verify", "backtest", "audit", "evaluate", "oos",
                  "train qtnet")
_SHARED = ("--symbols", "--data", "--interval")
_WINDOW = ("--start", "--end")  # all but data verify, which checks the whole history


def _commands() -> dict[str, Any]:
    """Every command of the app by its path, e.g. ``data verify`` (typer ships its own click:
    groups are told by their ``commands``)."""
    out: dict[str, Any] = {}

    def walk(cmd: Any, path: str) -> None:
        out[path] = cmd
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    return out


def test_every_data_command_speaks_the_same_flags() -> None:
    commands = _commands()
    seen: dict[str, tuple] = {}
    for path in _DATA_COMMANDS:
        options = {o: p for p in commands[path].params for o in p.opts}
        for flag in (*_SHARED, *(_WINDOW if path != "data verify" else ())):
            assert flag in options, f"{path} lacks {flag}"
            param = options[flag]
            shape = (param.multiple, param.bare_type(),
                     param.help if flag == "--symbols" else "")  # the others say their defaults
            assert seen.setdefault(flag, shape) == shape, (path, flag)
    for path, command in commands.items():
        flags = {o for p in command.params for o in p.opts}
        assert not flags & {"--source", "--path", "--symbol"}, path  # the old vocabulary


def test_symbols_comma_separated_equals_the_flag_repeated() -> None:
    base = ["backtest", "--start", "2019-01-01", "--end", "2019-02-28", "--dry-run", "--json"]
    joined = runner.invoke(app, [*base, "--symbols", "ALPHA,BRAVO"])
    repeated = runner.invoke(app, [*base, "--symbols", "ALPHA", "--symbols", "BRAVO"])
    assert joined.exit_code == repeated.exit_code == 0, joined.output + repeated.output
    assert json.loads(joined.stdout) == json.loads(repeated.stdout)
    assert json.loads(joined.stdout)["symbols"] == ["ALPHA", "BRAVO"]
    assert parse_symbols(["A,B", "C", "B"]) == ["A", "B", "C"]


def test_data_is_a_source_name_or_a_path(tmp_path: Path) -> None:
    bars = tmp_path / "acme.us.txt"
    bars.write_text("Date,Open,High,Low,Close,Volume,OpenInt\n"
                    + "".join(f"2010-04-{d},10,11,9,10.5,1000,0\n" for d in (20, 21, 22, 23)))
    assert resolve_data("synthetic") == ("synthetic", {})
    assert resolve_data(str(tmp_path)) == ("files", {"root": str(tmp_path)})
    result = runner.invoke(app, ["backtest", "--agent", "buy_and_hold", "--data", str(bars),
                                 "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    config = json.loads(result.stdout)["config"]
    assert (config["source"], config["source_options"]["root"]) == ("files", str(bars))
    assert config["benchmark"] is None and json.loads(result.stdout)["symbols"] == ["ACME"]
    with pytest.raises(ConfigError, match="--data"):
        resolve_data(str(tmp_path / "missing.csv"))


def test_param_values_are_json_and_tables_merge() -> None:
    params = parse_params(["fast=20", "name=plain text", 'gateway={"temperature": 0.2}',
                           "gateway.max_tokens=99", "flag=true"])
    assert params == {"fast": 20, "name": "plain text", "flag": True,
                      "gateway": {"temperature": 0.2, "max_tokens": 99}}


@pytest.mark.parametrize(("args", "flag"), [
    (["backtest", "--interval", "7m"], "--interval"),
    (["backtest", "--quality", "maybe"], "--quality"),
    (["backtest", "--param", "fast"], "--param"),
    (["backtest", "--data", "nowhere/prices.csv"], "--data"),
    (["backtest", "--news", "nowhere/news.csv"], "--news"),
    (["backtest", "--json"], "--dry-run"),
    (["backtest", "--agent", "sma_cross", "--param", "fast=-3", "--dry-run"], "--param"),
    (["backtest", "--exchange", "NOWHERE", "--dry-run"], "--exchange"),
    (["data", "fetch", "ALPHA", "--data", "files"], "--data"),
    (["data", "verify", "--data", "sample", "--interval", "3d"], "--interval"),
    (["audit", "--data", "nosuch"], "--data"),
    (["evaluate", "--quality", "maybe"], "--quality"),
    (["train", "qtnet", "--split", "2016-01-01", "--n-envs", "0", "--device", "cpu"],
     "--n-envs"),
])
def test_bad_input_is_one_message_naming_the_flag_with_exit_2(args: list[str], flag: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert flag in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
