"""Counterfactual look-ahead check: change only the future, and the past decisions must not change.

For a cut time t*, a *twin* market keeps every bar ending at or before t* and every news item
available by t*, and replaces everything later (prices scaled by a random walk, volumes
shuffled, later news dropped or rewritten). An agent that decides only from what was knowable
takes identical decisions up to t* on the real market and on its twins; a decision at or
before t* that differs is a leak, reported with the first differing step. This is the same idea
as freqtrade's lookahead-analysis, applied to bars and news and to any agent type.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tradesim.contracts import Agent
from tradesim.data.bars import Bars, News
from tradesim.data.view import MarketData
from tradesim.engine.backtest import BacktestConfig, simulate
from tradesim.engine.record import RunResult
from tradesim.errors import EngineError


def twin_market(data: MarketData, *, cut: np.datetime64, seed: int) -> MarketData:
    """``data`` with everything after ``cut`` altered and nothing at or before it changed.

    Later bars follow a different random walk from the last visible close (so no later value
    equals the original), later volumes are redrawn, and later news is dropped.
    """
    rng = np.random.default_rng(seed)
    bars = {}
    for symbol in data.symbols:
        b = data.full(symbol)
        k = int(np.searchsorted(b.time, cut, "right"))
        if k == len(b):
            bars[symbol] = b
            continue
        n = len(b) - k
        base = b.close[k - 1] if k else b.open[0]
        walk = base * np.exp(np.cumsum(rng.normal(0.0, 0.03, n)))
        gap = np.exp(rng.normal(0.0, 0.01, n))
        opens = walk / gap
        closes = walk * np.exp(rng.normal(0.0, 0.01, n))
        highs = np.maximum(opens, closes) * (1 + rng.uniform(0.0, 0.02, n))
        lows = np.minimum(opens, closes) * (1 - rng.uniform(0.0, 0.02, n))
        vol = b.volume[k:] * rng.uniform(0.2, 3.0, n)
        bars[symbol] = Bars.from_arrays(
            symbol=symbol, interval=b.interval, adjusted=b.adjusted, source=f"twin:{b.source}",
            time=b.time, open=np.r_[b.open[:k], opens], high=np.r_[b.high[:k], highs],
            low=np.r_[b.low[:k], lows], close=np.r_[b.close[:k], closes],
            volume=np.r_[b.volume[:k], vol])
    news = data.news
    keep = int(np.searchsorted(news.available_at, cut, "right"))
    return MarketData(bars, news.head(keep) if len(news) else News.empty())


@dataclass(frozen=True)
class LookaheadFinding:
    """A decision at or before a cut that changed when only the future changed."""

    cut: str
    twin: int
    step: int
    time: str
    real: str
    twin_decision: str


def _journal(result: RunResult) -> pd.DataFrame:
    cols = ["step", "time", "weights", "stop_loss", "take_profit"]
    return result.decisions[cols].reset_index(drop=True)


def check_lookahead(*, make_agent: Callable[[], Agent], data: MarketData, config: BacktestConfig,
                    cuts: Sequence[np.datetime64] | None = None, twins: int = 2,
                    seed: int = 0) -> list[LookaheadFinding]:
    """Run a fresh agent on ``data`` and on ``twins`` twins per cut; return every leak found
    (empty: clean). Cuts default to 30%, 55% and 80% through the run's clock."""
    real = _run(make_agent(), data, config)
    journal = _journal(real)
    clock = real.equity.index.tz_localize(None).to_numpy("datetime64[ns]")
    if cuts is None:
        cuts = [clock[int(len(clock) * f)] for f in (0.3, 0.55, 0.8)] if len(clock) > 3 else []
    findings = []
    for c, cut in enumerate(cuts):
        for k in range(twins):
            twin = _run(make_agent(), twin_market(data, cut=cut, seed=seed + 101 * c + k), config)
            other = _journal(twin)
            mine = journal[journal["time"] <= pd.Timestamp(cut, tz="UTC")]
            theirs = other[other["time"] <= pd.Timestamp(cut, tz="UTC")]
            finding = _first_difference(mine, theirs)
            if finding is not None:
                step, a, b = finding
                findings.append(LookaheadFinding(
                    cut=str(cut), twin=k, step=step,
                    time=str(clock[step]) if step < len(clock) else "", real=a, twin_decision=b))
    return findings


def _run(agent: Agent, data: MarketData, config: BacktestConfig) -> RunResult:
    try:
        return simulate(config=config, agent=agent, data=data)
    except EngineError as exc:  # a failing run still has the decisions it took
        if exc.partial_result is None:
            raise
        result: RunResult = exc.partial_result
        return result


def _first_difference(a: pd.DataFrame, b: pd.DataFrame) -> tuple[int, str, str] | None:
    """(step, real, twin) of the first journal row that differs (a missing row differs too)."""
    n = max(len(a), len(b))
    for i in range(n):
        ra = a.iloc[i] if i < len(a) else None
        rb = b.iloc[i] if i < len(b) else None
        if ra is None or rb is None or not ra.equals(rb):
            row = ra if ra is not None else rb
            assert row is not None  # one of the two journals has row i
            step = int(row["step"])
            return step, "" if ra is None else str(ra["weights"]), (
                "" if rb is None else str(rb["weights"]))
    return None
