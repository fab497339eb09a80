"""Backtest: a frozen, TOML-loadable config and an agent in, a RunResult out (partial on failure).

The engine takes an agent object and loaded data; resolving an agent by name, loading data and
writing the HTML report are the job of :func:`tradesim.evaluate.backtest.run_backtest` above it.
"""

from __future__ import annotations

import dataclasses
import time as _time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import (
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tradesim.contracts import Agent, RunArtifacts, RunContext
from tradesim.data.bars import to_utc_stamp
from tradesim.data.view import MarketData
from tradesim.engine.account import Account, AccountConfig
from tradesim.engine.feed import HistoricalFeed, closes_on
from tradesim.engine.record import Recorder, RunResult
from tradesim.engine.session import Session
from tradesim.errors import ConfigError, EngineError, TradesimError


class BacktestConfig(AccountConfig):
    """Everything that defines a backtest (the account's rules from :class:`AccountConfig`, then
    agent, data and run settings); snapshotted into every RunResult."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent: str = Field("buy_and_hold", description="built-in name, module:Class or TOML spec")
    agent_params: dict[str, Any] = Field(default_factory=dict)
    symbols: tuple[str, ...] = ()
    start: str | None = None
    end: str | None = None
    source: str = "sample"
    source_options: dict[str, Any] = Field(default_factory=dict,
                                           description='e.g. {root = "prices/"} for files')
    interval: str = "1d"
    exchange: str | None = Field(None, description="calendar for file stamps and checks: an "
                                 "exchange code such as XNYS, or 24/7 for round-the-clock data")
    news: str | None = Field(None, description="a news file loaded with the bars")
    quality: Literal["raise", "warn", "repair"] = "raise"
    allow: tuple[str, ...] = Field((), description="quality checks to skip, e.g. zero_volume")
    benchmark: str | None = None
    on_agent_error: Literal["raise", "hold"] = "raise"
    seed: int = 0

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbols(cls, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [s for s in value.replace(",", " ").split() if s]
        return tuple(value)

    @model_validator(mode="after")
    def _dates(self) -> BacktestConfig:
        for key in ("start", "end"):
            value = getattr(self, key)
            if value is not None:
                try:
                    to_utc_stamp(value)
                except (ValueError, TypeError) as exc:
                    raise ValueError(f"{key} = {value!r} is not a date (use YYYY-MM-DD)") from exc
        if self.start and self.end and to_utc_stamp(self.start) > to_utc_stamp(self.end):
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> BacktestConfig:
        """Load a config file (top level or a ``[backtest]`` table), then apply ``overrides``."""
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {p}: {exc}") from exc
        return cls.build(**{**raw.get("backtest", raw), **overrides})

    @classmethod
    def build(cls, **fields: Any) -> BacktestConfig:
        """Validate ``fields``; errors become ConfigError naming the key."""
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            lines = [f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()]
            raise ConfigError("invalid backtest config:\n  " + "\n  ".join(lines)) from exc


def simulate(*, config: BacktestConfig, agent: Agent, data: MarketData,
             progress: Callable[[int, int], None] | None = None,
             save_to: str | Path | None = None, spool: str | Path | None = None,
             meta: dict[str, Any] | None = None) -> RunResult:
    """Run ``agent`` over ``data`` as ``config`` says: a session on the historical clock.

    ``save_to`` writes the run folder (tables, config, meta, the agent's own artifacts; the HTML
    report is the caller's). ``spool`` keeps the recorder's packed chunks on disk instead of in
    memory (bounded memory on very long runs). On an engine or agent error the partial
    RunResult is built (and saved when ``save_to`` is given), attached to the exception as
    ``partial_result``, and the exception re-raised. ``meta`` adds run facts to the record.
    """
    universe, clock = universe_and_clock(config=config, data=data)
    account = Account(symbols=universe, config=config)
    recorder = Recorder(clock=clock, symbols=universe, spool=spool)
    context = RunContext(universe=universe, interval=config.interval, clock="historical",
                         seed=config.seed, run_folder=None if save_to is None else Path(save_to),
                         start=clock[0], end=clock[-1])
    session = Session(agent=agent, account=account, recorder=recorder, context=context,
                      on_agent_error=config.on_agent_error)
    meta = {"agent": agent.name, "bars": len(clock), "partial": False, **(meta or {})}
    bench = closes_on(data, config.benchmark, clock) if config.benchmark else None
    started = _time.perf_counter()
    feed = HistoricalFeed(data=data, universe=universe, clock=clock, interval=config.interval)
    try:
        session.run(feed, progress=progress)
    except EngineError as exc:
        meta.update(partial=True, error=f"{type(exc).__name__}: {exc}",
                    costs_paid=account.ledger.cost_totals())
        exc.partial_result = _finish(config, data, agent, recorder, bench, meta, started,
                                     save_to)
        raise
    meta["costs_paid"] = account.ledger.cost_totals()
    if session.stopped == "ruin":
        meta["stopped"] = "ruin: equity fell to zero or below"
    return _finish(config, data, agent, recorder, bench, meta, started, save_to)


def universe_and_clock(*, config: BacktestConfig, data: MarketData
                       ) -> tuple[tuple[str, ...], np.ndarray]:
    """The symbols a run of ``config`` trades on ``data`` and the bar-end stamps it steps through."""
    universe = config.symbols or tuple(s for s in data.symbols if s != config.benchmark)
    if not universe:
        raise ConfigError("no symbols to trade: name them (symbols = [...] / --symbols A,B)")
    for s in (*universe, *([config.benchmark] if config.benchmark else [])):
        data.full(s)  # UnknownSymbolError names it and lists what is loaded
    clock = run_clock(data, universe, config)
    if not len(clock):
        raise ConfigError(f"no bars of {', '.join(universe)} between {config.start} and "
                          f"{config.end}; widen the dates or check the data")
    return universe, clock


def run_clock(data: MarketData, universe: tuple[str, ...], config: BacktestConfig) -> np.ndarray:
    """Bar-end stamps of the universe within [start, end] (earlier bars stay visible as history)."""
    stamps = np.sort(np.concatenate([data.full(s).time for s in universe]))
    clock = stamps[np.r_[True, stamps[1:] != stamps[:-1]]]  # np.unique, without its slow path
    if config.start:
        clock = clock[clock >= to_utc_stamp(config.start)]
    if config.end:
        end = to_utc_stamp(config.end)
        if len(config.end) <= 10:  # a date: include bars ending any time that day
            end = end + np.timedelta64(1, "D") - np.timedelta64(1, "ns")
        clock = clock[clock <= end]
    return clock


def _finish(config: BacktestConfig, data: MarketData, agent: Agent, recorder: Recorder,
            bench: np.ndarray | None, meta: dict[str, Any], started: float,
            save_to: str | Path | None) -> RunResult:
    meta["seconds"] = round(_time.perf_counter() - started, 6)
    from tradesim.rewards.metrics import compute_metrics

    result = recorder.build(config=config.model_dump(mode="json"), fingerprints=data.fingerprints(),
                            fill_mode=config.fill, benchmark=bench,
                            initial_cash=config.initial_cash, meta=meta,
                            metrics_fn=compute_metrics)
    result.meta["monitors"] = _monitors(result, config)
    repairs = data.repairs
    if len(repairs):
        result = dataclasses.replace(result, repairs=repairs)
        result.meta["repairs"] = len(repairs)
    if isinstance(agent, RunArtifacts) and len(result.equity):
        extra = agent.run_meta(start=recorder.clock[0], end=recorder.clock[-1])
        warnings = [*result.meta.get("warnings", []), *extra.pop("warnings", [])]
        result.meta.update(extra)
        if warnings:
            result.meta["warnings"] = warnings
    if save_to is not None:
        result.save(save_to)
        if isinstance(agent, RunArtifacts):
            agent.save_artifacts(Path(save_to))
    return result


def _monitors(result: RunResult, config: BacktestConfig) -> dict[str, Any]:
    """Hack monitors (turnover, holding time, leverage, P&L concentration) for every run."""
    from tradesim.rewards.monitors import compute_monitors

    if not len(result.equity):
        return {}
    equity = np.r_[config.initial_cash, result.equity["equity"].to_numpy()]
    weights = result.weights.to_numpy(dtype=float)
    weights = np.vstack([np.zeros((1, weights.shape[1])), np.nan_to_num(weights)])
    ppy = result.metrics.get("periods_per_year") or 252.0
    try:
        return compute_monitors(equity=equity, weights=weights, trades=result.trades,
                                periods_per_year=float(ppy))
    except TradesimError as exc:  # e.g. a ruined curve: say so rather than drop the record
        return {"error": str(exc)}
