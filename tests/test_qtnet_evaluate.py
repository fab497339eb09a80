"""Out-of-sample evaluation of QTNet: trained before the split, scored by the engine after it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tradesim.agents.qtnet.env import EnvConfig
from tradesim.agents.qtnet.train import TrainConfig
from tradesim.data.bars import Bars
from tradesim.data.view import MarketData
from tradesim.errors import ConfigError
from tradesim.evaluate.oos import evaluate_out_of_sample

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _trend(n: int = 620, seed: int = 0) -> MarketData:
    """A drifting random walk of daily bars (so buy and hold has a clear, known return)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0.001, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    time = np.datetime64("2001-01-02T21:00", "ns") + np.arange(n) * np.timedelta64(1, "D")
    bars = Bars.from_arrays(symbol="T", interval="1d", adjusted=True, source="walk", time=time,
                            open=open_, high=np.maximum(open_, close) * 1.002,
                            low=np.minimum(open_, close) * 0.998, close=close,
                            volume=np.full(n, 1e7))
    return MarketData({"T": bars})


_TINY = TrainConfig(env=EnvConfig(n_envs=4, episode_len=8, warmup=30), iterations=2, updates=1,
                    batch_size=4, hidden=8, eval_every=1)


def test_out_of_sample_scores_every_policy_on_the_held_out_span_only(tmp_path):
    market = _trend()
    split = str(market.full("T").time[510])
    report = evaluate_out_of_sample(market=market, split=split, config=_TINY, seeds=(0, 1),
                                    out_dir=tmp_path / "ckpt", n_boot=200)
    runs = report.runs
    assert runs["policy"].tolist() == ["buy_and_hold", "dual_thrust", "qtnet", "qtnet"]
    assert (runs["bars"] == 110).all()  # bars 510..619, nothing from the training span
    close = market.full("T").close
    bh = runs[runs["policy"] == "buy_and_hold"].iloc[0]
    assert bh["total_return"] == pytest.approx(close[-1] / close[510] - 1.0, abs=0.02)
    assert (tmp_path / "ckpt" / "seed0" / "best.pt").is_file()
    s = report.summary.set_index(["policy", "metric"])
    q = s.loc[("qtnet", "total_return")]
    assert q["n"] == 2 and q["ci_low"] <= q["mean"] <= q["ci_high"]
    excess = s.loc[("qtnet - buy_and_hold", "total_return"), "mean"]
    assert excess == pytest.approx(runs[runs["policy"] == "qtnet"]["total_return"].mean()
                                   - bh["total_return"])
    assert report.beats("buy_and_hold") == (
        s.loc[("qtnet - buy_and_hold", "total_return"), "ci_low"] > 0)
    assert report.meta["validation_from"] < split  # early stopping never saw the held-out span
    out = report.save(tmp_path / "report")
    for name in ("runs.csv", "summary.csv", "equity.csv", "report.html"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "meta.json").read_text())["seeds"] == [0, 1]


def test_out_of_sample_needs_several_seeds(tmp_path):
    market = _trend()
    with pytest.raises(ConfigError, match="seeds"):
        evaluate_out_of_sample(market=market, split=str(market.full("T").time[510]),
                               config=_TINY, seeds=(0,), out_dir=tmp_path)
