"""`tradesim synth`: TradingGroup trajectories as TRL-format JSONL, labelled and split honestly."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tradesim.agents.group.synth import SynthLeakageError, export, validate
from tradesim.agents.registry import load_agent
from tradesim.cli import app
from tradesim.data.load import load_market
from tradesim.engine.backtest import BacktestConfig, simulate
from tradesim.engine.record import RunResult

HORIZON, PURGE, SPLIT = 5, 3, "2018-06-01"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tg") / "run"
    data = load_market(symbols=["ALPHA", "BRAVO"], source="sample", end="2018-12-31")
    config = BacktestConfig.build(symbols=("ALPHA", "BRAVO"), start="2017-06-01",
                                  end="2018-12-31")
    simulate(config=config, agent=load_agent("tradinggroup"), data=data, save_to=folder)
    return folder


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_synth_cli_exports_valid_trl_formats_split_by_time_with_a_purge(run: Path,
                                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["synth", str(run), "--out", str(out), "--horizon",
                                      str(HORIZON), "--purge", str(PURGE), "--split", SPLIT])
    assert result.exit_code == 0, result.output
    counts = validate(out)
    assert all(counts[f"{p}/{k}"] > 10 for p in ("train", "test")
               for k in ("sft", "preference", "reward"))
    train, test = _rows(out / "train" / "reward.jsonl"), _rows(out / "test" / "reward.jsonl")
    clock = [str(t)[:19] for t in RunResult.load(run).equity.index.tz_localize(None)]
    clock = [t.replace(" ", "T") for t in clock]
    cut = next(i for i, t in enumerate(clock) if t >= SPLIT)
    assert min(r["time"] for r in test) >= SPLIT
    last_train = max(clock.index(r["time"]) for r in train)
    assert last_train + HORIZON + PURGE < cut  # the outcome, then the purge gap, then the split
    assert last_train + HORIZON + PURGE == cut - 1  # and nothing more is dropped
    for r in train + test:  # fixed-band labels from the realised forward return
        want = ("up" if r["forward_return"] > 0.01 else "down" if r["forward_return"] < -0.01
                else "flat")
        assert r["label"] == want and r["horizon"] == HORIZON
    pref = _rows(out / "train" / "preference.jsonl")[0]
    assert pref["prompt"][0]["role"] == "system" and pref["chosen"] != pref["rejected"]
    sft = _rows(out / "train" / "sft.jsonl")[0]
    assert [m["role"] for m in sft["messages"]] == ["system", "user", "assistant"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["horizon"] == HORIZON and manifest["purge"] == PURGE


def test_the_export_loads_with_datasets_offline(run: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Each JSONL loads with datasets.load_dataset("json") and has the columns TRL reads."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(self: socket.socket, address: object) -> None:
        raise AssertionError(f"datasets tried the network ({address})")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    datasets = pytest.importorskip("datasets", reason="the dev extras install datasets")
    export([run], tmp_path, horizon=HORIZON, purge=PURGE, split=SPLIT)
    want = {"sft": {"messages"}, "preference": {"prompt", "chosen", "rejected"},
            "reward": {"prompt", "forward_return", "account_return", "label", "horizon"}}
    for part in ("train", "test"):
        for kind, columns in want.items():
            path = tmp_path / part / f"{kind}.jsonl"
            ds = datasets.load_dataset("json", data_files=str(path), split="train",
                                       cache_dir=str(tmp_path / "hf-cache"))
            assert len(ds) == len(path.read_text().splitlines()) > 0
            assert columns <= set(ds.column_names)
            conversations = [c for c in columns if c in ("messages", "prompt", "chosen",
                                                          "rejected")]
            for c in conversations:  # conversational: lists of {role, content}
                turn = ds[0][c][0]
                assert set(turn) == {"role", "content"} and isinstance(turn["content"], str)
            if kind == "sft":
                assert [m["role"] for m in ds[0]["messages"]][-1] == "assistant"
            if kind == "reward":
                assert ds.features["forward_return"].dtype in ("float64", "float32")


def test_a_run_inside_the_models_knowledge_is_refused_unless_anonymised(run: Path,
                                                                       tmp_path: Path) -> None:
    settings = json.loads((run / "tradinggroup.json").read_text())
    real = tmp_path / "real"
    real.mkdir()
    for f in run.iterdir():
        if f.is_file():
            (real / f.name).write_bytes(f.read_bytes())
    (real / "tradinggroup.json").write_text(json.dumps({**settings, "sources": ["yfinance"]}))
    with pytest.raises(SynthLeakageError, match="--anonymize"):
        export([real], tmp_path / "a", horizon=HORIZON, purge=PURGE, split=SPLIT,
               model="gpt-4o-mini")
    export([real], tmp_path / "b", horizon=HORIZON, purge=PURGE, split=SPLIT,
           model="gpt-4o-mini", anonymize=True)
    rows = _rows(tmp_path / "b" / "test" / "reward.jsonl")
    text = json.dumps(rows)
    assert "ALPHA" not in text and "2018-" not in text and "STOCK_A" in text
    assert validate(tmp_path / "b")["test/reward"] == len(rows)
    forced = export([real], tmp_path / "c", horizon=HORIZON, purge=PURGE, split=SPLIT,
                    model="gpt-4o-mini", force=True)
    assert forced["forced"] and forced["runs"][0]["leakage"]


def test_validate_rejects_a_malformed_row(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "sft.jsonl").write_text(json.dumps(
        {"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(ValueError, match="assistant"):
        validate(tmp_path)
