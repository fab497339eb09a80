"""QTNet out of sample: train on bars before a split, backtest on the engine after it.

Every seed trains a fresh policy; the trained policy and the reference policies (buy and hold,
Dual Thrust) run through :func:`tradesim.evaluate.backtest.run_backtest` on the held-out span
only (with the earlier bars visible as history), so the score is the engine's, not the env's.
Early stopping validates on the last part of the pre-split bars, never on the held-out span.
Per run, the Sharpe ratio gets a block-bootstrap CI; over seeds, each metric and QTNet's excess
over each reference get t-intervals; the seed-averaged QTNet returns get a pooled bootstrap CI
(:mod:`tradesim.rewards.stats`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradesim.agents.baselines import BuyAndHold, DualThrust
from tradesim.agents.qtnet.agent import QTNetAgent
from tradesim.agents.qtnet.env import EnvData
from tradesim.agents.qtnet.train import TrainConfig, split_market, train
from tradesim.contracts import Agent
from tradesim.data.view import MarketData
from tradesim.errors import ConfigError
from tradesim.evaluate.backtest import BacktestConfig, run_backtest
from tradesim.evaluate.executor import Executor, using
from tradesim.rewards.stats import aggregate_seeds, bootstrap_sharpe_ci

REFERENCES: tuple[str, ...] = ("buy_and_hold", "dual_thrust")
_METRICS: tuple[str, ...] = ("total_return", "sharpe", "max_drawdown", "turnover")


@dataclass(frozen=True)
class OOSReport:
    """Held-out results: one row per (policy, seed), a summary over seeds, equity curves."""

    runs: pd.DataFrame
    summary: pd.DataFrame  # policy, metric, n, mean, ci_low, ci_high
    equity: pd.DataFrame  # time x run label ("qtnet/seed0", "buy_and_hold", ...)
    meta: dict[str, Any] = field(default_factory=dict)

    def beats(self, reference: str, *, metric: str = "total_return") -> bool:
        """Whether QTNet's excess over ``reference`` has its whole CI above zero."""
        row = self.summary[(self.summary["policy"] == f"qtnet - {reference}")
                           & (self.summary["metric"] == metric)]
        return bool(len(row)) and float(row["ci_low"].iloc[0]) > 0.0

    def rich_table(self) -> Any:
        """The summary as a rich Table (mean and CI per policy and metric)."""
        from rich.table import Table

        conf = self.meta.get("confidence", 0.95)
        table = Table(title=f"QTNet out of sample: {self.meta.get('held_out', '')}")
        for col in ("policy", "metric", "n", "mean", f"{conf:.0%} CI"):
            table.add_column(col, justify="left" if col in ("policy", "metric") else "right")
        for r in self.summary.itertuples(index=False):
            table.add_row(r.policy, r.metric, str(r.n), _fmt(r.mean, r.metric),
                          f"[{_fmt(r.ci_low, r.metric)}, {_fmt(r.ci_high, r.metric)}]")
        return table

    def save(self, folder: str | Path) -> Path:
        """Write runs.csv, summary.csv, equity.csv, meta.json and report.html into ``folder``."""
        from tradesim.report.oos import write_oos_page

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        self.runs.to_csv(out / "runs.csv", index=False)
        self.summary.to_csv(out / "summary.csv", index=False)
        self.equity.to_csv(out / "equity.csv")
        (out / "meta.json").write_text(json.dumps(self.meta, indent=2, default=str))
        write_oos_page(out / "report.html", runs=self.runs, summary=self.summary,
                       equity=self.equity, meta=self.meta)
        return out


def _score(agent: Agent, market: MarketData, config: BacktestConfig, name: str,
           seed: int | None, *, n_boot: int, confidence: float) -> tuple[dict, pd.Series]:
    result = run_backtest(config=config, agent=agent, data=market)
    equity = result.equity["equity"]
    e = equity.to_numpy()
    ci = bootstrap_sharpe_ci(e[1:] / e[:-1] - 1.0, n_boot=n_boot, confidence=confidence, seed=0)
    row = {"policy": name, "seed": seed, "total_return": e[-1] / e[0] - 1.0, "sharpe": ci.sharpe,
           "sharpe_low": ci.low, "sharpe_high": ci.high,
           "max_drawdown": float(result.metrics.get("max_drawdown", math.nan)),
           "turnover": float(result.metrics.get("turnover", math.nan)), "bars": len(e)}
    return row, equity


def _summary(runs: pd.DataFrame, curves: dict[str, pd.Series], *, confidence: float,
             n_boot: int) -> pd.DataFrame:
    rows = []

    def add(policy: str, metric: str, values: np.ndarray) -> None:
        if len(values) > 1:
            s = aggregate_seeds(values.tolist(), confidence=confidence)
            rows.append({"policy": policy, "metric": metric, "n": s.n, "mean": s.mean,
                         "ci_low": s.ci_low, "ci_high": s.ci_high})
        else:  # a deterministic reference: one run, no spread
            rows.append({"policy": policy, "metric": metric, "n": 1, "mean": float(values[0]),
                         "ci_low": math.nan, "ci_high": math.nan})

    for name, group in runs.groupby("policy", sort=False):
        for metric in _METRICS:
            values = group[metric].to_numpy(dtype=np.float64)
            if np.isfinite(values).all():
                add(name, metric, values)
    mine = runs[runs["policy"] == "qtnet"]
    for ref in REFERENCES:
        base = runs[runs["policy"] == ref].iloc[0]
        for metric in ("total_return", "sharpe"):
            add(f"qtnet - {ref}", metric, mine[metric].to_numpy(dtype=np.float64) - base[metric])
    pooled = np.mean([curves[k].pct_change().to_numpy()[1:] for k in curves
                      if k.startswith("qtnet/")], axis=0)
    ci = bootstrap_sharpe_ci(pooled, n_boot=n_boot, confidence=confidence, seed=0)
    rows.append({"policy": "qtnet (seed-averaged returns)", "metric": "sharpe", "n": len(mine),
                 "mean": ci.sharpe, "ci_low": ci.low, "ci_high": ci.high})
    return pd.DataFrame(rows)


def _seed_task(config: TrainConfig, seed: int, market: MarketData, train_data: EnvData,
               val_data: EnvData, bt: BacktestConfig, device: str, folder: str, n_boot: int,
               confidence: float, threads: int) -> tuple[dict, pd.Series, float]:
    """Train seed ``seed`` and score it held out: (row, equity, seconds) (runs in a worker)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # the caller's count: the same float reductions anywhere
    try:
        started = time.perf_counter()
        best = train(config=config.model_copy(update={"seed": seed}), train_data=train_data,
                     val_data=val_data, device=device, out_dir=folder)
        took = time.perf_counter() - started
        row, equity = _score(QTNetAgent(checkpoint=str(Path(folder) / "best.pt")), market,
                             bt.model_copy(update={"seed": seed}), "qtnet", seed,
                             n_boot=n_boot, confidence=confidence)
    finally:
        torch.set_num_threads(before)
    return ({**row, "best_iteration": best["iteration"],
             "val_log_growth": best["val_log_growth"]}, equity, took)


def evaluate_out_of_sample(*, market: MarketData, split: str, config: TrainConfig,
                           seeds: Sequence[int] = (0, 1, 2, 3, 4), out_dir: str | Path,
                           val_fraction: float = 0.2, device: str = "cpu",
                           n_boot: int = 1000, confidence: float = 0.95,
                           progress: Callable[[str], None] | None = None,
                           executor: Executor | str | None = "sequential") -> OOSReport:
    """Train one policy per seed on bars before ``split``; score every policy after it.

    Checkpoints go to ``out_dir/seed{N}/``. Early stopping uses the last ``val_fraction`` of
    the pre-split bars, never the held-out span. ``executor`` trains and scores the seeds (see
    :mod:`tradesim.evaluate.executor`); each task trains with this process's torch thread count
    and its own seed, so every executor gives the sequential report. On a cluster ``out_dir``
    must be a path every worker shares, or the checkpoints stay on the workers.
    """
    if len(seeds) < 2:
        raise ConfigError(f"seeds={list(seeds)}: an interval over seeds needs at least 2 "
                          "(the issue asks for 5)")
    fit, held = split_market(market, split=split)
    env = config.env
    bt = BacktestConfig.build(symbols=market.symbols, start=split, costs=env.costs,
                              allow_short=env.allow_short, max_leverage=env.max_leverage,
                              initial_cash=env.initial_cash, fractional=env.fractional,
                              lot_size=env.lot_size)
    timeline = fit.timeline()
    inner = str(timeline[int(len(timeline) * (1.0 - val_fraction))])
    fit_part, val_part = split_market(fit, split=inner)
    train_data = EnvData.from_market(fit_part, separate=True, allow_short=env.allow_short,
                                     hindsight_teacher=config.hindsight_teacher)
    val_data = EnvData.from_market(val_part, separate=True, allow_short=env.allow_short)
    references = {"buy_and_hold": BuyAndHold(),
                  "dual_thrust": DualThrust(bars_per_day=1, flat_at_close=False,
                                            allow_short=env.allow_short)}
    rows, curves, seconds = [], {}, []
    for name, agent in references.items():
        row, curves[name] = _score(agent, market, bt, name, None, n_boot=n_boot,
                                   confidence=confidence)
        rows.append(row)
    import torch

    threads = torch.get_num_threads()

    def on_seed(i: int, out: tuple[dict, pd.Series, float]) -> None:
        row = out[0]
        if progress is not None:
            progress(f"seed {row['seed']}: held-out return {row['total_return']:+.2%}, Sharpe "
                     f"{row['sharpe']:.2f} (trained {out[2]:.0f} s)")

    with using(executor) as ex:
        shared = [ex.put(x) for x in (market, train_data, val_data)]
        outs = ex.map(_seed_task, [(config, seed, *shared, bt, device,
                                    str(Path(out_dir).resolve() / f"seed{seed}"), n_boot,
                                    confidence, threads) for seed in seeds], on_result=on_seed)
    for seed, (row, curve, took) in zip(seeds, outs, strict=True):
        rows.append(row)
        curves[f"qtnet/seed{seed}"] = curve
        seconds.append(took)
    runs = pd.DataFrame(rows)
    equity = pd.DataFrame(curves)
    meta = {"symbols": list(market.symbols), "split": split, "validation_from": inner,
            "held_out": f"{', '.join(market.symbols)} {str(equity.index[0])[:10]}.."
                        f"{str(equity.index[-1])[:10]} ({len(equity)} bars)",
            "train_bars": int(train_data.lengths.sum()), "val_bars": int(val_data.lengths.sum()),
            "seeds": list(seeds), "device": str(device), "confidence": confidence,
            "n_boot": n_boot, "train_seconds": [round(s, 1) for s in seconds],
            "config": config.model_dump(mode="json"), "fingerprints": market.fingerprints()}
    report = OOSReport(runs=runs, summary=_summary(runs, curves, confidence=confidence,
                                                    n_boot=n_boot), equity=equity, meta=meta)
    report.meta["verdict"] = {ref: report.beats(ref) for ref in REFERENCES}
    return report


def _fmt(x: float, metric: str) -> str:
    if not math.isfinite(x):
        return "–"
    return f"{x:+.1%}" if metric in ("total_return", "max_drawdown") else f"{x:.2f}"
