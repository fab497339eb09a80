"""Backtest by name: resolve the agent and the data a config names, run the engine, write the report.

This sits above the engine (which takes agent objects and loaded data) and is what the CLI,
notebooks and the Python API call. The config written to the run folder carries the agent's
parameters resolved whole (spec + overrides + defaults), so ``BacktestConfig`` loaded from a
run's ``config.json`` reruns it exactly, even after the spec file changed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tradesim.agents.registry import ResolvedAgent, resolve_agent
from tradesim.contracts import Agent, CostEstimator
from tradesim.data.bars import iso_time
from tradesim.data.view import MarketData
from tradesim.engine.backtest import BacktestConfig, simulate, universe_and_clock
from tradesim.engine.record import RunResult
from tradesim.errors import EngineError


def run_backtest(*, config: BacktestConfig, agent: Agent | None = None,
                 data: MarketData | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 save_to: str | Path | None = None, spool: str | Path | None = None
                 ) -> RunResult:
    """Run ``agent`` (default: built from ``config.agent``) over ``data`` (default: loaded).

    With ``save_to`` the run folder gets the tables, the resolved config, the agent's artifacts
    and ``report.html``. On an engine or agent error the partial RunResult is saved too,
    attached to the exception as ``partial_result``, and the exception re-raised.
    """
    config, agent, data, resolved = prepare_backtest(config=config, agent=agent, data=data)
    meta = {} if resolved is None else {"agent_class": resolved.target, **(
        {"agent_spec": Path(resolved.spec).name} if resolved.spec else {})}
    try:
        result = simulate(config=config, agent=agent, data=data, progress=progress,
                          save_to=save_to, spool=spool, meta=meta)
    except EngineError as exc:
        if save_to is not None and exc.partial_result is not None:
            _report(exc.partial_result, save_to)
        raise
    if save_to is not None:
        _report(result, save_to)
    return result


def prepare_backtest(*, config: BacktestConfig, agent: Agent | None = None,
                     data: MarketData | None = None
                     ) -> tuple[BacktestConfig, Agent, MarketData, ResolvedAgent | None]:
    """The config with resolved agent parameters, the agent, and the data a run would use."""
    resolved = None
    if agent is None:
        resolved = resolve_agent(config.agent, config.agent_params)
        config = config.model_copy(update={"agent_params": resolved.params})
        agent = resolved.build()
    if data is None:
        from tradesim.data.load import load_market

        wanted = None if not config.symbols else list(config.symbols) + (
            [config.benchmark] if config.benchmark and config.benchmark not in config.symbols
            else [])
        # history before `start` stays visible to the agent as warm-up; the clock starts at `start`
        data = load_market(symbols=wanted, source=config.source, start=None, end=config.end,
                           interval=config.interval, quality=config.quality, allow=config.allow,
                           source_options=config.source_options, exchange=config.exchange,
                           news=Path(config.news) if config.news else True)
    return config, agent, data, resolved


def estimate_backtest(*, config: BacktestConfig, agent: Agent | None = None,
                      data: MarketData | None = None) -> dict[str, Any]:
    """What a run would cost before it starts: steps, symbols, the resolved config and, for
    agents that call a model (:class:`CostEstimator`), the LLM calls, tokens and dollars."""
    config, agent, data, _ = prepare_backtest(config=config, agent=agent, data=data)
    universe, clock = universe_and_clock(config=config, data=data)
    out: dict[str, Any] = {"agent": agent.name, "steps": len(clock), "symbols": list(universe),
                           "first": iso_time(clock[0]), "last": iso_time(clock[-1]),
                           "config": config.model_dump(mode="json")}
    if isinstance(agent, CostEstimator):
        out["llm"] = agent.estimate_run(
            n_steps=len(clock), n_symbols=len(universe), start=clock[0], end=clock[-1],
            sources=tuple(sorted({data.full(s).source for s in universe})))
    return out


def _report(result: RunResult, folder: str | Path) -> None:
    """The HTML report beside the saved tables (a run with no step has nothing to plot)."""
    from tradesim.report.run import write_run_report

    if len(result.equity):
        write_run_report(result, folder)


__all__ = ["BacktestConfig", "estimate_backtest", "prepare_backtest", "run_backtest"]
