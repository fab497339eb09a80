"""Out-of-sample evaluation: train on bars before a split, backtest on the engine after it.

Every seed trains a fresh policy; the trained policy and the reference policies (buy and hold,
Dual Thrust) run through :func:`tradesim.engine.backtest.run_backtest` on the held-out span
only, so the score is the engine's, not the env's. Per-run Sharpe gets a block-bootstrap CI and
the seeds are summarised with a t-interval (:mod:`tradesim.rewards.stats`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tradesim.agents.baselines import BuyAndHold, DualThrust
from tradesim.agents.qtnet.agent import QTNetAgent
from tradesim.agents.qtnet.env import EnvData
from tradesim.agents.qtnet.train import TrainConfig, split_market, train
from tradesim.contracts import Agent
from tradesim.data.view import MarketData
from tradesim.engine.backtest import BacktestConfig, run_backtest
from tradesim.rewards.stats import aggregate_seeds, bootstrap_sharpe_ci


def _score(agent: Agent, market: MarketData, config: BacktestConfig, name: str,
           seed: int | None) -> dict:
    result = run_backtest(config=config, agent=agent, data=market)
    equity = result.equity["equity"].to_numpy()
    returns = equity[1:] / equity[:-1] - 1.0
    ci = bootstrap_sharpe_ci(returns, n_boot=1000, seed=seed or 0)
    return {"policy": name, "seed": seed, "total_return": equity[-1] / equity[0] - 1.0,
            "sharpe": ci.sharpe, "sharpe_low": ci.low, "sharpe_high": ci.high,
            "bars": len(equity)}


def evaluate_out_of_sample(*, market: MarketData, split: str, config: TrainConfig,
                           seeds: Sequence[int] = (0, 1, 2, 3, 4), out_dir: str | Path,
                           val_fraction: float = 0.2,
                           device: str = "cpu",
                           progress: Callable[[str], None] | None = None
                           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-run table, per-policy summary over seeds with 95% t-intervals) on the held-out span.

    Early stopping uses the last ``val_fraction`` of the pre-split bars, never the held-out span.
    """
    fit, _ = split_market(market, split=split)
    env = config.env
    bt = BacktestConfig.build(symbols=market.symbols, start=split, costs=env.costs,
                              allow_short=env.allow_short, max_leverage=env.max_leverage,
                              initial_cash=env.initial_cash, fractional=env.fractional,
                              lot_size=env.lot_size)
    timeline = fit.timeline()
    inner = str(timeline[int(len(timeline) * (1.0 - val_fraction))])
    fit_part, val_part = split_market(fit, split=inner)  # early stopping never sees held-out
    train_data = EnvData.from_market(fit_part, separate=True, allow_short=env.allow_short,
                                     hindsight_teacher=config.hindsight_teacher)
    val_data = EnvData.from_market(val_part, separate=True, allow_short=env.allow_short)
    rows = [_score(BuyAndHold(), market, bt, "buy_and_hold", None),
            _score(DualThrust(bars_per_day=1, flat_at_close=False,
                              allow_short=env.allow_short), market, bt, "dual_thrust", None)]
    for seed in seeds:
        folder = Path(out_dir) / f"seed{seed}"
        train(config=config.model_copy(update={"seed": seed}), train_data=train_data,
              val_data=val_data, device=device, out_dir=folder)
        rows.append(_score(QTNetAgent(checkpoint=str(folder / "best.pt")), market, bt, "qtnet",
                           seed))
        if progress is not None:
            progress(f"seed {seed}: total return {rows[-1]['total_return']:+.2%}")
    runs = pd.DataFrame(rows)
    summary = []
    for name, group in runs.groupby("policy", sort=False):
        for metric in ("total_return", "sharpe"):
            values = group[metric].to_numpy(dtype=np.float64)
            if len(values) > 1:
                s = aggregate_seeds(values)
                summary.append({"policy": name, "metric": metric, "n": s.n, "mean": s.mean,
                                "ci_low": s.ci_low, "ci_high": s.ci_high})
            else:
                summary.append({"policy": name, "metric": metric, "n": 1, "mean": values[0],
                                "ci_low": float("nan"), "ci_high": float("nan")})
    return runs, pd.DataFrame(summary)
