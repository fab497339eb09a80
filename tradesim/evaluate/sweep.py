"""Parameter sweeps: one agent over a grid of parameters, every configuration a task.

Each configuration runs through the vectorised fast path when the agent offers it
(:class:`~tradesim.contracts.VectorisedWeights`, the same fills and costs as the event loop) and
through the event loop otherwise, on any :mod:`~tradesim.evaluate.executor`. Configurations are
recorded in a trial registry in grid order, so the deflated Sharpe and PBO of notebook 02 see the
real size of the search whatever finished first.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradesim.data.view import MarketData
from tradesim.engine.backtest import BacktestConfig
from tradesim.errors import ConfigError, EngineError
from tradesim.evaluate.executor import Executor, using
from tradesim.rewards.stats import TrialRegistry, moments

METRICS: tuple[str, ...] = ("total_return", "sharpe", "cagr", "max_drawdown", "volatility",
                            "turnover")


@dataclass(frozen=True)
class SweepResult:
    """One row per configuration (grid order) and the per-bar returns of each, for PBO."""

    table: pd.DataFrame  # parameter columns, then label, metrics, per-bar moments, engine, error
    returns: pd.DataFrame  # time x label: per-bar simple returns (first bar dropped)
    meta: dict[str, Any] = field(default_factory=dict)

    def best(self, metric: str = "sharpe") -> dict[str, Any]:
        """The parameters of the configuration with the highest ``metric`` (in hindsight)."""
        row = self.table.loc[self.table[metric].astype(float).idxmax()]
        return {k: _plain(row[k]) for k in self.meta["params"]}


def sweep(*, agent: str, grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
          data: MarketData, config: BacktestConfig | None = None,
          executor: Executor | str | None = "sequential",
          registry: TrialRegistry | str | Path | None = None, experiment: str = "sweep",
          fast: bool | None = None) -> SweepResult:
    """Run ``agent`` once per configuration of ``grid`` on ``data``.

    ``grid`` is a mapping of parameter -> values (the product is swept, in ``itertools.product``
    order) or a list of parameter dicts. ``config`` sets the clock, universe, costs and cash
    (its ``agent_params`` are the base every configuration overrides). ``fast`` None uses the
    vectorised path where the agent has one; False forces the event loop. ``registry`` records
    each configuration (per-bar Sharpe, skew, kurtosis) under ``experiment``, in grid order.
    """
    points = _points(grid)
    base = config if config is not None else BacktestConfig.build(agent=agent)
    from tradesim.agents.registry import resolve_agent

    resolve_agent(agent, {**base.agent_params, **points[0]})  # a bad name or parameter fails here
    with using(executor) as ex:
        shared = ex.put(data)
        outs = ex.map(_sweep_task, [(agent, {**base.agent_params, **p}, shared, base, fast)
                                    for p in points])
    reg = (registry if isinstance(registry, TrialRegistry) or registry is None
           else TrialRegistry(registry))
    rows, curves = [], {}
    for params, (label, row, returns) in zip(points, outs, strict=True):
        rows.append({**params, "label": label, **row})
        curves[label] = returns
        if reg is not None and math.isfinite(row["sharpe_bar"]):
            reg.record(experiment=experiment, config={"agent": agent, **params},
                       sharpe=row["sharpe_bar"], n_obs=int(row["n_obs"]),
                       skew=_finite(row["skew"], 0.0), kurtosis=_finite(row["kurtosis"], 3.0))
    meta = {"agent": agent, "params": sorted({k for p in points for k in p}, key=_order(points)),
            "configurations": len(points), "executor": ex.name, "experiment": experiment,
            "registry": None if reg is None else str(reg.path),
            "config": base.model_dump(mode="json"), "fingerprints": data.fingerprints()}
    return SweepResult(table=pd.DataFrame(rows), returns=pd.DataFrame(curves), meta=meta)


def _sweep_task(agent: str, params: Mapping[str, Any], data: MarketData,
                config: BacktestConfig, fast: bool | None
                ) -> tuple[str, dict[str, Any], pd.Series]:
    """One configuration: (label, metrics row, per-bar returns) (runs in a worker)."""
    from tradesim.agents.registry import resolve_agent
    from tradesim.contracts import VectorisedWeights
    from tradesim.engine.fastpath import run_fast
    from tradesim.evaluate.backtest import run_backtest

    resolved = resolve_agent(agent, dict(params))
    cfg = config.model_copy(update={"agent": agent, "agent_params": resolved.params})
    built = resolved.build()
    label = f"{agent}({', '.join(f'{k}={v}' for k, v in params.items())})"
    weights = (built.target_weights if isinstance(built, VectorisedWeights) and fast is not False
               else None)
    row: dict[str, Any] = {"engine": "event loop" if weights is None else "fastpath",
                           "error": ""}
    try:
        if weights is not None:
            result = run_fast(data=data, weights=weights(data, start=cfg.start), config=cfg,
                              name=label)
        else:
            result = run_backtest(config=cfg, agent=built, data=data)
    except EngineError as exc:
        result = exc.partial_result
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    if result is None or not len(result.equity):
        row.update(dict.fromkeys((*METRICS, "sharpe_bar", "n_obs", "skew", "kurtosis"),
                                 math.nan))
        return label, row, pd.Series(dtype=float)
    equity = result.equity["equity"]
    returns = equity.pct_change().dropna()
    m = moments(returns.to_numpy())
    row.update({k: float(result.metrics.get(k, math.nan)) for k in METRICS if k != "total_return"})
    row.update(total_return=float(equity.iloc[-1] / config.initial_cash - 1.0),
               sharpe_bar=m["sharpe"], n_obs=m["n_obs"], skew=m["skew"], kurtosis=m["kurtosis"])
    return label, row, returns


def _points(grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]
            ) -> list[dict[str, Any]]:
    """The grid as a list of parameter dicts, in a stated order."""
    if isinstance(grid, Mapping):
        if not grid or any(isinstance(v, str) or not len(v) for v in grid.values()):
            raise ConfigError("sweep grid: give each parameter a list of values, e.g. "
                              "{'fast': [5, 10], 'slow': [60, 120]}")
        keys = list(grid)
        return [dict(zip(keys, combo, strict=True))
                for combo in itertools.product(*grid.values())]
    points = [dict(p) for p in grid]
    if not points:
        raise ConfigError("sweep grid is empty; give at least one configuration")
    return points


def _order(points: list[dict[str, Any]]) -> Any:
    """Sort key: parameters in the order they first appear in the grid."""
    seen: dict[str, int] = {}
    for p in points:
        for k in p:
            seen.setdefault(k, len(seen))
    return seen.__getitem__


def _finite(x: float, default: float) -> float:
    return float(x) if math.isfinite(x) else default


def _plain(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


__all__ = ["METRICS", "SweepResult", "sweep"]
