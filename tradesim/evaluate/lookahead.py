"""Counterfactual look-ahead check: change only the future, and the past decisions must not change.

For a cut time t*, a *twin* market keeps every bar ending at or before t* and every news item
available by t*, and replaces everything later (prices scaled by a random walk, volumes
shuffled, later news dropped or rewritten). An agent that decides only from what was knowable
takes identical decisions up to t* on the real market and on its twins; a decision at or
before t* that differs is a leak, reported with the first differing step. This is the same idea
as freqtrade's lookahead-analysis, applied to bars and news and to any agent type.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tradesim.contracts import Agent
from tradesim.data.bars import Bars, News
from tradesim.data.view import MarketData
from tradesim.engine.backtest import BacktestConfig, simulate, universe_and_clock
from tradesim.engine.record import RunResult
from tradesim.errors import EngineError, LedgerInvariantError

ALTERATIONS: tuple[str, ...] = ("walk+drop_news", "walk+rewrite_news")


def twin_market(data: MarketData, *, cut: np.datetime64, seed: int,
                news: str = "drop", prices: str = "walk") -> MarketData:
    """``data`` with everything after ``cut`` altered and nothing at or before it changed.

    Later bars follow a different random walk from the last visible close (``prices="walk"``:
    no later value equals the original) or mirror the real path (``prices="mirror"``: every
    later move, open/high/low/close, inverted around the previous close, so an agent that
    peeks at the direction of any future bar decides differently for certain), later volumes
    are redrawn, and later news is dropped
    (``news="drop"``) or kept with its stamps and symbols but rewritten text
    (``news="rewrite"``). Labels and meta stay as they were, so a twin cannot be told apart
    from the original by its provenance; it lives in memory only (no file holds it).
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
        if prices == "mirror":
            opens, highs, lows, closes = _mirror(b, k, base)
        else:
            walk = base * np.exp(np.cumsum(rng.normal(0.0, 0.03, n)))
            gap = np.exp(rng.normal(0.0, 0.01, n))
            opens = walk / gap
            closes = walk * np.exp(rng.normal(0.0, 0.01, n))
            highs = np.maximum(opens, closes) * (1 + rng.uniform(0.0, 0.02, n))
            lows = np.minimum(opens, closes) * (1 - rng.uniform(0.0, 0.02, n))
        vol = b.volume[k:] * rng.uniform(0.2, 3.0, n)
        bars[symbol] = Bars.from_arrays(
            symbol=symbol, interval=b.interval, adjusted=b.adjusted, source=b.source,
            time=b.time, open=np.r_[b.open[:k], opens], high=np.r_[b.high[:k], highs],
            low=np.r_[b.low[:k], lows], close=np.r_[b.close[:k], closes],
            volume=np.r_[b.volume[:k], vol], meta=dict(b.meta))
    items = data.news
    keep = int(np.searchsorted(items.available_at, cut, "right"))
    if not len(items):
        later = News.empty()
    elif news == "rewrite" and keep < len(items):
        text = np.array([f"rewritten item {i} (seed {seed})" for i in range(len(items) - keep)],
                        dtype=object)
        later = News(items.published_at, items.available_at, items.symbol,
                     np.r_[items.title[:keep], text], np.r_[items.body[:keep], text],
                     items.source)
    else:
        later = items.head(keep)
    return MarketData(bars, later)


def _mirror(b: Bars, k: int, base: float) -> tuple[np.ndarray, ...]:
    """Bars ``k..`` with every move from the previous close inverted (high and low swap)."""
    prev = np.r_[b.close[k - 1] if k else b.open[0], b.close[k:-1]]
    step = np.exp(-np.log(b.close[k:] / prev))
    closes = base * np.cumprod(step)
    before = np.r_[base, closes[:-1]]  # the twin's previous close
    flip = lambda x: before * prev / x  # x / prev inverted around the twin's previous close
    return flip(b.open[k:]), flip(b.low[k:]), flip(b.high[k:]), closes


@dataclass(frozen=True)
class LookaheadFinding:
    """A leak: a decision at or before a cut that changed when only the future changed
    (``route="decision"``), or a run that opened the data's source file (``"file"``), wrote the
    market data (``"data"``) or edited its books (``"books"``)."""

    cut: str
    twin: int
    step: int
    time: str
    real: str
    twin_decision: str
    route: str = "decision"


def _journal(result: RunResult) -> pd.DataFrame:
    cols = ["step", "time", "weights", "stop_loss", "take_profit"]
    return result.decisions[cols].reset_index(drop=True)


def check_lookahead(*, make_agent: Callable[[], Agent], data: MarketData, config: BacktestConfig,
                    cuts: Sequence[np.datetime64] | None = None, twins: int = 2,
                    seed: int = 0, processes: bool | None = None,
                    isolate: bool = False) -> list[LookaheadFinding]:
    """Run a fresh agent on ``data`` and on ``twins`` twins per cut; return every leak found
    (empty: clean). Cuts default to 30%, 55% and 80% through the run's clock; twin ``k`` of a
    cut uses alteration ``ALTERATIONS[k % 2]``.

    Each run happens in a fresh process holding only its own market (``processes``; default:
    when ``make_agent`` pickles), so an in-process agent cannot find the real data through
    memory while it runs on a twin. Each run also watches for opens of the data's source
    files, for writes to the market data (fresh fingerprints) and for cash that the fills do
    not account for. ``isolate`` runs the agent in its own sandboxed process besides.
    """
    if processes is None:
        processes = _pickles(make_agent)
    watch = _source_paths(data)
    jobs: list[tuple[int, int, MarketData]] = [(-1, 0, data)]
    clock = universe_and_clock(config=config, data=data)[1]
    if cuts is None:
        cuts = [clock[int(len(clock) * f)] for f in (0.3, 0.55, 0.8)] if len(clock) > 3 else []
    for c, cut in enumerate(cuts):
        for k in range(twins):
            jobs.append((c, k, twin_market(data, cut=cut, seed=seed + 101 * c + k,
                                           news="drop" if k % 2 == 0 else "rewrite",
                                           prices="mirror" if (c + k) % 2 == 0 else "walk")))
    if processes:
        outs = _in_workers(make_agent, jobs, config, watch, isolate)
    else:
        outs = [_one_run(make_agent, d, config, watch, isolate) for _, _, d in jobs]
    journal = outs[0][0]
    findings = [*_side_findings(outs[0], "", -1)]
    for (c, k, _), out in zip(jobs[1:], outs[1:], strict=True):
        cut = cuts[c]
        findings.extend(_side_findings(out, str(cut), k))
        other = out[0]
        stamp = pd.Timestamp(cut, tz="UTC")
        found = _first_difference(journal[journal["time"] <= stamp], other[other["time"] <= stamp])
        if found is not None:
            step, a, b = found
            findings.append(LookaheadFinding(
                cut=str(cut), twin=k, step=step,
                time=str(clock[step]) if step < len(clock) else "", real=a, twin_decision=b))
    return findings


def first_leak(findings: Sequence[LookaheadFinding]) -> LookaheadFinding | None:
    """The earliest finding by step (None: clean)."""
    return min(findings, key=lambda f: (f.step, f.cut)) if findings else None


_Out = tuple[pd.DataFrame, list[str], str | None, list[str]]  # journal, opened, books, data


def _side_findings(out: _Out, cut: str, twin: int) -> list[LookaheadFinding]:
    journal, opened, books, changed = out
    found = []
    if opened:
        found.append(LookaheadFinding(cut=cut, twin=twin, step=-1, time="", route="file",
                                      real=f"opened {opened[0]}", twin_decision=""))
    if books:
        found.append(LookaheadFinding(cut=cut, twin=twin, step=-1, time="", route="books",
                                      real=books, twin_decision=""))
    if changed:
        found.append(LookaheadFinding(cut=cut, twin=twin, step=-1, time="", route="data",
                                      real=f"changed {', '.join(changed)}", twin_decision=""))
    return found


def _one_run(make_agent: Callable[[], Agent], data: MarketData, config: BacktestConfig,
             watch: Sequence[str], isolate: bool) -> _Out:
    """One run with its watchers: (journal, source files opened, books finding, data changed)."""
    agent = make_agent()
    if isolate:
        from tradesim.agents.isolation import isolate_agent

        agent = isolate_agent(agent)
    before = data.fingerprints(fresh=True)
    _WATCH[:] = list(watch)
    _OPENED.clear()
    _install_hook()
    try:
        result, error = _run(agent, data, config)
    finally:
        _WATCH.clear()
    opened = list(_OPENED)
    after = data.fingerprints(fresh=True)
    changed = sorted(k for k in before if before[k] != after.get(k))
    books = (f"{type(error).__name__}: {str(error).splitlines()[0]}"
             if isinstance(error, LedgerInvariantError)
             else books_mismatch(result, config.initial_cash))
    return _journal(result), opened, books, changed


def _rebuild(payload: dict) -> MarketData:
    """A market from plain arrays (sealed again: a pickled array arrives writeable)."""
    bars = {s: Bars.from_arrays(**fields) for s, fields in payload["bars"].items()}
    news = News.from_frame(payload["news"]) if payload["news"] is not None else None
    return MarketData(bars, news)


def _payload(data: MarketData) -> dict:
    bars = {}
    for s in data.symbols:
        b = data.full(s)
        bars[s] = {"symbol": s, "interval": b.interval, "adjusted": b.adjusted,
                   "source": b.source, "meta": dict(b.meta),
                   **{c: np.asarray(getattr(b, c)) for c in
                      ("time", "open", "high", "low", "close", "volume")}}
    return {"bars": bars, "news": data.news.frame() if len(data.news) else None}


def _worker(make_agent: Callable[[], Agent], payload: dict, config: BacktestConfig,
            watch: Sequence[str], isolate: bool) -> _Out:
    return _one_run(make_agent, _rebuild(payload), config, watch, isolate)


def _in_workers(make_agent: Callable[[], Agent], jobs: list[tuple[int, int, MarketData]],
                config: BacktestConfig, watch: Sequence[str], isolate: bool) -> list[_Out]:
    """Each run in a fresh spawned process (one task per process), two at a time."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1), mp_context=ctx,
                             max_tasks_per_child=1) as pool:
        futures = [pool.submit(_worker, make_agent, _payload(d), config, watch, isolate)
                   for _, _, d in jobs]
        return [f.result() for f in futures]


def _pickles(obj: object) -> bool:
    import pickle

    try:
        pickle.dumps(obj)
    except Exception:
        return False
    return True


def books_mismatch(result: RunResult, initial_cash: float, *, tol: float = 1e-6) -> str | None:
    """Where the recorded cash moved other than by the fills and charged costs (None: never).

    Replays the ledger from the run's own fills: cash change + traded value + costs is zero
    at every honest step; a book edited through a frame leaves the difference.
    """
    if not len(result.equity):
        return None
    cash = np.r_[initial_cash, result.equity["cash"].to_numpy(dtype=float)]
    flow = np.zeros(len(result.equity))
    if len(result.fills):
        steps = result.fills["step"].to_numpy()
        ok = steps < len(flow)
        np.add.at(flow, steps[ok], (result.fills["quantity"] * result.fills["price"]
                                    ).to_numpy(dtype=float)[ok])
    resid = np.diff(cash) + flow + result.equity["costs"].to_numpy(dtype=float)
    scale = tol * max(initial_cash, float(np.nanmax(np.abs(cash))))
    bad = np.flatnonzero(np.abs(np.nan_to_num(resid)) > scale)
    if not bad.size:
        return None
    i = int(bad[0])
    return (f"cash moved by {resid[i]:+,.2f} more than fills and costs account for at step {i} "
            f"({result.equity.index[i]})")


_WATCH: list[str] = []
_OPENED: list[str] = []
_HOOKED: list[bool] = []


def _install_hook() -> None:
    """Once per process: note opens of watched source paths while a check's run is under way."""
    if _HOOKED:
        return
    _HOOKED.append(True)

    def hook(event: str, args: tuple) -> None:
        if event == "open" and _WATCH and args and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.path.realpath(os.fsdecode(args[0]))
            if any(path == w or path.startswith(w + os.sep) for w in _WATCH):
                _OPENED.append(path)

    sys.addaudithook(hook)


def _source_paths(data: MarketData) -> list[str]:
    """Files (and their folders) the market was read from, as named in its bars' meta."""
    out: set[str] = set()
    for s in data.symbols:
        path = data.full(s).meta.get("path")
        if isinstance(path, str) and path:
            real = os.path.realpath(path)
            out.update((real, os.path.dirname(real)))
    return sorted(out)


def _run(agent: Agent, data: MarketData, config: BacktestConfig
         ) -> tuple[RunResult, EngineError | None]:
    try:
        return simulate(config=config, agent=agent, data=data), None
    except EngineError as exc:  # a failing run still has the decisions it took
        if exc.partial_result is None:
            raise
        result: RunResult = exc.partial_result
        return result, exc


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
