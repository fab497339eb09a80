"""The leaderboard: several agents on identical data and costs, scored honestly.

Every (agent, seed) run is recorded in a :class:`~tradesim.rewards.stats.TrialRegistry`, so the
deflated Sharpe of each agent is deflated by every configuration tried in the experiment (also
in earlier sessions when the registry file is kept). Per agent: metrics, a block-bootstrap CI of
the Sharpe ratio, the deflated Sharpe, the hardened score against buy-and-hold and 1/N, and the
hack monitors. Ranked by hardened score.

Each agent runs isolated by default (its own process, sandboxed by bubblewrap where it works;
the rule for agents that cannot be isolated is :func:`tradesim.evaluate.backtest.plan_isolation`)
and is put through the counterfactual look-ahead check (one twin per cut); the columns
``isolation`` and ``lookahead`` say how each ran and whether it leaked. The runs and checks fan
out through an executor (:mod:`tradesim.evaluate.executor`) with results identical to a
sequential run; the registry is fed in (agent, seed) order here.
"""

from __future__ import annotations

import itertools
import json
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradesim.agents.isolation import Sandbox, bwrap_status
from tradesim.data.view import MarketData
from tradesim.engine.backtest import BacktestConfig, universe_and_clock
from tradesim.engine.costs import CostModel, load_costs
from tradesim.errors import ConfigError
from tradesim.evaluate.audit import Auditor, AuditRun, score_value
from tradesim.evaluate.backtest import IsolationPlan, plan_isolation
from tradesim.evaluate.executor import Executor, using
from tradesim.rewards.monitors import compute_monitors
from tradesim.rewards.scores import ScoreConfig, load_score_config
from tradesim.rewards.stats import TrialRegistry, aggregate_seeds, bootstrap_sharpe_ci, moments

COLUMNS: tuple[str, ...] = (
    "agent", "seeds", "total_return", "cagr", "sharpe", "sharpe_low", "sharpe_high",
    "sharpe_seed_std", "deflated_sharpe", "n_trials", "hardened", "preference", "budget",
    "max_drawdown", "volatility", "turnover", "mean_holding_bars", "peak_leverage",
    "top1pct_pnl_share", "long_short_asymmetry", "isolation", "isolation_note", "lookahead",
    "error",
)


@dataclass(frozen=True)
class Leaderboard:
    """One row per agent (ranked by hardened score), one per (agent, seed), and the setup."""

    table: pd.DataFrame
    runs: pd.DataFrame
    equity: pd.DataFrame  # time x agent: equity averaged over seeds
    meta: dict[str, Any] = field(default_factory=dict)

    def rich_table(self) -> Any:
        """The leaderboard as a rich Table."""
        from rich.table import Table

        conf = self.meta.get("confidence", 0.95)
        table = Table(title=f"leaderboard: {self.meta.get('market', '')} "
                            f"({self.meta.get('n_trials', 0)} trials in the registry)")
        for col in ("#", "agent", "seeds", "return", f"Sharpe [{conf:.0%} CI]", "DSR",
                    "hardened", "max DD", "turnover", "peak lev", "top 1% share", "isolation",
                    "look-ahead"):
            table.add_column(col, justify="left" if col in ("agent", "isolation", "look-ahead")
                             else "right")
        notes = []
        for rank, r in enumerate(self.table.itertuples(index=False), start=1):
            leak = str(r.lookahead)
            shown = (f"[green]{leak}[/green]" if leak == "clean" else
                     f"[bold red]{leak}[/bold red]" if leak.startswith("LEAK") else leak)
            table.add_row(str(rank), r.agent, str(r.seeds), _fmt(r.total_return, "{:+.1%}"),
                          f"{_fmt(r.sharpe, '{:.2f}')} [{_fmt(r.sharpe_low, '{:.2f}')}, "
                          f"{_fmt(r.sharpe_high, '{:.2f}')}]", _fmt(r.deflated_sharpe, "{:.2f}"),
                          _fmt(r.hardened, "{:.3f}"), _fmt(r.max_drawdown, "{:.1%}"),
                          _fmt(r.turnover, "{:.1f}"), _fmt(r.peak_leverage, "{:.2f}"),
                          _fmt(r.top1pct_pnl_share, "{:.0%}"),
                          str(r.isolation) + ("*" if r.isolation_note else ""), shown)
            if r.isolation_note:
                notes.append(f"* {r.agent}: {r.isolation_note}")
        if notes:
            table.caption = "\n".join(notes)
        return table

    def save(self, folder: str | Path) -> Path:
        """Write leaderboard.csv, runs.csv, equity.csv, meta.json and leaderboard.html."""
        from tradesim.report.leaderboard import write_leaderboard_page

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(out / "leaderboard.csv", index=False)
        self.runs.to_csv(out / "runs.csv", index=False)
        self.equity.to_csv(out / "equity.csv")
        (out / "meta.json").write_text(json.dumps(self.meta, indent=2, default=str))
        write_leaderboard_page(out / "leaderboard.html", table=self.table, equity=self.equity,
                               meta=self.meta)
        return out


def evaluate_agents(*, agents: Sequence[str], data: MarketData,
                    costs: CostModel | str | Mapping = "default",
                    score_config: ScoreConfig | str | Mapping = "balanced", seeds: int = 1,
                    registry: TrialRegistry | str | Path | None = None,
                    experiment: str = "leaderboard", initial_cash: float = 100_000.0,
                    n_boot: int = 1000, confidence: float = 0.95,
                    agent_params: Mapping[str, Mapping[str, Any]] | None = None,
                    progress: Callable[[str], None] | None = None, isolate: bool = True,
                    sandbox: Sandbox = "auto", lookahead: bool = True, windows: int = 1,
                    executor: Executor | str | None = "sequential") -> Leaderboard:
    """Run each agent (built-in name, ``module:Class`` or spec) for ``seeds`` seeds on ``data``.

    Each agent is built afresh per seed and run with ``BacktestConfig.seed`` = 0..seeds-1, which
    it receives as ``RunContext.seed`` at ``start``; a deterministic agent gives identical runs
    (so the spread over seeds shows it is deterministic). ``registry`` keeps the trial count
    across sessions; without one a temporary registry counts this call only.

    ``windows`` > 1 splits the clock into that many consecutive test windows: each (agent,
    seed, window) is its own run starting flat with the initial cash (earlier bars stay visible
    as history); a seed's returns are its windows' returns chained, and the per-run columns
    (return, CAGR, drawdown, turnover) are averaged over seeds and windows.

    ``isolate`` (default) runs each agent in its own process (``sandbox`` as in
    :class:`~tradesim.agents.isolation.IsolatedAgent`), falling back per agent by the rule of
    :func:`~tradesim.evaluate.backtest.plan_isolation` (column ``isolation``, with the reason in
    ``isolation_note``). ``lookahead`` (default) runs :func:`check_lookahead` once per agent on
    ``data`` with one twin per cut (column ``lookahead``: ``clean``, ``LEAK at <time>``, or
    ``LEAK (<route>)`` for a file open, a data write or a book edit; ``skipped`` when off).

    ``executor`` (an :class:`~tradesim.evaluate.executor.Executor` or a spec: ``sequential``,
    ``local``, ``local:N``, ``ray``, ``ray://HOST:PORT``) runs the (agent, seed, window) runs
    and the look-ahead checks; every executor gives the sequential tables exactly, and the
    registry is fed here in (agent, seed) order. ``progress`` is called here once per run and
    once per look-ahead check, as each finishes.
    """
    if not agents:
        raise ConfigError("evaluate_agents needs at least one agent (e.g. sma_cross,macd)")
    if seeds < 1:
        raise ConfigError(f"seeds={seeds}; run at least one seed")
    if windows < 1:
        raise ConfigError(f"windows={windows}; use 1 (the whole span) or more")
    score = score_config if isinstance(score_config, ScoreConfig) else load_score_config(
        score_config)
    cost_model = load_costs(costs)
    with tempfile.TemporaryDirectory() as tmp, using(executor) as ex:
        reg = (registry if isinstance(registry, TrialRegistry)
               else TrialRegistry(registry if registry is not None else Path(tmp) / "trials.db"))
        return _evaluate(agents=list(agents), data=data, costs=cost_model, score=score,
                         seeds=seeds, registry=reg, experiment=experiment,
                         initial_cash=initial_cash, n_boot=n_boot, confidence=confidence,
                         params=agent_params or {}, progress=progress, isolate=isolate,
                         sandbox=sandbox, lookahead=lookahead, windows=windows, executor=ex)


@dataclass(frozen=True)
class _Run:
    """What a worker sends back of one (agent, seed, window) run: the series and the summary
    the board needs, not the whole run record."""

    returns: np.ndarray
    weights: np.ndarray
    raw_return: float
    error: str
    metrics: dict[str, float] | None  # None: the run left no result
    trades: pd.DataFrame | None
    isolation: str
    isolation_note: str


def _run_task(spec: str, params: Mapping[str, Any], data: MarketData, config: BacktestConfig,
              score: ScoreConfig, bars: int, seed: int, span: tuple[str, str] | None,
              isolate: bool, sandbox: Sandbox) -> _Run:
    """One (agent, seed, window) run, built afresh from its spec (runs in a worker)."""
    from tradesim.agents.registry import load_agent

    plan = plan_isolation(load_agent(spec, **params), isolate=isolate, sandbox=sandbox,
                          fallback=True)
    window = {} if span is None else {"start": span[0], "end": span[1]}
    run = Auditor(config=config, score=score, progress=None).run(
        plan.agent, data, bars=bars, seed=seed, isolate=False, **window)
    error = "" if run.error is None else f"{type(run.error).__name__}: {run.error}"
    metrics = None if run.result is None else {
        k: run.result.metrics.get(k, math.nan)
        for k in ("cagr", "sharpe", "max_drawdown", "volatility", "turnover")}
    return _Run(returns=run.returns, weights=run.weights, raw_return=run.raw_return,
                error=error.splitlines()[0] if error else "", metrics=metrics,
                trades=None if run.result is None else run.result.trades,
                isolation=plan.mode, isolation_note=plan.note)


def _lookahead_task(spec: str, params: Mapping[str, Any], data: MarketData,
                    config: BacktestConfig, isolate: bool, sandbox: Sandbox) -> str:
    """The look-ahead verdict of one agent, planned as its runs are (runs in a worker)."""
    from tradesim.agents.registry import load_agent

    plan = plan_isolation(load_agent(spec, **params), isolate=isolate, sandbox=sandbox,
                          fallback=True)
    return lookahead_verdict(spec, params, data=data, config=config, plan=plan)


def _windows(clock: np.ndarray, k: int) -> list[tuple[str, str] | None]:
    """``k`` consecutive (start, end) stamps covering ``clock`` (``[None]``: the whole span)."""
    if k == 1:
        return [None]
    if k > len(clock) // 3:
        raise ConfigError(f"windows={k} on {len(clock)} bars leaves fewer than 3 bars per "
                          "window; use fewer windows or a longer span")
    cuts = np.linspace(0, len(clock), k + 1).round().astype(int)
    stamp = lambda t: pd.Timestamp(t, tz="UTC").isoformat()  # exact to the nanosecond
    return [(stamp(clock[a]), stamp(clock[b - 1])) for a, b in itertools.pairwise(cuts)]


def _evaluate(*, agents: list[str], data: MarketData, costs: CostModel, score: ScoreConfig,
              seeds: int, registry: TrialRegistry, experiment: str, initial_cash: float,
              n_boot: int, confidence: float, params: Mapping[str, Mapping[str, Any]],
              progress: Callable[[str], None] | None, isolate: bool, sandbox: Sandbox,
              lookahead: bool, windows: int, executor: Executor) -> Leaderboard:
    from tradesim.agents.registry import load_agent

    config = BacktestConfig.build(costs=costs, initial_cash=initial_cash)
    aud = Auditor(config=config, score=score, progress=progress)
    refs = aud.market(data)
    bh = refs.runs["buy_and_hold"]
    n = len(bh.returns)
    index = refs.reference.equity.index
    asset_returns = _asset_returns(data, tuple(refs.reference.weights.columns), index)
    spans = _windows(universe_and_clock(config=config, data=data)[1], windows)
    sizes = [n if s is None else len(universe_and_clock(
        config=config.model_copy(update={"start": s[0], "end": s[1]}), data=data)[1])
             for s in spans]
    if sum(sizes) != n:
        raise ConfigError(f"the {windows} test windows cover {sum(sizes)} of {n} bars; the "
                          "market's clock has stamps the windows cannot split")
    for spec in agents:  # a bad name fails here, before any worker starts
        load_agent(spec, **dict(params.get(spec, {})))
    shared = executor.put(data)
    keys: list[tuple[str, str, int, int]] = []  # (kind, spec, seed, window), in task order
    tasks: list[tuple[Any, ...]] = []
    if lookahead:  # the longest tasks first, so the pool ends together
        for spec in agents:
            keys.append(("lookahead", spec, -1, -1))
            tasks.append((spec, dict(params.get(spec, {})), shared, config, isolate, sandbox))
    for spec in agents:
        for seed in range(seeds):
            for w, span in enumerate(spans):
                keys.append(("run", spec, seed, w))
                tasks.append((spec, dict(params.get(spec, {})), shared, config, score,
                              sizes[w], seed, span, isolate, sandbox))

    def report(i: int, _: object) -> None:
        if progress is not None:
            kind, spec = keys[i][:2]
            progress(f"look-ahead check {spec}" if kind == "lookahead" else spec)

    outs = executor.map(_dispatch, [(k[0], *t) for k, t in zip(keys, tasks, strict=True)],
                        on_result=report)
    leaks = {k[1]: out for k, out in zip(keys, outs, strict=True) if k[0] == "lookahead"}
    done = {(k[1], k[2], k[3]): out for k, out in zip(keys, outs, strict=True)
            if k[0] == "run"}
    runs, per_agent, plans = _record(done, agents=agents, seeds=seeds, windows=len(spans),
                                     params=params, registry=registry, experiment=experiment,
                                     data=data, costs=costs, config=config)
    curves = {spec: np.mean([initial_cash * np.cumprod(1 + r.returns) for r in per_agent[spec]],
                            axis=0) for spec in agents}
    n_trials = registry.n_trials(experiment)
    rows = [_agent_row(spec, per_agent[spec], pd.DataFrame(runs), aud, refs, registry,
                       experiment, asset_returns, initial_cash, n_boot, confidence, score)
            for spec in agents]
    for row in rows:
        mode, note = plans[row["agent"]]
        row.update(isolation=mode, isolation_note=note,
                   lookahead=leaks.get(row["agent"], "skipped"))
    table = pd.DataFrame(rows, columns=list(COLUMNS)).sort_values(
        "hardened", ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    clock = index
    meta = {"market": f"{', '.join(data.symbols)} {str(clock[0])[:10]}..{str(clock[-1])[:10]}",
            "symbols": list(data.symbols), "bars": n, "seeds": seeds, "experiment": experiment,
            "registry": str(registry.path), "n_trials": n_trials, "confidence": confidence,
            "n_boot": n_boot, "costs": costs.model_dump(), "score_config": score.model_dump(),
            "fill_mode": config.fill, "fingerprints": data.fingerprints(),
            "isolate": isolate, "sandbox": sandbox, "executor": executor.name,
            "windows": [["", ""] if s is None else list(s) for s in spans],
            "lookahead_check": "one twin per cut at 30%, 55% and 80% of the clock"
                               if lookahead else "skipped",
            "references": {k: {"raw_return": v.raw_return,
                               "hardened": score_value(refs.scores[k])}
                           for k, v in refs.runs.items()}}
    return Leaderboard(table=table, runs=pd.DataFrame(runs),
                       equity=pd.DataFrame(curves, index=index), meta=meta)


def _record(done: Mapping[tuple[str, int, int], _Run], *, agents: list[str], seeds: int,
            windows: int, params: Mapping[str, Mapping[str, Any]], registry: TrialRegistry,
            experiment: str, data: MarketData, costs: CostModel, config: BacktestConfig
            ) -> tuple[list[dict[str, Any]], dict[str, list[_Run]], dict[str, tuple[str, str]]]:
    """The runs table, each agent's seeds (windows chained) and isolation; the registry is fed
    in (agent, seed) order whatever finished first."""
    runs: list[dict[str, Any]] = []
    per_agent: dict[str, list[_Run]] = {}
    plans: dict[str, tuple[str, str]] = {}
    for spec in agents:
        for seed in range(seeds):
            parts = [done[(spec, seed, w)] for w in range(windows)]
            plans.setdefault(spec, (parts[0].isolation, parts[0].isolation_note))
            for w, run in enumerate(parts):
                row: dict[str, Any] = {"agent": spec, "seed": seed, "window": w,
                                       "error": run.error, "total_return": run.raw_return}
                if len(run.returns) >= 3:
                    metrics = run.metrics or {}
                    row.update(sharpe_bar=moments(run.returns)["sharpe"],
                               **{k: metrics.get(k, math.nan) for k in
                                  ("cagr", "sharpe", "max_drawdown", "volatility", "turnover")})
                runs.append(row)
            chained = _chain(parts)
            if len(chained.returns) >= 3:
                m = moments(chained.returns)
                trial = {"agent": spec, "params": dict(params.get(spec, {})),
                         "data": data.fingerprints(),  # trials on other data differ
                         "costs": costs.model_dump(), "fill": config.fill,
                         **({"windows": windows} if windows > 1 else {})}
                registry.record(experiment=experiment, seed=seed, config=trial,
                                sharpe=m["sharpe"] if math.isfinite(m["sharpe"]) else 0.0,
                                n_obs=int(m["n_obs"]), skew=_finite(m["skew"], 0.0),
                                kurtosis=_finite(m["kurtosis"], 3.0))
            per_agent.setdefault(spec, []).append(chained)
    return runs, per_agent, plans


def _dispatch(kind: str, *args: Any) -> Any:
    """One leaderboard task by kind (one function, so one map keeps every worker busy)."""
    return _lookahead_task(*args) if kind == "lookahead" else _run_task(*args)


def _chain(parts: list[_Run]) -> _Run:
    """A seed's windows as one run: returns and weights chained (one window: itself)."""
    if len(parts) == 1:
        return parts[0]
    trades = [p.trades for p in parts if p.trades is not None and len(p.trades)]
    return _Run(returns=np.concatenate([p.returns for p in parts]),
                weights=np.vstack([parts[0].weights, *(p.weights[1:] for p in parts[1:])]),
                raw_return=float(np.mean([p.raw_return for p in parts])),
                error=next((p.error for p in parts if p.error), ""),
                metrics=parts[0].metrics,
                trades=pd.concat(trades, ignore_index=True) if trades else parts[0].trades,
                isolation=parts[0].isolation, isolation_note=parts[0].isolation_note)


def lookahead_verdict(spec: str, params: Mapping[str, Any], *, data: MarketData,
                      config: BacktestConfig, plan: IsolationPlan) -> str:
    """``clean``, ``LEAK at <time>`` (a decision at or before a cut changed on its twin) or
    ``LEAK (<route>)`` (a source-file open, a data write or a book edit) for one agent.

    One twin per cut. An agent isolated in the sandbox (or in a plain process where no sandbox
    exists) is checked isolated the same way; any other agent is checked in-process, each run
    in a fresh process holding only its own market. A check that cannot run says why.
    """
    from tradesim.agents.registry import load_agent
    from tradesim.evaluate.lookahead import check_lookahead, first_leak

    isolated = plan.mode == "bwrap" or (plan.mode == "process" and not bwrap_status()[0])
    try:
        findings = check_lookahead(make_agent=partial(load_agent, spec, **params), data=data,
                                   config=config, twins=1, isolate=isolated,
                                   processes=False if isolated else None)
    except Exception as exc:  # a check that cannot run is shown, not fatal to the board
        return f"not checked ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"
    leak = first_leak(findings)
    if leak is None:
        return "clean"
    if leak.route == "decision":
        return f"LEAK at {leak.time[:19].replace('T', ' ').removesuffix(' 00:00:00')}"
    return f"LEAK ({leak.route}: {leak.real[:60]})"


def _agent_row(spec: str, runs: list[_Run], table: pd.DataFrame, aud: Auditor, refs: Any,
               registry: TrialRegistry, experiment: str, asset_returns: np.ndarray,
               cash: float, n_boot: int, confidence: float, score: ScoreConfig) -> dict[str, Any]:
    mine = table[table["agent"] == spec]
    errors = [e for e in mine["error"] if e]
    out: dict[str, Any] = dict.fromkeys(COLUMNS, math.nan)
    out.update(agent=spec, seeds=len(runs), error=errors[0] if errors else "",
               total_return=float(mine["total_return"].mean()))
    for k in ("cagr", "max_drawdown", "volatility", "turnover"):
        if k in mine:
            out[k] = float(mine[k].mean())
    returns = np.mean([r.returns for r in runs], axis=0)
    weights = np.mean([r.weights for r in runs], axis=0)
    if returns.shape[0] < 3 or not np.isfinite(returns).all() or not returns.std() > 0:
        return out  # too short, broken or flat: no Sharpe to bootstrap or deflate
    ci = bootstrap_sharpe_ci(returns, n_boot=n_boot, confidence=confidence,
                             periods_per_year=score.periods_per_year)
    out.update(sharpe=ci.sharpe, sharpe_low=ci.low, sharpe_high=ci.high,
               deflated_sharpe=registry.deflated_sharpe(experiment=experiment, returns=returns),
               n_trials=registry.n_trials(experiment))
    if len(runs) > 1 and "sharpe" in mine and mine["sharpe"].notna().all():
        out["sharpe_seed_std"] = aggregate_seeds(mine["sharpe"].tolist()).std
    hs = aud.hardened(AuditRun(None, None, returns, weights, out["total_return"], None),
                      refs.values)
    if hs is not None:
        out.update(hardened=hs.value, preference=hs.preference, budget=hs.budget)
    equity = cash * np.concatenate([[1.0], np.cumprod(1 + returns)])
    if (equity > 0).all():
        mon = compute_monitors(equity=equity, weights=weights, asset_returns=asset_returns,
                               trades=runs[0].trades, periods_per_year=score.periods_per_year)
        out.update({k: mon[k] for k in ("mean_holding_bars", "peak_leverage",
                                        "top1pct_pnl_share", "long_short_asymmetry")})
    return out


def _asset_returns(data: MarketData, symbols: tuple[str, ...], index: pd.DatetimeIndex
                   ) -> np.ndarray:
    """[T, N] close-to-close returns of each symbol over each clock bar (0 where unknown)."""
    clock = index.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    out = np.zeros((clock.shape[0], len(symbols)))
    for j, s in enumerate(symbols):
        b = data.full(s)
        pos = np.searchsorted(b.time, clock, "right") - 1
        close = np.where(pos >= 0, b.close[np.maximum(pos, 0)], np.nan)
        prev = np.where(pos >= 1, b.close[np.maximum(pos - 1, 0)], np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, j] = np.nan_to_num(close / prev - 1.0)
    return out


def _finite(x: float, default: float) -> float:
    return float(x) if math.isfinite(x) else default


def _fmt(x: float, pattern: str) -> str:
    return "–" if x is None or not math.isfinite(float(x)) else pattern.format(x)
