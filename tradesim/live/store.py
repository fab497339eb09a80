"""The session database: one SQLite file per paper session, an append-only event log.

WAL journal, a schema version and a migrations table. Every tick is written in one transaction
whose last row is the tick's commit record (``ticks``): the tick's decisions, order intents
(with client order ids), order status changes, fills, events, LLM calls, the agent's state and
the engine checkpoint either all land or none do. A tick without its commit record therefore
does not exist, and the daemon redoes it from the previous checkpoint.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time as _time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tradesim.contracts import Decision, Fill
from tradesim.engine.broker import Order
from tradesim.live.errors import SchemaError

SCHEMA_VERSION = 2
_MIGRATIONS: tuple[tuple[int, str, str], ...] = ((1, "event log: ticks, decisions, orders, "
                                                  "order status, fills, events, llm calls", """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE ticks (step INTEGER PRIMARY KEY, time INTEGER NOT NULL, wall REAL NOT NULL,
  equity REAL NOT NULL, cash REAL NOT NULL, gross REAL NOT NULL, net REAL NOT NULL,
  costs_total REAL NOT NULL, borrow_total REAL NOT NULL, reward REAL, positions TEXT NOT NULL,
  marks TEXT NOT NULL, switch TEXT NOT NULL, halted TEXT NOT NULL);
CREATE TABLE decisions (seq INTEGER PRIMARY KEY AUTOINCREMENT, step INTEGER NOT NULL,
  time INTEGER NOT NULL, decision TEXT, fallback TEXT NOT NULL, error TEXT NOT NULL);
CREATE TABLE orders (order_id INTEGER PRIMARY KEY, client_order_id TEXT NOT NULL UNIQUE,
  step INTEGER NOT NULL, time INTEGER NOT NULL, symbol TEXT NOT NULL, quantity REAL NOT NULL,
  kind TEXT NOT NULL, level REAL, reason TEXT NOT NULL);
CREATE TABLE order_status (seq INTEGER PRIMARY KEY AUTOINCREMENT, step INTEGER NOT NULL,
  order_id INTEGER NOT NULL REFERENCES orders(order_id), status TEXT NOT NULL,
  filled REAL NOT NULL, fill_time INTEGER);
CREATE TABLE fills (seq INTEGER PRIMARY KEY AUTOINCREMENT, step INTEGER NOT NULL,
  order_id INTEGER NOT NULL, time INTEGER NOT NULL, symbol TEXT NOT NULL, quantity REAL NOT NULL,
  price REAL NOT NULL, commission REAL NOT NULL, spread_cost REAL NOT NULL,
  slippage_cost REAL NOT NULL, reason TEXT NOT NULL);
CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, step INTEGER NOT NULL,
  time INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE llm_calls (seq INTEGER PRIMARY KEY AUTOINCREMENT, step INTEGER NOT NULL,
  time INTEGER NOT NULL, call_id TEXT NOT NULL, usd REAL NOT NULL, detail TEXT NOT NULL);
CREATE TABLE switch_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, step INTEGER NOT NULL,
  wall REAL NOT NULL, state TEXT NOT NULL, source TEXT NOT NULL, reason TEXT NOT NULL);
CREATE TABLE checkpoint (id INTEGER PRIMARY KEY CHECK (id = 1), step INTEGER NOT NULL,
  engine BLOB NOT NULL, agent_state TEXT NOT NULL);
CREATE INDEX fills_step ON fills(step);
CREATE INDEX decisions_step ON decisions(step);
CREATE INDEX llm_time ON llm_calls(time);
"""), (2, "ticks: decision expenses (LLM dollars) debited from cash", """
ALTER TABLE ticks ADD COLUMN expense_total REAL NOT NULL DEFAULT 0;
"""))
TERMINAL = ("filled", "partial", "cancelled", "replaced")


def _ns(t: Any) -> int | None:
    if t is None:
        return None
    v = np.datetime64(t, "ns")
    return None if np.isnat(v) else int(v.astype("int64"))


def _stamp(v: int | None) -> np.datetime64:
    return np.datetime64("NaT", "ns") if v is None else np.datetime64(int(v), "ns")


def _num(x: float | None) -> float:
    return math.nan if x is None else float(x)


def decision_json(d: Decision | None) -> str | None:
    """A Decision as JSON (None stays None); :func:`decision_from_json` reads it back."""
    return None if d is None else json.dumps(d.as_dict(), sort_keys=True)


def decision_from_json(text: str | None) -> Decision | None:
    return None if text is None else Decision.from_dict(json.loads(text))


@dataclass
class TickRecord:
    """Everything one tick wrote, handed to :meth:`SessionStore.commit_tick` in one piece."""

    step: int
    time: np.datetime64
    book: dict[str, float]  # equity, cash, gross, net, costs_total, borrow_total, reward,
    # expense_total
    positions: list[float]
    marks: list[float]
    switch: str
    halted: list[str]
    engine: bytes
    agent_state: str
    decisions: list[tuple] = field(default_factory=list)  # (step, time, decision, fallback, error)
    new_orders: list[tuple[str, Order]] = field(default_factory=list)  # (client order id, order)
    closed: list[Order] = field(default_factory=list)
    fills: list[tuple[int, int, Fill]] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    llm: list[tuple[str, float, dict]] = field(default_factory=list)  # (call id, usd, detail)
    switches: list[tuple[str, str, str]] = field(default_factory=list)  # (state, source, reason)


class SessionStore:
    """One session's SQLite database (WAL); ``crash`` is a fault-injection hook for tests."""

    def __init__(self, path: str | Path, *, readonly: bool = False,
                 crash: Callable[[str, int], None] | None = None) -> None:
        self.path = Path(path)
        self.crash = crash
        if readonly:
            if not self.path.is_file():
                raise SchemaError(f"no session database at {self.path}; start the session first "
                                  "(tradesim paper start SESSION.toml)")
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                      isolation_level=None, timeout=10)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=10)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # durable across process kills
            self._migrate()
        self._check_version()

    def close(self) -> None:
        self.db.close()

    # --- schema -----------------------------------------------------------------------------

    def _migrate(self) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE IF NOT EXISTS migrations (version INTEGER PRIMARY KEY, "
                       "description TEXT NOT NULL, applied_at REAL NOT NULL)")
            done = {v for (v,) in db.execute("SELECT version FROM migrations")}
            for version, description, sql in _MIGRATIONS:
                if version in done:
                    continue
                for statement in filter(str.strip, sql.split(";")):
                    db.execute(statement)
                db.execute("INSERT INTO migrations VALUES (?, ?, ?)",
                           (version, description, _time.time()))
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                           (str(version),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _check_version(self) -> None:
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise SchemaError(f"{self.path} is not a session database ({exc}); point at the "
                              "session's folder or start a new session") from None
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise SchemaError(f"{self.path} has schema version {version}, newer than this "
                              f"tradesim understands ({SCHEMA_VERSION}); upgrade tradesim")

    # --- meta -------------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}

    def set_meta(self, **values: Any) -> None:
        with self._tx():
            for k, v in values.items():
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, json.dumps(v)))

    # --- writing ----------------------------------------------------------------------------

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, kind: object, exc: object, tb: object) -> None:
            self.db.execute("ROLLBACK" if kind is not None else "COMMIT")

    def _tx(self) -> SessionStore._Tx:
        return SessionStore._Tx(self.db)

    def _hit(self, phase: str, step: int) -> None:
        if self.crash is not None:
            self.crash(phase, step)

    def commit_tick(self, rec: TickRecord) -> None:
        """Write one tick atomically; its ``ticks`` row (the commit record) goes in last."""
        t = _ns(rec.time)
        with self._tx() as db:
            self._hit("tx_begin", rec.step)
            self._write_body(db, rec)
            self._hit("tx_body", rec.step)
            db.execute("INSERT OR REPLACE INTO checkpoint VALUES (1, ?, ?, ?)",
                       (rec.step, rec.engine, rec.agent_state))
            b = rec.book
            db.execute("INSERT INTO ticks VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (rec.step, t, _time.time(), b["equity"], b["cash"], b["gross"], b["net"],
                        b["costs_total"], b["borrow_total"], b["reward"],
                        json.dumps(rec.positions), json.dumps(rec.marks), rec.switch,
                        json.dumps(rec.halted), b["expense_total"]))
            self._hit("tx_commit", rec.step)
        self._hit("committed", rec.step)

    def commit_end(self, rec: TickRecord, *, reason: str) -> None:
        """The session's end (orders cancelled at the end of the feed) and its ``finished`` mark."""
        with self._tx() as db:
            self._write_body(db, rec)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('finished', ?)", (json.dumps(reason),))

    def _write_body(self, db: sqlite3.Connection, rec: TickRecord) -> None:
        db.executemany("INSERT INTO decisions (step, time, decision, fallback, error) "
                       "VALUES (?,?,?,?,?)",
                       [(s, _ns(t), decision_json(d), f, e) for s, t, d, f, e in rec.decisions])
        db.executemany("INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?)",
                       [(o.id, coid, rec.step, _ns(o.time), o.symbol, o.quantity, o.kind,
                         o.level, o.reason) for coid, o in rec.new_orders])
        db.executemany("INSERT INTO order_status (step, order_id, status, filled, fill_time) "
                       "VALUES (?,?,?,?,?)",
                       [(rec.step, o.id, o.status, o.filled, _ns(o.fill_time))
                        for o in rec.closed])
        db.executemany("INSERT INTO fills (step, order_id, time, symbol, quantity, price, "
                       "commission, spread_cost, slippage_cost, reason) VALUES (?,?,?,?,?,?,?,?,?,?)",
                       [(s, oid, _ns(f.time), f.symbol, f.quantity, f.price, f.commission,
                         f.spread_cost, f.slippage_cost, f.reason) for s, oid, f in rec.fills])
        db.executemany("INSERT INTO events (step, time, kind, detail) VALUES (?,?,?,?)",
                       [(e["step"], _ns(e["time"]), e["kind"],
                         json.dumps({k: v for k, v in e.items()
                                     if k not in ("step", "time", "kind")},
                                    sort_keys=True, default=float)) for e in rec.events])
        db.executemany("INSERT INTO llm_calls (step, time, call_id, usd, detail) VALUES (?,?,?,?,?)",
                       [(rec.step, _ns(rec.time), cid, usd, json.dumps(d, default=str))
                        for cid, usd, d in rec.llm])
        db.executemany("INSERT INTO switch_log (step, wall, state, source, reason) "
                       "VALUES (?,?,?,?,?)",
                       [(rec.step, _time.time(), s, src, why) for s, src, why in rec.switches])

    # --- reading ----------------------------------------------------------------------------

    def last_step(self) -> int:
        """The last committed tick's step (-1 before the first)."""
        row = self.db.execute("SELECT MAX(step) FROM ticks").fetchone()
        return -1 if row[0] is None else int(row[0])

    def last_tick(self) -> dict[str, Any] | None:
        cur = self.db.execute("SELECT * FROM ticks ORDER BY step DESC LIMIT 1")
        row = cur.fetchone()
        if row is None:
            return None
        out = dict(zip([c[0] for c in cur.description], row))
        out["positions"], out["marks"] = json.loads(out["positions"]), json.loads(out["marks"])
        return out

    def checkpoint(self) -> tuple[int, bytes, str] | None:
        row = self.db.execute("SELECT step, engine, agent_state FROM checkpoint").fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]), str(row[2]))

    def fill_totals(self) -> tuple[dict[str, float], float]:
        """Position per symbol and cash spent (q x price + costs) summed over the fill log."""
        pos: dict[str, float] = {}
        spent = 0.0
        for sym, q, p, c, s, sl in self.db.execute(
                "SELECT symbol, quantity, price, commission, spread_cost, slippage_cost FROM fills "
                "ORDER BY seq"):
            pos[sym] = pos.get(sym, 0.0) + q
            spent += q * p + c + s + sl
        return pos, spent

    def open_order_ids(self) -> set[int]:
        """Orders with an intent and no terminal status in the log."""
        return {int(i) for (i,) in self.db.execute(
            "SELECT order_id FROM orders WHERE order_id NOT IN (SELECT order_id FROM order_status "
            "WHERE status IN ('filled', 'partial', 'cancelled', 'replaced'))")}

    def client_order_ids(self) -> dict[int, str]:
        return {int(i): str(c) for i, c in self.db.execute(
            "SELECT order_id, client_order_id FROM orders")}

    def llm_usd_since(self, t: np.datetime64) -> float:
        row = self.db.execute("SELECT COALESCE(SUM(usd), 0) FROM llm_calls WHERE time >= ?",
                              (_ns(t),)).fetchone()
        return float(row[0])

    def table(self, name: str) -> list[dict[str, Any]]:
        cur = self.db.execute(f"SELECT * FROM {name}")
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur]

    def replay_records(self) -> Iterator[tuple[dict[str, Any], list[tuple], list[tuple],
                                               list[Order], list[dict]]]:
        """Per committed tick (and the end): its book row, decisions, fills, closed orders and
        events, as the recorder took them (for rebuilding the RunResult)."""
        by_step: dict[str, dict[int, list]] = {"d": {}, "f": {}, "o": {}, "e": {}}
        for r in self.table("decisions"):
            by_step["d"].setdefault(r["step"], []).append(
                (r["step"], _stamp(r["time"]), decision_from_json(r["decision"]), r["fallback"],
                 r["error"]))
        for r in self.table("fills"):
            by_step["f"].setdefault(r["step"], []).append((r["step"], r["order_id"], Fill(
                time=_stamp(r["time"]), symbol=r["symbol"], quantity=r["quantity"],
                price=r["price"], commission=r["commission"], spread_cost=r["spread_cost"],
                slippage_cost=r["slippage_cost"], reason=r["reason"])))
        intents = {r["order_id"]: r for r in self.table("orders")}
        for r in self.table("order_status"):
            if r["status"] not in TERMINAL:
                continue
            i = intents[r["order_id"]]
            by_step["o"].setdefault(r["step"], []).append(Order(
                id=i["order_id"], time=_stamp(i["time"]), symbol=i["symbol"], col=0,
                quantity=i["quantity"], kind=i["kind"], level=_num(i["level"]),
                reason=i["reason"], status=r["status"], filled=r["filled"],
                fill_time=None if r["fill_time"] is None else _stamp(r["fill_time"])))
        for r in self.table("events"):
            by_step["e"].setdefault(r["step"], []).append(
                {"step": r["step"], "time": _stamp(r["time"]), "kind": r["kind"],
                 **json.loads(r["detail"])})
        ticks = self.table("ticks")
        for tick in ticks:
            s = tick["step"]
            tick["positions"], tick["marks"] = json.loads(tick["positions"]), json.loads(tick["marks"])
            yield (tick, by_step["d"].pop(s, []), by_step["f"].pop(s, []),
                   by_step["o"].pop(s, []), by_step["e"].pop(s, []))
        rest = sorted(set().union(*(d.keys() for d in by_step.values())))
        for s in rest:  # the end record (written under the last tick's step)
            yield ({}, by_step["d"].pop(s, []), by_step["f"].pop(s, []),
                   by_step["o"].pop(s, []), by_step["e"].pop(s, []))
