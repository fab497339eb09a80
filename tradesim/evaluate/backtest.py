"""Backtest by name: resolve the agent and the data a config names, run the engine, write the report.

This sits above the engine (which takes agent objects and loaded data) and is what the CLI,
notebooks and the Python API call. The config written to the run folder carries the agent's
parameters resolved whole (spec + overrides + defaults), so ``BacktestConfig`` loaded from a
run's ``config.json`` reruns it exactly, even after the spec file changed.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tradesim.agents.isolation import IsolatedAgent, Sandbox
from tradesim.agents.registry import ResolvedAgent, resolve_agent
from tradesim.contracts import Agent, CostEstimator
from tradesim.data.bars import iso_time
from tradesim.data.view import MarketData
from tradesim.engine.backtest import BacktestConfig, simulate, universe_and_clock
from tradesim.engine.record import RunResult
from tradesim.errors import EngineError

IN_PROCESS = "in-process"


@dataclass(frozen=True)
class IsolationPlan:
    """How an agent runs: ``agent`` is what the engine drives (an IsolatedAgent or the agent
    itself), ``mode`` is ``bwrap``, ``process`` or ``in-process``, ``note`` says why."""

    agent: Agent
    mode: str
    note: str = ""


def plan_isolation(agent: Agent, *, isolate: bool, sandbox: Sandbox = "auto",
                   fallback: bool = False) -> IsolationPlan:
    """``agent`` isolated (sandboxed where bubblewrap works) or, without ``isolate``, in-process.

    Without ``fallback`` (``backtest --isolate``: asked for explicitly) an agent that cannot be
    isolated is a ConfigError. With it (``evaluate``, the paper daemon) the stated rule applies:
    an agent that carries an LLM gateway (a ``gateway`` attribute: llm_analyst, contest,
    tradinggroup) runs in-process, since the isolated child gets neither the network (sandbox)
    nor the API key, cache and call journal (plain process); an agent that declares
    ``needs_network = True`` runs in a plain process (no sandbox); an agent that does not pickle
    runs in-process. A run that fails once isolated is reported as failed, never retried
    in-process (an agent must not escape isolation by crashing).
    """
    if isinstance(agent, IsolatedAgent):
        return IsolationPlan(agent, agent.isolation, agent.isolation_note)
    if not isolate:
        return IsolationPlan(agent, IN_PROCESS)
    if fallback:
        if hasattr(type(agent), "gateway") or hasattr(agent, "_gateway"):
            return IsolationPlan(agent, IN_PROCESS, "calls an LLM through the gateway (needs its "
                                 "key, cache and journal; the look-ahead check covers it)")
        try:
            pickle.dumps(agent)
        except Exception as exc:
            return IsolationPlan(agent, IN_PROCESS, f"does not pickle ({type(exc).__name__})")
        if getattr(agent, "needs_network", False) and sandbox != "process":
            iso = IsolatedAgent(agent, sandbox="process")
            return IsolationPlan(iso, iso.isolation, "needs_network: plain process, no sandbox")
    iso = IsolatedAgent(agent, sandbox=sandbox)
    return IsolationPlan(iso, iso.isolation, iso.isolation_note)


def run_backtest(*, config: BacktestConfig, agent: Agent | None = None,
                 data: MarketData | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 save_to: str | Path | None = None, spool: str | Path | None = None,
                 isolate: bool = False, sandbox: Sandbox = "auto") -> RunResult:
    """Run ``agent`` (default: built from ``config.agent``) over ``data`` (default: loaded).

    With ``save_to`` the run folder gets the tables, the resolved config, the agent's artifacts
    and ``report.html``. On an engine or agent error the partial RunResult is saved too,
    attached to the exception as ``partial_result``, and the exception re-raised. ``isolate``
    runs the agent in its own process (:class:`~tradesim.agents.isolation.IsolatedAgent`,
    sandboxed by bubblewrap where it works, else as ``sandbox`` says); the run's meta records
    ``isolation`` (``bwrap``, ``process`` or ``in-process``). An isolated agent's own artifacts
    (an LLM journal) stay in its process.
    """
    config, agent, data, resolved = prepare_backtest(config=config, agent=agent, data=data)
    plan = plan_isolation(agent, isolate=isolate, sandbox=sandbox)
    agent = plan.agent
    meta: dict[str, Any] = {"isolation": plan.mode, **(
        {"isolation_note": plan.note} if plan.note else {})}
    if resolved is not None:
        meta.update({"agent_class": resolved.target, **(
            {"agent_spec": Path(resolved.spec).name} if resolved.spec else {})})
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


__all__ = ["IN_PROCESS", "BacktestConfig", "IsolationPlan", "estimate_backtest", "plan_isolation",
           "prepare_backtest", "run_backtest"]
