"""One plug-in path for agents, data sources and LLM providers: built-in names, module:Class,
and entry points of an installed distribution (a real dist-info folder on sys.path)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tradesim.agents.registry import available_agents, load_agent
from tradesim.data.load import load_market, open_source
from tradesim.errors import ConfigError
from tradesim.llm.gateway import Gateway, GatewayConfig
from tradesim.llm.schema import TradeDecision
from tradesim.plugins import installed


@pytest.fixture
def distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed package declaring one plug-in in each group (importlib.metadata finds it)."""
    info = tmp_path / "my_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[tradesim.agents]\nreverter = user_agents:MeanReversion\n\n"
        "[tradesim.sources]\nrenamed = user_plugins:RenamedSample\n\n"
        "[tradesim.llm_providers]\nconstant = user_plugins:ConstantProvider\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return info


def test_entry_points_of_an_installed_package_plug_in_each_kind(distribution: Path) -> None:
    assert installed("agent") == {"reverter": "user_agents:MeanReversion"}
    assert "reverter" in available_agents()
    assert load_agent("reverter", window=3).window == 3
    assert open_source("renamed").name == "renamed_sample"
    market = load_market(symbols=["ALPHA"], source="renamed", end="2016-12-31")
    assert market.symbols == ("ALPHA",)
    with Gateway(config=GatewayConfig(provider="constant", mode="live")) as gw:
        result = gw.complete([{"role": "user", "content": "buy?"}], schema=TradeDecision)
    assert result.parsed.rationale == "constant plug-in"
    assert gw.config.endpoint.startswith("plugin:constant")


def test_module_class_plugs_in_without_packaging() -> None:
    config = GatewayConfig(provider="user_plugins:ConstantProvider", mode="live")
    with Gateway(config=config) as gw:
        assert gw.complete([{"role": "user", "content": "x"}],
                           schema=TradeDecision).parsed.action == "hold"
    assert open_source("user_plugins:RenamedSample").name == "renamed_sample"


def test_unknown_names_list_what_exists() -> None:
    with pytest.raises(ConfigError, match="available: .*sma_cross"):
        load_agent("no_such_agent")
    with pytest.raises(ConfigError, match="unknown data source 'nowhere'"):
        open_source("nowhere")
    with pytest.raises(ValueError, match="unknown provider 'nobody'"):
        GatewayConfig(provider="nobody")
    assert "my_plugins" not in sys.modules
