"""The paper daemon: the engine's Session on a live clock, made durable, idempotent and observable.

Per tick (one SQLite transaction, :mod:`tradesim.live.store`): apply a kill-switch request,
step the Session (fills of earlier orders at this bar, the agent's decision, new orders), give
each new order its client order id and hand it to the broker, check the risk limits, then write
everything with the engine checkpoint and the agent's ``state()``. The rule for an interrupted
tick: a tick without its commit record never happened and is redone from scratch from the last
checkpoint (the simulated broker's orders live in that checkpoint; an external broker's pending
intents are looked up by client order id, never resent blindly). At start the book is restored
and reconciled against the fill log and the broker; any disagreement refuses the start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import pickle
import signal
import threading
import time as _time
from pathlib import Path
from typing import Any

import numpy as np

from tradesim.contracts import Agent, RunContext
from tradesim.data.bars import iso_time
from tradesim.data.calendars import bar_days
from tradesim.data.view import MarketData
from tradesim.engine.account import Account
from tradesim.engine.broker import Order
from tradesim.engine.feed import Tick
from tradesim.engine.record import Recorder
from tradesim.engine.session import Session
from tradesim.live.broker import PaperBroker, SimulatedBroker, client_order_id
from tradesim.live.config import PaperConfig
from tradesim.live.errors import PaperSessionError, ReconciliationError, SessionLockedError
from tradesim.live.feeds import Fetch, PollingFeed, ReplayFeed, yahoo_fetch
from tradesim.live.health import HealthServer, new_token
from tradesim.live.store import SessionStore, TickRecord
from tradesim.live.switch import ACTIVE, HALTED, SWITCH_FILE, Guard, parse_state

log = logging.getLogger("tradesim.live")
CRASH_ENV = "TRADESIM_PAPER_CRASH"  # fault injection for the crash tests: "phase@step"
_TOL = 1e-9
_RUN_ONLY = ("isolate", "sandbox")  # session settings a resume may change


def session_folder(home: Path, name: str) -> Path:
    return Path(home) / name


def _crash_hook() -> Any:
    """SIGKILL this process at ``phase@step`` when :data:`CRASH_ENV` asks for it (tests)."""
    spec = os.environ.get(CRASH_ENV, "")
    if "@" not in spec:
        return None
    phase, step = spec.split("@")

    def crash(at: str, i: int) -> None:
        if at == phase and i == int(step):
            os.kill(os.getpid(), signal.SIGKILL)

    return crash


class _TickRecorder(Recorder):
    """A recorder that keeps only the current tick (the database keeps the rest)."""

    def __init__(self, symbols: tuple[str, ...]) -> None:
        super().__init__(symbols=symbols)
        self.clear()

    def clear(self) -> None:
        self.t_rows: list[dict[str, Any]] = []
        self.t_decisions: list[tuple] = []
        self.t_fills: list = []
        self.t_orders: list[Order] = []
        self.t_events: list[dict] = []

    def row(self, **kw: Any) -> None:
        self.t_rows.append(kw)
        self.steps = kw["step"] + 1

    def decision(self, **kw: Any) -> None:
        self.t_decisions.append((kw["step"], kw["time"], kw["decision"], kw.get("fallback", ""),
                                 kw.get("error", "")))

    def take(self, fills: list, orders: list[Order], events: list[dict]) -> None:
        self.t_fills.extend(fills)
        self.t_orders.extend(orders)
        self.t_events.extend(events)

    def event(self, **kw: Any) -> None:
        self.t_events.append(kw)


class _Lock:
    """An exclusive flock on ``session.lock`` next to the database (released on any exit)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "session.lock"
        self._fh = open(self.path, "a+")  # noqa: SIM115 - held for the daemon's life
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "another process"
            self._fh.close()
            raise SessionLockedError(
                f"session {folder.name} is already run by pid {holder}; stop it first "
                f"(tradesim paper stop {folder.name}) or wait for it to exit") from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(str(os.getpid()))
        self._fh.flush()

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()


def lock_holder(folder: Path) -> int | None:
    """The pid holding the session's lock, or None when no daemon runs it."""
    path = folder / "session.lock"
    if not path.is_file():
        return None
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            text = fh.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


class PaperDaemon:
    """One paper session: ``run()`` starts or resumes it and returns how it ended.

    ``data`` (replay feed) and ``agent`` default to what the config loads; ``fetch`` replaces
    the yfinance poller (tests use a local server or a stub).
    """

    def __init__(self, config: PaperConfig, *, home: str | Path, data: MarketData | None = None,
                 agent: Agent | None = None, fetch: Fetch | None = None,
                 broker: PaperBroker | None = None, handle_signals: bool = True) -> None:
        self.config, self.home = config, Path(home)
        self.folder = session_folder(self.home, config.name)
        self._data, self._agent, self._fetch, self._broker = data, agent, fetch, broker
        self.handle_signals = handle_signals
        self.stop_event = threading.Event()
        self.health: dict[str, Any] = {"status": "starting", "state": ACTIVE}
        self._last_wall = 0.0
        self._next_beat = 0.0
        self.feed: ReplayFeed | PollingFeed | None = None
        self.ticks_done = 0
        self.isolation = "in-process"  # set by _setup: bwrap, process or in-process

    # --- the run ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the current tick and exit cleanly (what SIGTERM does)."""
        self.stop_event.set()

    def run(self) -> str:
        """Run until the feed ends ("finished"), a stop ("stopped") or ruin ("ruin")."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = _Lock(self.folder)
        store = None
        server = None
        old = self._install_signals()
        try:
            store = SessionStore(self.folder / "session.db", crash=_crash_hook())
            self.store = store
            meta = self._init_meta(store)
            if meta.get("finished") is not None:
                log.info("session %s already finished (%s)", self.config.name, meta["finished"])
                return "finished"
            self._setup(store)
            token = new_token()
            _write_private(self.folder / "token", token)
            server = HealthServer(snapshot=self.snapshot, token=token,
                                  port=self.config.health.port).start()
            _write_private(self.folder / "health.json", json.dumps(
                {"host": server.host, "port": server.port, "pid": os.getpid()}))
            return self._loop(store)
        finally:
            if server is not None:
                server.close()
            if store is not None:
                store.close()
            self._restore_signals(old)
            lock.release()

    def _install_signals(self) -> Any:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return None

        def on_term(signum: int, frame: object) -> None:
            log.info("signal %d: finishing the tick, then stopping", signum)
            self.stop_event.set()

        return (signal.signal(signal.SIGTERM, on_term), signal.signal(signal.SIGINT, on_term))

    def _restore_signals(self, old: Any) -> None:
        if old is not None:
            signal.signal(signal.SIGTERM, old[0])
            signal.signal(signal.SIGINT, old[1])

    def _init_meta(self, store: SessionStore) -> dict[str, Any]:
        meta = store.meta()
        wanted = self.config.model_dump(mode="json")
        if "config" not in meta:
            store.set_meta(config=wanted, created=_time.time())
            return store.meta()
        # isolation changes where the agent runs, not what it decides: a resume may switch it
        mine, saved = ({k: v for k, v in c.items() if k not in _RUN_ONLY}
                       for c in (wanted, meta["config"]))
        if mine != saved:
            changed = sorted(k for k in set(mine) | set(saved) if mine.get(k) != saved.get(k))
            raise PaperSessionError(
                f"session {self.config.name} was started with a different config (changed: "
                f"{', '.join(changed)}); a running book cannot switch configs: restore the "
                f"session file, or start a new session under another name")
        return meta

    def _setup(self, store: SessionStore) -> None:
        """Agent, data, account (restored and reconciled), session and feed."""
        from tradesim.agents.registry import resolve_agent
        from tradesim.engine.backtest import universe_and_clock
        from tradesim.evaluate.backtest import prepare_backtest

        cfg = self.config.engine
        agent = self._agent
        target = None
        if agent is None:
            resolved = resolve_agent(cfg.agent, cfg.agent_params)
            cfg = cfg.model_copy(update={"agent_params": resolved.params})
            agent, target = resolved.build(), resolved.target
        clock = None
        if self.config.feed.kind == "replay":
            _, _, data, _ = prepare_backtest(config=cfg, agent=agent, data=self._data)
            universe, clock = universe_and_clock(config=cfg, data=data)
            fingerprints = data.fingerprints()
        else:
            data = None
            universe = cfg.symbols
            if not universe:
                raise PaperSessionError(f"session {self.config.name}: a live feed needs the "
                                        "symbols listed (symbols = [\"AAPL\", ...])")
            fingerprints = {}
        self.universe = universe
        if "symbols" not in store.meta():
            store.set_meta(symbols=list(universe), agent=agent.name, fingerprints=fingerprints)
        agent = self._isolation(store, agent, target)
        account, restored = self._restore(store, universe)
        self.account = account
        self.broker = self._broker or SimulatedBroker(account, restored.get("coids"))
        self._reconcile(store, restored)
        self.guard = Guard(agent, restored.get("mode", ACTIVE))
        self.risk: dict[str, Any] = restored.get("risk", {})
        self.rec = _TickRecorder(universe)
        context = RunContext(universe=universe, interval=cfg.interval, clock="live",
                             seed=cfg.seed, run_folder=self.folder,
                             start=None if clock is None else clock[0])
        self.session = Session(agent=self.guard, account=account, recorder=self.rec,
                               context=context, on_agent_error=cfg.on_agent_error)
        if "session" in restored:
            self.session.resume(restored["session"])
        self._max_oid = restored.get("max_oid", 0)
        self._llm_seen = 0
        start = store.last_step() + 1
        self.session.begin(state=restored.get("agent_state"))
        if self.config.feed.kind == "replay":
            assert data is not None and clock is not None
            self.feed = ReplayFeed(data=data, universe=universe, clock=clock,
                                   interval=cfg.interval, pace_s=self.config.feed.pace_s,
                                   start_step=start, stop=self.stop_event)
        else:
            last = store.last_tick()
            after = (np.datetime64(int(last["time"]), "ns") if last else
                     np.datetime64(int(_time.time() * 1e9), "ns"))
            f = self.config.feed
            self.feed = PollingFeed(universe=universe, interval=cfg.interval,
                                    exchange=cfg.exchange or "XNYS",
                                    fetch=self._fetch or yahoo_fetch(interval=cfg.interval),
                                    after=after, start_step=start,
                                    delay_s=self.config.schedule.delay_s, poll_s=f.poll_s,
                                    max_wait_s=f.max_wait_s, backoff_s=f.backoff_s,
                                    backoff_max_s=f.backoff_max_s, lookback_days=f.lookback_days,
                                    stop=self.stop_event)
        log.info("session %s: %s from step %d (%s feed, state %s)", self.config.name,
                 "resuming" if start else "starting", start, self.config.feed.kind,
                 self.guard.mode)

    def _isolation(self, store: SessionStore, agent: Agent, target: str | None) -> Agent:
        """The agent as it runs: isolated when the session says so (``isolate``), by default
        when it comes from outside the package (``target`` not ``tradesim.*``; an agent object
        handed to the daemon runs in-process unless ``isolate = true``)."""
        from tradesim.evaluate.backtest import plan_isolation

        wanted = self.config.isolate
        auto = wanted is None
        if auto:
            wanted = target is not None and not target.startswith("tradesim.")
        plan = plan_isolation(agent, isolate=bool(wanted), sandbox=self.config.sandbox,
                              fallback=auto)
        self.isolation = plan.mode
        store.set_meta(isolation=plan.mode, isolation_note=plan.note)
        log.info("agent %s runs %s%s", agent.name, plan.mode,
                 f" ({plan.note})" if plan.note else "")
        return plan.agent

    def _restore(self, store: SessionStore, universe: tuple[str, ...]
                 ) -> tuple[Account, dict[str, Any]]:
        """A fresh account, or the one of the last committed tick's checkpoint."""
        cfg = self.config.engine
        ck, last = store.checkpoint(), store.last_tick()
        if ck is None and last is None:
            return Account(symbols=universe, config=cfg), {}
        if ck is None or last is None or ck[0] != last["step"]:
            raise ReconciliationError(
                f"session {self.config.name}: the checkpoint (step {ck and ck[0]}) does not "
                f"belong to the last committed tick (step {last and last['step']}); the database "
                f"{store.path} was edited or copied mid-write: restore it from a backup, or start "
                "a new session under another name")
        state = pickle.loads(ck[1])
        state["agent_state"] = json.loads(ck[2])
        state["tick"] = last
        return state["account"], state

    def _reconcile(self, store: SessionStore, restored: dict[str, Any]) -> None:
        """Checkpoint vs fill log vs broker; raise ReconciliationError on any difference."""
        if not restored:
            return
        L, last = self.account.ledger, restored["tick"]
        problems: list[str] = []
        pos, spent = store.fill_totals()
        for j, s in enumerate(L.symbols):
            if abs(pos.get(s, 0.0) - L.shares[j]) > _TOL * max(1.0, abs(L.shares[j])):
                problems.append(f"{s}: the fill log sums to {pos.get(s, 0.0):g} shares, the "
                                f"checkpoint holds {L.shares[j]:g}")
        cash_log = L.initial_cash - spent - last["borrow_total"] - last["expense_total"]
        if abs(cash_log - L.cash) > _TOL * max(1.0, abs(L.cash)):
            problems.append(f"cash: the fill log gives {cash_log:.6f}, the checkpoint {L.cash:.6f}")
        if abs(L.equity() - last["equity"]) > _TOL * max(1.0, abs(last["equity"])):
            problems.append(f"equity: the last tick recorded {last['equity']:.6f}, the "
                            f"checkpoint gives {L.equity():.6f}")
        open_book = {o.id for o in self.account.broker.open_orders}
        open_log = store.open_order_ids()
        if open_book != open_log:
            problems.append(f"open orders: the log has {sorted(open_log)}, the checkpoint "
                            f"{sorted(open_book)}")
        coids = store.client_order_ids()
        for oid in sorted(open_book & open_log):
            if self.broker.lookup(coids[oid]) is None:
                if self.broker.external:
                    order = next(o for o in self.account.broker.open_orders if o.id == oid)
                    self.broker.submit(client_order_id=coids[oid], order=order)  # never sent
                else:
                    problems.append(f"order {coids[oid]} is open in the log but unknown to "
                                    f"the {self.broker.name} broker")
        held = {s: q for s, q in zip(L.symbols, L.shares) if q}
        if self.broker.positions() != held:
            problems.append(f"positions: broker {self.broker.positions()} vs book {held}")
        if abs(self.broker.cash() - L.cash) > _TOL * max(1.0, abs(L.cash)):
            problems.append(f"cash: broker {self.broker.cash():.6f} vs book {L.cash:.6f}")
        if problems:
            raise ReconciliationError(
                f"session {self.config.name} refuses to start: its book does not reconcile\n  "
                + "\n  ".join(problems) + f"\nThe database {store.path} or the broker account "
                "was changed outside the daemon. Restore the database from a backup (or fix "
                "the broker account) and start again, or start a new session under another "
                "name; nothing was traded.")
        log.info("reconciled step %d: %d positions, %d open orders, cash %.2f",
                 last["step"], len(held), len(open_book), L.cash)

    def _loop(self, store: SessionStore) -> str:
        assert self.feed is not None
        session = self.session
        ended = "stopped"
        try:
            for tick in self.feed:
                alive = self._tick(store, tick)
                self.ticks_done += 1
                if not alive:
                    ended = "ruin"
                    break
                if self.stop_event.is_set():
                    break
            else:
                if not self.stop_event.is_set():
                    ended = "end"
        except BaseException as exc:
            self.guard.stop(error=exc)
            raise
        if ended == "stopped":
            self.guard.stop()  # a pause: open orders stay for the next start
            log.info("session %s stopped after step %d", self.config.name, store.last_step())
            return "stopped"
        self.rec.clear()
        session.end()
        last = store.last_tick()
        step = last["step"] if last else 0
        time = np.datetime64(int(last["time"]), "ns") if last else np.datetime64("NaT", "ns")
        store.commit_end(TickRecord(step=step, time=time, book={}, positions=[], marks=[],
                                    switch=self.guard.mode, halted=[], engine=b"",
                                    agent_state="{}", closed=self.rec.t_orders,
                                    fills=self.rec.t_fills, events=self.rec.t_events),
                         reason=ended)
        log.info("session %s finished (%s) at step %d", self.config.name, ended, step)
        return "finished" if ended == "end" else ended

    # --- one tick ---------------------------------------------------------------------------

    def _tick(self, store: SessionStore, tick: Tick) -> bool:
        crash = store.crash
        account, rec, guard = self.account, self.rec, self.guard
        rec.clear()
        switches: list[tuple[str, str, str]] = []
        request_text = self._switch_request()
        if request_text is not None and request_text != guard.mode:
            switches.append((request_text, "request", "switch file / tradesim paper switch"))
            if request_text == ACTIVE:  # a manual re-activation rebases the risk limits
                self.risk = {}
        for state, _, _ in switches:
            guard.mode = state
        if guard.mode == HALTED and account.broker.open_orders:
            account.broker.cancel_all()
        equity_before = account.ledger.equity()
        alive = self.session.step(tick)
        if crash is not None:
            crash("after_step", tick.step)
        new_orders = self._new_orders()
        trip = self._risk(tick, equity_before)
        if trip and guard.mode != HALTED:
            switches.append((HALTED, "risk", trip))
            guard.mode = HALTED
            log.warning("kill switch -> HALTED: %s", trip)
        llm = self._llm_calls()
        L = account.ledger
        row = rec.t_rows[-1]
        halted = [s for s, c in zip(self.universe, tick.close) if math.isnan(c)]
        engine = pickle.dumps({"account": account, "session": self.session.checkpoint(),
                               "mode": guard.mode, "risk": self.risk, "max_oid": self._max_oid,
                               "coids": self._open_coids()}, protocol=pickle.HIGHEST_PROTOCOL)
        record = TickRecord(
            step=tick.step, time=tick.time,
            book={"equity": row["equity"], "cash": row["cash"], "gross": row["gross"],
                  "net": row["net"], "costs_total": row["costs_total"],
                  "borrow_total": L.borrow, "expense_total": L.expense, "reward": row["reward"]},
            positions=list(row["positions"]), marks=list(row["marks"]), switch=guard.mode,
            halted=halted, engine=engine,
            agent_state=json.dumps(guard.state(), sort_keys=True, allow_nan=True),
            decisions=rec.t_decisions, new_orders=new_orders, closed=rec.t_orders,
            fills=rec.t_fills, events=rec.t_events, llm=llm, switches=switches)
        store.commit_tick(record)
        if request_text is not None:
            self._consume_request(request_text)
        if self.broker.external:
            for coid, order in new_orders:  # intent committed: now the effect
                self.broker.submit(client_order_id=coid, order=order)
        if isinstance(self.broker, SimulatedBroker):
            self.broker.forget_closed()
        self._after(tick, row["equity"], halted)
        return alive

    def _new_orders(self) -> list[tuple[str, Order]]:
        """Orders created in this tick, each with its deterministic client order id."""
        fresh = sorted((o for o in (*self.account.broker.open_orders, *self.rec.t_orders)
                        if o.id > self._max_oid), key=lambda o: o.id)
        out: list[tuple[str, Order]] = []
        seen: dict[tuple[str, str], int] = {}
        for o in fresh:
            intent = f"{o.reason}:{o.kind}:{'buy' if o.quantity > 0 else 'sell'}"
            n = seen[(o.symbol, intent)] = seen.get((o.symbol, intent), -1) + 1
            coid = client_order_id(self.config.name, int(self.rec.t_rows[-1]["step"]), o.symbol,
                                   intent, n)
            if not self.broker.external:
                self.broker.submit(client_order_id=coid, order=o)
            out.append((coid, o))
            self._max_oid = max(self._max_oid, o.id)
        return out

    def _open_coids(self) -> dict[str, int]:
        if not isinstance(self.broker, SimulatedBroker):
            return {}
        open_ids = {o.id for o in self.account.broker.open_orders}
        return {c: i for c, i in self.broker._ids.items() if i in open_ids}

    def _risk(self, tick: Tick, equity_before: float) -> str:
        """The risk limit this tick broke ("" when none); updates the day start and the peak."""
        r, lim = self.risk, self.config.risk
        equity = self.account.ledger.equity()
        day = str(bar_days(np.array([tick.time], "datetime64[ns]"),
                           exchange=self.config.engine.exchange)[0])
        if r.get("day") != day:
            r["day"], r["day_start"] = day, r.get("last", equity_before)
            r["llm_day_start"] = int(np.datetime64(day, "ns").astype("int64"))
        r["peak"] = max(r.get("peak", equity_before), equity)
        r["last"] = equity
        if lim.daily_loss is not None and r["day_start"] > 0 and (
                1 - equity / r["day_start"]) >= lim.daily_loss:
            return (f"daily loss {1 - equity / r['day_start']:.2%} reached the limit "
                    f"{lim.daily_loss:.2%}")
        if lim.max_drawdown is not None and r["peak"] > 0 and (
                1 - equity / r["peak"]) >= lim.max_drawdown:
            return f"drawdown {1 - equity / r['peak']:.2%} reached the limit {lim.max_drawdown:.2%}"
        if lim.llm_usd_per_day is not None:
            spent = self.store.llm_usd_since(np.datetime64(r["llm_day_start"], "ns")) + sum(
                usd for _, usd, _ in self._pending_llm())
            if spent >= lim.llm_usd_per_day:
                return (f"LLM spend today ${spent:.4f} reached the daily budget "
                        f"${lim.llm_usd_per_day:.4f}")
        return ""

    def _pending_llm(self) -> list[tuple[str, float, dict]]:
        """Gateway journal records of this tick not yet journaled (agents with a gateway)."""
        inner = self.guard.inner
        gw = getattr(inner, "_gateway", None) or getattr(inner, "gateway", None)
        records = getattr(getattr(gw, "journal", None), "records", None)
        if not records:
            return []
        return [(r.call_id, float(r.cost_usd), {"model": r.model, "cache_hit": r.cache_hit,
                                                "prompt_tokens": r.prompt_tokens,
                                                "completion_tokens": r.completion_tokens})
                for r in records[self._llm_seen:]]

    def _llm_calls(self) -> list[tuple[str, float, dict]]:
        out = self._pending_llm()
        self._llm_seen += len(out)
        return out

    def _switch_request(self) -> str | None:
        path = self.folder / SWITCH_FILE
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            return parse_state(text)
        except PaperSessionError:
            raise
        except Exception as exc:
            log.error("ignoring kill-switch file %s: %s", path, exc)
            return None

    def _consume_request(self, state: str) -> None:
        path = self.folder / SWITCH_FILE
        with contextlib.suppress(OSError):
            if parse_state(path.read_text()) == state:
                path.unlink()

    def _after(self, tick: Tick, equity: float, halted: list[str]) -> None:
        now = _time.time()
        self._last_wall = now
        self.health = {"status": "ok", "state": self.guard.mode, "step": tick.step,
                       "last_tick_time": iso_time(tick.time), "last_tick_wall": now,
                       "equity": equity, "halted_symbols": halted,
                       "positions": self.broker.positions()}
        if now >= self._next_beat:
            self._next_beat = now + self.config.health.heartbeat_s
            log.info("heartbeat step=%d time=%s equity=%.2f state=%s halted=%s", tick.step,
                     iso_time(tick.time), equity, self.guard.mode, ",".join(halted) or "-")

    def snapshot(self) -> dict[str, Any]:
        """Health: last tick, state, equity, lag; ``degraded`` when a tick is overdue."""
        out = dict(self.health)
        now = _time.time()
        last = self._last_wall or now
        out["lag_s"] = round(now - last, 3)
        feed = self.feed
        due = (feed.next_due if feed is not None and feed.next_due else last)
        overdue_s = self.config.health.overdue_s or (
            max(10.0, 5 * self.config.feed.pace_s) if self.config.feed.kind == "replay"
            else self.config.feed.max_wait_s + 60.0)
        reasons = []
        if feed is not None and feed.degraded:
            reasons.append(feed.degraded)
        if now - max(due, last) > overdue_s:
            reasons.append(f"tick overdue by {now - max(due, last):.1f}s")
        if reasons:
            out["status"], out["degraded"] = "degraded", reasons
        return out


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
