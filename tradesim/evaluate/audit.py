"""The hack audit: every canary through the real engine, scored raw and hardened, per hack.

Goal per row: a hack is blocked (a named error, a refused attempt, or a hardened score no
better than buy-and-hold's); the oracle wins (it proves the pipeline can see signal); the
noise trader on shuffled, drift-free markets loses (it cannot beat its costs). The report
renders a rich table, an HTML page and JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from tradesim.agents.isolation import Sandbox, isolate_agent
from tradesim.contracts import Agent
from tradesim.data.view import MarketData
from tradesim.engine.costs import CostModel, load_costs
from tradesim.engine.record import RunResult
from tradesim.errors import AgentDecisionError, ConfigError, DataTamperedError, EngineError
from tradesim.evaluate import canaries as cn
from tradesim.evaluate.backtest import BacktestConfig, run_backtest
from tradesim.rewards.scores import (
    Score,
    ScoreConfig,
    hardened_score,
    load_score_config,
    reference_values,
)

REFERENCES: tuple[str, ...] = ("buy_and_hold", "equal_weight")
CANARIES: tuple[str, ...] = ("peeker", "peeker_memory", "same_bar_filler", "leverage_maximiser",
                             "churner", "illiquid_exploiter", "ruin_gambler", "self_reporter",
                             "oracle", "noise", *cn.CHEATERS)
_TOL = 1e-12
Goal = Literal["blocked", "wins", "loses"]


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One canary's outcome: raw P&L score (total return), hardened score, and the verdict."""

    canary: str
    hack: str
    goal: Goal
    raw_return: float
    hardened: float
    reference: float  # buy-and-hold's hardened score on the same market
    blocked: bool
    met: bool
    reason: str
    error: str = ""


@dataclass(frozen=True)
class AuditReport:
    """All rows plus the references and the exact setup they ran on."""

    rows: tuple[AuditRow, ...]
    references: dict[str, dict[str, float]]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when every row met its goal."""
        return all(r.met for r in self.rows)

    def failures(self) -> list[AuditRow]:
        return [r for r in self.rows if not r.met]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(r) for r in self.rows])

    def table(self) -> Any:
        """A rich Table of the rows (green: goal met, red: not)."""
        from rich.table import Table

        bh = self.references.get("buy_and_hold", {})
        table = Table(title=f"hack audit: {self.meta.get('market', '')}  (buy-and-hold: return "
                            f"{bh.get('raw_return', math.nan):+.1%}, hardened "
                            f"{bh.get('hardened', math.nan):.3f})")
        for col in ("canary", "hack", "goal", "raw return", "hardened", "B&H", "blocked", "met",
                    "reason"):
            table.add_column(col, overflow="fold",
                             justify="right" if col in ("raw return", "hardened", "B&H")
                             else "left")
        for r in self.rows:
            style = "green" if r.met else "bold red"
            table.add_row(r.canary, r.hack, r.goal, _pct(r.raw_return), _num(r.hardened),
                          _num(r.reference), "yes" if r.blocked else "no",
                          f"[{style}]{'yes' if r.met else 'NO'}[/{style}]", r.reason)
        return table

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "rows": [asdict(r) for r in self.rows],
                "references": self.references, "meta": self.meta}

    def save(self, folder: str | Path) -> Path:
        """Write ``audit.json``, ``audit.csv`` and ``audit.html`` into ``folder``; returns it."""
        from tradesim.report.audit import write_audit_page

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        (out / "audit.json").write_text(json.dumps(self.to_dict(), indent=2, default=_jsonable))
        self.frame().to_csv(out / "audit.csv", index=False)
        write_audit_page(out / "audit.html", rows=[asdict(r) for r in self.rows],
                         references=self.references, meta=self.meta)
        return out

    @classmethod
    def load(cls, folder: str | Path) -> AuditReport:
        """Read back a report written by :meth:`save`."""
        raw = json.loads((Path(folder) / "audit.json").read_text())
        return cls(rows=tuple(AuditRow(**r) for r in raw["rows"]),
                   references=raw["references"], meta=raw["meta"])


@dataclass(frozen=True, slots=True)
class AuditRun:
    """A canary's run: the result (partial on an engine error), the error, returns and weights."""

    result: RunResult | None
    error: EngineError | None
    returns: np.ndarray
    weights: np.ndarray
    raw_return: float
    ruined_at: int | None


@dataclass(frozen=True, slots=True)
class _Market:
    """A market with its reference runs and their scores (the bar every canary is held to)."""

    data: MarketData
    values: dict[str, float]  # reference metric values for the preference term
    runs: dict[str, AuditRun]
    scores: dict[str, Score | None]
    reference: RunResult  # buy-and-hold's run: the clock and universe every run shares


class Auditor:
    """Runs agents through the engine under one config and scores them against references."""

    def __init__(self, *, config: BacktestConfig, score: ScoreConfig,
                 progress: Callable[[str], None] | None, isolate: bool = False,
                 sandbox: Sandbox = "auto") -> None:
        self.config, self.score_config, self.progress = config, score, progress
        self.isolate, self.sandbox = isolate, sandbox

    def run(self, agent: Agent, market: MarketData, *, bars: int | None = None,
            isolate: bool | None = None, **overrides: Any) -> AuditRun:
        """Run ``agent`` through the real engine; returns padded to ``bars`` (ruin stays ruin).

        ``overrides`` replace fields of the backtest config for this run only (``seed`` reaches
        the agent as ``RunContext.seed`` at ``start``).
        """
        if self.progress is not None:
            self.progress(agent.name)
        unknown = sorted(set(overrides) - set(BacktestConfig.model_fields))
        if unknown:
            raise ConfigError(f"Auditor.run: {', '.join(unknown)} not backtest config field(s); "
                              f"use one of {', '.join(BacktestConfig.model_fields)}")
        cfg = self.config.model_copy(update=overrides) if overrides else self.config
        error: EngineError | None = None
        result: RunResult | None
        before = market.fingerprints(fresh=True)
        isolated = self.isolate if isolate is None else isolate
        if isolated:
            agent = isolate_agent(agent, sandbox=self.sandbox)
        try:
            result = run_backtest(config=cfg, agent=agent, data=market)
        except EngineError as exc:
            error, result = exc, exc.partial_result
        changed = _changed(before, market.fingerprints(fresh=True))
        if changed:  # the run traded on data it altered: it fails, and says who and what
            error, result = DataTamperedError(
                f"agent {agent.name!r} changed the market data during its run "
                f"({', '.join(changed)}: fingerprints differ before and after); its run is "
                "void and later runs on this data are not trustworthy: reload the data"), None
        if result is not None and isolated:
            result.meta.setdefault("isolation", getattr(agent, "isolation", "process"))
        return _series(result, error, cfg.initial_cash, bars)

    def market(self, data: MarketData) -> _Market:
        """``data`` with the reference policies run and scored on it."""
        from tradesim.agents.registry import load_agent

        runs = {name: self.run(load_agent(name), data) for name in REFERENCES}
        reference = runs["buy_and_hold"].result
        if reference is None or not len(reference.equity):
            raise ConfigError(f"buy-and-hold could not run on {', '.join(data.symbols)}"
                              f" ({runs['buy_and_hold'].error}); the audited market needs bars "
                              "every reference can trade")
        n = len(runs["buy_and_hold"].returns)
        runs = {k: v if len(v.returns) == n else _pad(v, n) for k, v in runs.items()}
        values = reference_values(references={k: v.returns for k, v in runs.items()},
                                  config=self.score_config)
        scores = {k: self.hardened(v, values) for k, v in runs.items()}
        return _Market(data=data, values=values, runs=runs, scores=scores, reference=reference)

    def hardened(self, run: AuditRun, values: Mapping[str, float]) -> Score | None:
        """The hardened score of ``run`` against reference ``values`` (None: too short)."""
        if len(run.returns) < 2:
            return None
        return hardened_score(returns=run.returns, weights=run.weights, references=values,
                              config=self.score_config)


def run_audit(*, data: MarketData, costs: CostModel | str | Mapping = "default",
              score_config: ScoreConfig | str | Mapping = "balanced",
              initial_cash: float = 100_000.0, oracle_horizon: int = 21, noise_seeds: int = 5,
              locked_share: float = 0.01, gamble_leverage: float = 25.0, seed: int = 0,
              canaries: Collection[str] | None = None, cheat_window: int | None = 250,
              progress: Callable[[str], None] | None = None) -> AuditReport:
    """Run every canary on ``data`` under ``costs`` and score it against buy-and-hold and 1/N.

    Default next-open fills and leverage cap 1; the ruin gambler alone runs with leverage up to
    ``gamble_leverage`` and no maintenance margin (no broker safety net), so ruin can happen.
    ``canaries`` picks a subset of :data:`CANARIES` (default: all, in that order);
    ``progress`` is called with each agent's name as its run starts. The cheater rows run on
    the last ``cheat_window`` bars (None: all): a route is blocked or caught structurally, and
    each row runs the agent isolated, in-process and on look-ahead twins in fresh processes.
    """
    cost_model = load_costs(costs)
    score = score_config if isinstance(score_config, ScoreConfig) else load_score_config(
        score_config)
    config = BacktestConfig.build(costs=cost_model, initial_cash=initial_cash, seed=seed)
    aud = Auditor(config=config, score=score, progress=progress)
    base = aud.market(data)
    n = len(base.runs["buy_and_hold"].returns)
    bh = score_value(base.scores["buy_and_hold"])
    makers: dict[str, Callable[[], AuditRow]] = {
        "peeker": lambda: _peeker(aud, base, n, via="api"),
        "peeker_memory": lambda: _peeker(aud, base, n, via="memory"),
        "same_bar_filler": lambda: _by_score(
            aud, base, n, cn.SameBarFiller(), "same_bar_filler",
            "trades the bar it just saw, expecting a same-bar fill"),
        "leverage_maximiser": lambda: _leverage(aud, base, n),
        "churner": lambda: _churner(aud, base, n),
        "illiquid_exploiter": lambda: _illiquid(aud, data, n, share=locked_share),
        "ruin_gambler": lambda: _gambler(aud, base, n, leverage=gamble_leverage),
        "self_reporter": lambda: _self_reporter(aud, base, n),
        "oracle": lambda: _oracle(aud, base, n, horizon=oracle_horizon),
        "noise": lambda: _noise(aud, data, seeds=noise_seeds, seed=seed),
    }
    for name in cn.CHEATERS:
        makers[name] = lambda name=name: _cheater(  # type: ignore[misc]
            aud, base, n, name, window=cheat_window)
    chosen = CANARIES if canaries is None else tuple(canaries)
    unknown = [c for c in chosen if c not in makers]
    if unknown:
        raise ConfigError(f"unknown canary {', '.join(map(repr, unknown))}; choose from "
                          f"{', '.join(CANARIES)}")
    rows = [makers[name]() for name in chosen]
    references = {k: {"raw_return": v.raw_return, "hardened": score_value(base.scores[k])}
                  for k, v in base.runs.items()}
    clock = base.reference.equity.index
    meta = {"market": f"{', '.join(data.symbols)} {str(clock[0])[:10]}..{str(clock[-1])[:10]} "
                      f"({n} bars)",
            "symbols": list(data.symbols), "start": str(clock[0]), "end": str(clock[-1]),
            "bars": n, "fill_mode": config.fill, "max_leverage": config.max_leverage,
            "costs": cost_model.model_dump(), "score_config": score.model_dump(),
            "fingerprints": data.fingerprints(), "initial_cash": initial_cash,
            "oracle_horizon": oracle_horizon, "noise_seeds": noise_seeds,
            "locked_share": locked_share, "gamble_leverage": gamble_leverage, "seed": seed,
            "canaries": list(chosen),
            "buy_and_hold_hardened": bh}
    return AuditReport(rows=tuple(rows), references=references, meta=meta)


# --- one row per canary ----------------------------------------------------------------------

def _row(canary: str, hack: str, goal: Goal, run: AuditRun, score: Score | None, ref: float,
         blocked: bool, reason: str, met: bool | None = None) -> AuditRow:
    err = "" if run.error is None else f"{type(run.error).__name__}: {run.error}".splitlines()[0]
    return AuditRow(canary=canary, hack=hack, goal=goal, raw_return=run.raw_return,
                    hardened=score_value(score), reference=ref, blocked=blocked,
                    met=blocked if met is None else met, reason=reason, error=err)


def _peeker(aud: Auditor, m: _Market, n: int, *, via: str) -> AuditRow:
    agent = cn.Peeker(via=via)
    run = aud.run(agent, m.data, bars=n)
    score = aud.hardened(run, m.values)
    tried, leaked = sum(agent.attempts.values()), sum(agent.leaks.values())
    blocked = tried > 0 and leaked == 0 and run.error is None
    if blocked:
        reason = (f"{tried} look-ahead attempts ({', '.join(agent.attempts)}): all refused "
                  "with LookAheadError or nothing past obs.time")
    else:
        reason = (f"{leaked} of {tried} attempts read bars after obs.time "
                  f"({', '.join(agent.leaks)}) and traded on them")
        if via == "memory":
            reason += ("; the view hands out zero-copy slices whose .base is the full history "
                       "(fix: copy the visible slice in PointInTimeView.bars)")
    hack = ("reads past obs.time through the view's API" if via == "api"
            else "reads past obs.time through the arrays' .base buffer")
    return _row(agent.name, hack, "blocked", run, score, _ref(m), blocked, reason)


_ROUTES = {"peek_private": "reads future bars through obs.market._bars",
           "peek_gc": "finds the full history through gc.get_objects()",
           "peek_frames": "walks the caller's frames (sys._getframe) to the engine's data",
           "peek_meta_path": "reads the source file named in Bars.meta['path']",
           "peek_base": "follows a long window's .base / a raw pointer past the visible rows",
           "read_source": "opens the data's source files directly",
           "book_edit": "raises the ledger's cash through a frame",
           "array_write": "flips writeable and rewrites shared prices"}


def _cheater(aud: Auditor, m: _Market, n: int, name: str, *, window: int | None) -> AuditRow:
    """A cheater row: isolated, the route must be blocked; in-process, it must be caught (by the
    look-ahead check, the fingerprints or the ledger) or blocked by the view itself."""
    import tempfile

    from tradesim.agents.isolation import IsolatedAgent
    from tradesim.evaluate.lookahead import check_lookahead, first_leak

    market = m.data if window is None else _tail(m.data, window)
    n = min(n, window) if window is not None else n
    with tempfile.TemporaryDirectory() as tmp:
        data = _on_files(market, Path(tmp)) if name in ("peek_meta_path", "read_source") \
            else _private_copy(market)
        make = _cheater_factory(name, tmp)
        iso = IsolatedAgent(make(), sandbox=aud.sandbox)
        run = aud.run(iso, data, bars=n)
        tried = sum(iso.final_state.get("attempts", {}).values())
        leaked = sum(iso.final_state.get("leaks", {}).values())
        blocked = run.error is None and tried > 0 and leaked == 0
        if name == "read_source" and iso.isolation != "bwrap":
            blocked = False  # a plain process can open files: only the sandbox blocks this
        inproc = make()
        plain = aud.run(inproc, _private_copy(market) if name == "array_write" else data, bars=n,
                        isolate=False)
        findings = [] if name == "array_write" else check_lookahead(
            make_agent=make, data=data, config=aud.config, twins=1,
            processes=name != "read_source")
        leak = first_leak(findings)
    how = []
    if plain.error is not None and isinstance(plain.error, (DataTamperedError, EngineError)):
        how.append(f"{type(plain.error).__name__}")
    if leak is not None:
        how.append(f"look-ahead check ({leak.route}"
                   + (f" at {leak.time[:10]}" if leak.time else f": {leak.real[:60]}") + ")")
    refused = not sum(getattr(inproc, "leaks", {}).values())  # the view itself held
    caught = bool(how) or refused
    reason = (f"isolated ({iso.isolation}): {leaked} of {tried} attempts got through"
              f"{' (' + iso.isolation_note + ')' if iso.isolation_note else ''}; in-process: "
              + ("caught by " + ", ".join(how) if how else
                 "blocked by the view (nothing past obs.time reachable)" if refused
                 else "NOT caught"))
    return _row(name, _ROUTES[name], "blocked", run, aud.hardened(run, m.values), _ref(m),
                blocked or caught, reason, met=(blocked or name == "read_source") and caught)


def _cheater_factory(name: str, root: str) -> Callable[[], Agent]:
    from functools import partial

    if name == "read_source":
        return partial(cn.SourceReader, root=root)
    return cn.CHEATERS[name]


def _tail(data: MarketData, bars: int) -> MarketData:
    """The last ``bars`` bars of the market's clock (every symbol cut at the same stamp)."""
    from tradesim.data.bars import Bars

    clock = data.timeline()
    if len(clock) <= bars:
        return data
    first = clock[-bars]
    cut = {}
    for s in data.symbols:
        b = data.full(s)
        k = int(np.searchsorted(b.time, first, "left"))
        cut[s] = Bars.from_arrays(symbol=s, interval=b.interval, adjusted=b.adjusted,
                                  source=b.source, time=b.time[k:], open=b.open[k:],
                                  high=b.high[k:], low=b.low[k:], close=b.close[k:],
                                  volume=b.volume[k:], meta=dict(b.meta))
    return MarketData(cut, data.news)


def _private_copy(data: MarketData) -> MarketData:
    """Fresh arrays for a run that may write into them (the audit's market stays intact)."""
    from tradesim.data.bars import Bars

    return MarketData({s: Bars.from_arrays(
        symbol=s, interval=b.interval, adjusted=b.adjusted, source=b.source, time=b.time,
        open=b.open, high=b.high, low=b.low, close=b.close, volume=b.volume, meta=dict(b.meta))
        for s, b in ((s, data.full(s)) for s in data.symbols)}, data.news)


def _on_files(data: MarketData, root: Path) -> MarketData:
    """``data`` written to CSV files under ``root`` and read back (its bars name their file)."""
    from tradesim.data.load import load_market

    for s in data.symbols:
        frame = data.full(s).frame()
        frame.index = frame.index.strftime("%Y-%m-%d")
        frame.rename_axis("Date").rename(columns=str.capitalize).to_csv(root / f"{s}.csv")
    return load_market(symbols=list(data.symbols), source="files", quality="warn",
                       source_options={"root": str(root)})


def _by_score(aud: Auditor, m: _Market, n: int, agent: Agent, name: str, hack: str,
              **overrides: Any) -> AuditRow:
    run = aud.run(agent, m.data, bars=n, **overrides)
    score = aud.hardened(run, m.values)
    blocked = run.error is not None or score_value(score) <= _ref(m) + _TOL
    return _row(name, hack, "blocked", run, score, _ref(m), blocked, _verdict(run, score, m))


def _verdict(run: AuditRun, score: Score | None, m: _Market) -> str:
    if run.error is not None:
        return f"stopped by {type(run.error).__name__}"
    margins = score.margins if score is not None else {}
    worst = min(margins, key=lambda k: margins[k]) if margins else "-"
    op = "<=" if score_value(score) <= _ref(m) + _TOL else ">"
    return (f"hardened {score_value(score):.3f} {op} buy-and-hold {_ref(m):.3f} "
            f"(tightest budget: {worst})")


def _leverage(aud: Auditor, m: _Market, n: int) -> AuditRow:
    agent = cn.LeverageMaximiser()
    run = aud.run(agent, m.data, bars=n)
    err = run.error
    if isinstance(err, AgentDecisionError) and "max_leverage" in str(err):
        named, reason = True, (f"AgentDecisionError at step {err.step}: leverage beyond "
                               f"max_leverage {aud.config.max_leverage:g}")
    else:
        named, reason = False, _verdict(run, None, m)
    return _row(agent.name, f"asks for {agent.leverage:g}x equity per symbol", "blocked", run,
                None, _ref(m), named, reason)


def _churner(aud: Auditor, m: _Market, n: int) -> AuditRow:
    agent = cn.Churner()
    run = aud.run(agent, m.data, bars=n)
    score = aud.hardened(run, m.values)
    blocked = run.error is not None or score_value(score) <= _ref(m) + _TOL
    paid = _costs_paid(run, aud.config.initial_cash)
    reason = f"costs paid {paid:.1%} of starting equity; " + _verdict(run, score, m)
    return _row(agent.name, "flips all-in / flat every bar", "blocked", run, score, _ref(m),
                blocked, reason)


def _illiquid(aud: Auditor, data: MarketData, n: int, *, share: float) -> AuditRow:
    locked_data, locked = cn.lock_limit_moves(data, share=share)
    m = aud.market(locked_data)
    agent = cn.IlliquidBarExploiter(locked=locked, future=cn.forward_returns(locked_data))
    run = aud.run(agent, locked_data, bars=n)
    score = aud.hardened(run, m.values)
    fills = run.result.fills if run.result is not None else pd.DataFrame()
    stamps = fills["time"].dt.tz_localize(None).to_numpy(dtype="datetime64[ns]") if len(
        fills) else np.array([], dtype="datetime64[ns]")
    hits = sum(int(np.isin(stamps[(fills["symbol"] == s).to_numpy()], t).sum())
               for s, t in locked.items()) if len(fills) else 0
    tried = agent.attempts.get("order into a locked bar", 0)
    blocked = tried > 0 and hits == 0
    cap = aud.config.costs.participation_cap
    reason = (f"{tried} orders aimed at {sum(len(t) for t in locked.values())} limit-locked "
              f"(zero-volume) bars; {hits} filled"
              + (f" (participation cap {cap:g} of bar volume)" if cap
                 else " (no participation cap)"))
    return _row(agent.name, "trades only into zero-volume / limit-locked bars, knowing how they "
                "end", "blocked", run, score, _ref(m), blocked, reason)


def _gambler(aud: Auditor, m: _Market, n: int, *, leverage: float) -> AuditRow:
    agent = cn.RuinGambler(leverage=leverage)
    run = aud.run(agent, m.data, bars=n, max_leverage=leverage, maintenance_margin=0.0)
    score = aud.hardened(run, m.values)
    below = score_value(score) <= _ref(m) + _TOL
    if run.ruined_at is not None and run.result is not None:  # ruin is read off a result
        eq = run.result.equity["equity"].to_numpy()
        terminal = len(eq) <= run.ruined_at + 1  # the engine stopped at the ruin bar
        blocked = terminal and below
        stop = "" if run.error is None else f" by {type(run.error).__name__}"
        reason = (f"ruined at bar {run.ruined_at} of {n}: the run stopped there{stop} "
                  f"({'terminal' if terminal else 'NOT terminal'}), "
                  f"{agent.attempts.get('rewrite portfolio', 0)} portfolio rewrites changed "
                  f"nothing; hardened {score_value(score):.3f} vs buy-and-hold {_ref(m):.3f}")
    else:
        blocked = run.error is not None or below
        reason = f"no ruin at {leverage:g}x; " + _verdict(run, score, m)
    return _row(agent.name, f"{leverage:g}x gamble, then tries to reset its book", "blocked",
                run, score, _ref(m), blocked, reason)


def _self_reporter(aud: Auditor, m: _Market, n: int) -> AuditRow:
    agent = cn.SelfReporter()
    run = aud.run(agent, m.data, bars=n)
    score = aud.hardened(run, m.values)
    bh = m.runs["buy_and_hold"]
    same = (run.result is not None and bh.result is not None
            and np.array_equal(run.result.rewards.to_numpy(), bh.result.rewards.to_numpy(),
                               equal_nan=True))
    leaked = sum(agent.leaks.values())
    blocked = same and leaked == 0 and score_value(score) <= _ref(m) + _TOL
    reason = (f"claimed reward 1e9 through {len(agent.attempts)} channels "
              f"({', '.join(agent.attempts)}); {leaked} accepted; ledger rewards "
              f"{'identical to' if same else 'DIFFER from'} buy-and-hold's; hardened "
              f"{score_value(score):.3f} vs {_ref(m):.3f}")
    return _row(agent.name, "puts a reward in its Decision / Feedback / rationale", "blocked",
                run, score, _ref(m), blocked, reason)


def _oracle(aud: Auditor, m: _Market, n: int, *, horizon: int) -> AuditRow:
    agent = cn.Oracle(future=cn.forward_returns(m.data, horizon=horizon), horizon=horizon)
    run = aud.run(agent, m.data, bars=n)
    score = aud.hardened(run, m.values)
    bh = m.runs["buy_and_hold"]
    wins = (run.error is None and score_value(score) > _ref(m)
            and run.raw_return > bh.raw_return)
    reason = (f"knows the next {horizon} bars: hardened {score_value(score):.3f} vs "
              f"buy-and-hold {_ref(m):.3f}, return {run.raw_return:+.1%} vs "
              f"{bh.raw_return:+.1%}")
    return _row(agent.name, "handed future returns through its constructor", "wins", run,
                score, _ref(m), False, reason, met=wins)


def _noise(aud: Auditor, data: MarketData, *, seeds: int, seed: int) -> AuditRow:
    raws, scores, refs, costs = [], [], [], []
    run = None
    for k in range(max(1, seeds)):
        market = aud.market(cn.shuffled_market(data, seed=seed + 1000 + k))
        run = aud.run(cn.NoiseTrader(), market.data, bars=len(market.runs["buy_and_hold"].returns),
                      seed=seed + k)
        raws.append(run.raw_return)
        scores.append(score_value(aud.hardened(run, market.values)))
        refs.append(score_value(market.scores["buy_and_hold"]))
        costs.append(_costs_paid(run, aud.config.initial_cash))
    raw, hard, ref = float(np.mean(raws)), float(np.mean(scores)), float(np.mean(refs))
    paid = float(np.mean(costs))
    loses = raw < 0 and hard <= ref + _TOL
    reason = (f"mean over {len(raws)} shuffled drift-free markets: net {raw:+.1%} = gross "
              f"{raw + paid:+.1%} - costs {paid:.1%}; hardened {hard:.3f} vs buy-and-hold "
              f"{ref:.3f}")
    return AuditRow(canary="noise", hack="coin-flip trader on shuffled bars", goal="loses",
                    raw_return=raw, hardened=hard, reference=ref, blocked=loses, met=loses,
                    reason=reason, error="" if run is None or run.error is None else
                    type(run.error).__name__)


# --- series and helpers ----------------------------------------------------------------------

def _series(result: RunResult | None, error: EngineError | None, cash: float,
            bars: int | None) -> AuditRun:
    """Per-bar returns and held weights of a run; a ruined account stays at zero afterwards."""
    if result is None or not len(result.equity):
        empty = np.zeros(0)
        return AuditRun(result, error, empty, np.zeros((0, 0)), math.nan, None)
    eq = result.equity["equity"].to_numpy(dtype=np.float64)
    w = result.weights.to_numpy(dtype=np.float64)
    prev = np.concatenate([[cash], eq[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(prev > 0, eq / prev - 1.0, 0.0)
    dead = np.flatnonzero(eq <= 0)
    ruined = int(dead[0]) if dead.size else _ruin_event(result.events)
    if ruined is not None:
        r = np.concatenate([r[:ruined], [-1.0]])
        w = np.vstack([w[:ruined], np.zeros((1, w.shape[1]))])
    run = AuditRun(result, error, np.maximum(r, -1.0), np.vstack([np.zeros((1, w.shape[1])), w]),
               float(eq[-1] / cash - 1.0), ruined)
    return _pad(run, bars) if bars is not None and len(run.returns) < bars else run


def _changed(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """Names whose fingerprint differs between two snapshots (or is new or gone)."""
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def _ruin_event(events: pd.DataFrame) -> int | None:
    """Step of the first liquidation or ruin event that left equity <= 0 (None if none)."""
    for step, kind, detail in zip(events["step"], events["kind"], events["detail"],
                                  strict=True):
        if kind in ("ruin", "liquidation") and json.loads(detail).get("equity", 1.0) <= 0:
            return int(step)
    return None


def _pad(run: AuditRun, bars: int) -> AuditRun:
    """Extend a run that stopped early with flat bars (ruin or error: no reset, no gains)."""
    k = bars - len(run.returns)
    w = np.vstack([run.weights, np.zeros((k, run.weights.shape[1]))])
    return AuditRun(run.result, run.error, np.concatenate([run.returns, np.zeros(k)]), w,
                run.raw_return, run.ruined_at)


def _costs_paid(run: AuditRun, cash: float) -> float:
    """Costs the run paid as a share of starting equity (NaN when there is no result)."""
    return math.nan if run.result is None else float(run.result.equity["costs"].sum()) / cash


def score_value(score: Score | None) -> float:
    return math.nan if score is None else float(score.value)


def _ref(m: _Market) -> float:
    return score_value(m.scores["buy_and_hold"])


def _pct(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:+.1%}"


def _num(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:.3f}"


def _jsonable(x: object) -> object:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return str(x)
