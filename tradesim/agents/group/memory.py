"""Reflection memory: what each role said in which situation, and how it turned out.

An entry is written when a role acts (no outcome yet) and completed only when its outcome is
realised, ``horizon`` bars later, from prices the agent saw then. Retrieval at time ``t`` sees
only entries with ``realised_at <= t``; an entry still open, or one realised later than ``t``
(a carried-over memory from a later period), is invisible. A carried memory that holds anything
realised after a new run's start is refused, so nothing crosses a train/test boundary unasked.
"""

from __future__ import annotations

import bisect
import json
import math
import sqlite3
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from tradesim.errors import ConfigError

MEMORY_FILE = "tradinggroup_memory.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    run TEXT NOT NULL,
    role TEXT NOT NULL,
    symbol TEXT NOT NULL,
    time INTEGER NOT NULL,          -- decision time, UTC ns
    step INTEGER NOT NULL,
    horizon INTEGER NOT NULL,       -- bars until the outcome is realised
    situation TEXT NOT NULL,        -- JSON list: the numeric situation vector
    embedding TEXT,                 -- JSON list: optional text embedding
    inputs_digest TEXT NOT NULL,
    output TEXT NOT NULL,           -- JSON: what the role said
    direction REAL NOT NULL,        -- the role's call as a sign: +1 buy/up, -1 sell/down, 0
    price REAL NOT NULL,            -- the close at decision time
    outcome TEXT,                   -- win | loss | flat (NULL until realised)
    pnl REAL,                       -- realised return of the call over the horizon
    realised_at INTEGER             -- UTC ns when the outcome became known (NULL until then)
);
CREATE INDEX IF NOT EXISTS entries_open ON entries (realised_at);
"""


class CarriedMemoryError(ConfigError):
    """A carried-over memory holds outcomes realised after the new run starts (a leak)."""


@dataclass(frozen=True, slots=True)
class Recall:
    """One retrieved past entry."""

    role: str
    symbol: str
    time: int
    output: dict[str, Any]
    outcome: str
    pnl: float
    similarity: float


@dataclass(frozen=True, slots=True)
class Experience:
    """What retrieval found for one role and situation, summarised."""

    similar: tuple[Recall, ...]
    wins: tuple[Recall, ...]
    losses: tuple[Recall, ...]

    @property
    def n(self) -> int:
        return len(self.similar)

    @property
    def hit_rate(self) -> float:
        """Share of the similar past calls that won (NaN with none)."""
        if not self.similar:
            return math.nan
        return sum(r.outcome == "win" for r in self.similar) / len(self.similar)

    @property
    def mean_pnl(self) -> float:
        return float(np.mean([r.pnl for r in self.similar])) if self.similar else math.nan

    def note(self) -> str:
        """The experience note that goes into the role's prompt."""
        if not self.similar and not self.wins and not self.losses:
            return "No realised past experience yet."
        lines = []
        if self.similar:
            lines.append(f"In the {self.n} most similar past situations your calls won "
                         f"{self.hit_rate:.0%} of the time, mean outcome {self.mean_pnl:+.2%}.")
        for label, rows in (("Latest win", self.wins), ("Latest loss", self.losses)):
            for r in rows:
                day = str(np.datetime64(r.time, "ns").astype("datetime64[D]"))
                lines.append(f"{label}: {day} {r.symbol} said {_short(r.output)} -> "
                             f"{r.pnl:+.2%}.")
        return "\n".join(lines)


def _short(output: dict[str, Any]) -> str:
    keys = ("action", "direction", "style", "size", "confidence")
    return ", ".join(f"{k}={output[k]}" for k in keys if k in output) or json.dumps(output)[:80]


class ReflectionMemory:
    """SQLite memory of role calls and their realised outcomes (see the module docstring)."""

    def __init__(self, path: str | Path, *, run: str = "run") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.run = run
        self._db = sqlite3.connect(str(self.path))
        self._db.executescript(_SCHEMA)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses no committed step
        self._index: dict[str, _Index] = {}
        self._load_index()

    def close(self) -> None:
        self.flush()
        self._db.close()

    def flush(self) -> None:
        """Fold the write-ahead log into the file, so a plain copy of it is complete."""
        self._db.commit()
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def copy_to(self, path: str | Path) -> Path:
        """A consistent copy of this memory at ``path`` (SQLite's backup API)."""
        target = Path(path)
        target.unlink(missing_ok=True)
        out = sqlite3.connect(str(target))
        try:
            self._db.commit()
            self._db.backup(out)
        finally:
            out.close()
        return target

    @staticmethod
    def copy_file(source: str | Path, target: str | Path) -> Path:
        """Copy the memory file ``source`` (with its write-ahead log) to ``target``."""
        src = sqlite3.connect(f"file:{Path(source)}?mode=ro", uri=True)
        target = Path(target)
        target.unlink(missing_ok=True)
        out = sqlite3.connect(str(target))
        try:
            src.backup(out)
        finally:
            out.close()
            src.close()
        return target

    def check_carry(self, start: np.datetime64) -> None:
        """Refuse a carried memory holding a call made, or an outcome realised, after ``start``.

        Entries left open by the earlier run stay invisible for good (they never realise).
        """
        t0 = _ns(start)
        row = self._db.execute("SELECT COUNT(*), MAX(COALESCE(realised_at, time)) FROM entries "
                               "WHERE realised_at > ? OR time >= ?", (t0, t0)).fetchone()
        if row[0]:
            day = np.asarray(start).astype("datetime64[D]")
            last = np.asarray(int(row[1])).astype("datetime64[ns]").astype("datetime64[D]")
            raise CarriedMemoryError(
                f"carried memory {self.path} holds {row[0]} entries made or realised after the "
                f"run's start {day} (latest {last}); it would leak outcomes across a train/test "
                "boundary. Carry the memory of a run that ended before this one starts, or "
                "leave carry_memory unset")

    def add(self, *, role: str, symbol: str, time: np.datetime64, step: int, horizon: int,
            situation: np.ndarray, inputs_digest: str, output: dict[str, Any], direction: float,
            price: float, embedding: np.ndarray | None = None) -> int:
        """Record a call (its outcome comes later, via :meth:`realise`)."""
        cur = self._db.execute(
            "INSERT INTO entries (run, role, symbol, time, step, horizon, situation, embedding, "
            "inputs_digest, output, direction, price) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (self.run, role, symbol, _ns(time), step,
             horizon, json.dumps([round(float(x), 6) for x in situation]),
             None if embedding is None else json.dumps([round(float(x), 5) for x in embedding]),
             inputs_digest, json.dumps(output, sort_keys=True), float(direction), float(price)))
        return int(cur.lastrowid or 0)

    def realise(self, *, step: int, now: np.datetime64, prices: dict[str, float],
                flat_band: float) -> int:
        """Complete every open entry of this run whose horizon ends at or before ``step``.

        The outcome is the call's signed return from its decision close to the close at ``now``
        (the bar where the horizon ends, which the agent sees now); ``|return| < flat_band`` of
        a directional call is "flat", a flat call wins when the move stayed inside the band.
        """
        rows = self._db.execute(
            "SELECT id, symbol, direction, price, role, time, output, situation, embedding "
            "FROM entries WHERE realised_at IS NULL AND run = ? AND step + horizon <= ? "
            "ORDER BY id", (self.run, step)).fetchall()
        t = _ns(now)
        done = 0
        for entry_id, symbol, direction, price, role, when, output, situation, emb in rows:
            px = prices.get(symbol, math.nan)
            if not (math.isfinite(px) and price > 0):
                continue
            move = px / price - 1.0
            if direction == 0:
                outcome, pnl = ("win" if abs(move) < flat_band else "loss"), -abs(move)
            else:
                pnl = direction * move
                outcome = "flat" if abs(move) < flat_band else ("win" if pnl > 0 else "loss")
            self._db.execute("UPDATE entries SET outcome = ?, pnl = ?, realised_at = ? "
                             "WHERE id = ?", (outcome, pnl, t, entry_id))
            self._append(role, Recall(role, symbol, int(when), json.loads(output), outcome,
                                      float(pnl), 0.0),
                         json.loads(situation), None if emb is None else json.loads(emb), t)
            done += 1
        self._db.commit()
        return done

    def retrieve(self, *, role: str, as_of: np.datetime64 | None, situation: np.ndarray,
                 k: int = 5, latest: int = 1, embedding: np.ndarray | None = None,
                 text_weight: float = 0.5) -> Experience:
        """The ``k`` most similar realised entries of ``role`` plus the latest wins and losses.

        ``as_of`` is the decision time: only outcomes realised by then are visible. ``None``
        disables that guard; nothing in the agent passes it (the lag-safety test shows why).
        Similarity is ``1 / (1 + distance)`` of the situation vectors; with an ``embedding`` it
        is blended ``(1 - text_weight) * numeric + text_weight * (1 + cosine) / 2`` (an entry
        stored without text counts as cosine 0).
        """
        index = self._index.get(role)
        if index is None or not index.recalls:
            return Experience((), (), ())
        n = len(index.recalls)
        if as_of is not None:
            n = int(np.searchsorted(np.asarray(index.realised), _ns(as_of), "right"))
        if n == 0:
            return Experience((), (), ())
        vecs = index.matrix(n)
        d = np.linalg.norm(np.nan_to_num(vecs) - np.nan_to_num(situation)[None, :], axis=1)
        sims = 1.0 / (1.0 + d)
        if embedding is not None and text_weight > 0:
            sims = (1.0 - text_weight) * sims + text_weight * _text_similarity(
                index.embeddings[:n], np.asarray(embedding, dtype=np.float64))
        recalls = index.recalls if n == len(index.recalls) else index.recalls[:n]
        if n > 4 * k:  # the k best by similarity, ties to the earlier entry
            top = np.argpartition(-sims, k - 1)[:k]
            order = top[np.lexsort((top, -sims[top]))]
        else:
            order = np.argsort(-sims, kind="stable")[:k]
        similar = tuple(replace(recalls[i], similarity=float(sims[i])) for i in order)
        wins = tuple(islice((r for r in reversed(recalls) if r.outcome == "win"), latest))
        losses = tuple(islice((r for r in reversed(recalls) if r.outcome == "loss"), latest))
        return Experience(similar, wins, losses)

    def _load_index(self) -> None:
        """Realised entries by role, ordered by realisation time (retrieval reads only this)."""
        self._index = {}
        for row in self._db.execute(
                "SELECT role, symbol, time, output, outcome, pnl, situation, embedding, "
                "realised_at FROM entries WHERE realised_at IS NOT NULL ORDER BY realised_at, id"):
            self._append(row[0], Recall(row[0], row[1], int(row[2]), json.loads(row[3]), row[4],
                                        float(row[5]), 0.0),
                         json.loads(row[6]), None if row[7] is None else json.loads(row[7]),
                         int(row[8]))

    def _append(self, role: str, recall: Recall, situation: list[float],
                embedding: list[float] | None, realised_at: int) -> None:
        index = self._index.setdefault(role, _Index())
        at = bisect.bisect_right(index.realised, realised_at)  # the end, unless restored later
        index.recalls.insert(at, recall)
        index.situations.insert(at, situation)
        index.embeddings.insert(at, None if embedding is None else np.array(embedding))
        index.realised.insert(at, realised_at)
        if at < len(index.realised) - 1:
            index._matrix = None

    def count(self, *, realised: bool | None = None) -> int:
        sql = "SELECT COUNT(*) FROM entries"
        if realised is not None:
            sql += " WHERE realised_at IS NOT NULL" if realised else " WHERE realised_at IS NULL"
        return int(self._db.execute(sql).fetchone()[0])

    def rows(self) -> list[dict[str, Any]]:
        """Every entry as a dict (for exports and tests)."""
        cur = self._db.execute("SELECT * FROM entries ORDER BY id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def snapshot(self) -> list[list[Any]]:
        """The whole table as JSON-able rows (the agent's state for a resume)."""
        return [list(r) for r in self._db.execute("SELECT * FROM entries ORDER BY id")]

    def restore(self, rows: list[list[Any]]) -> None:
        """Replace the table with a :meth:`snapshot`."""
        self._db.execute("DELETE FROM entries")
        if rows:
            marks = ",".join("?" * len(rows[0]))
            self._db.executemany(f"INSERT INTO entries VALUES ({marks})", rows)
        self._db.commit()
        self._load_index()


@dataclass
class _Index:
    """Realised entries of one role in realisation order (append-only within a run)."""

    recalls: list[Recall] = field(default_factory=list)
    situations: list[list[float]] = field(default_factory=list)
    embeddings: list[np.ndarray | None] = field(default_factory=list)
    realised: list[int] = field(default_factory=list)
    _matrix: np.ndarray | None = None
    _rows: int = 0

    def matrix(self, n: int) -> np.ndarray:
        """The first ``n`` situation vectors as one array (grown in place as entries come)."""
        m = self._matrix
        total = len(self.situations)
        width = len(self.situations[0]) if total else 0
        if m is None or m.shape[1] != width or self._rows > total:
            m, self._rows = np.full((max(64, 2 * total), width), np.nan), 0
        if m.shape[0] < total:
            grown = np.full((2 * total, width), np.nan)
            grown[:self._rows] = m[:self._rows]
            m = grown
        for i in range(self._rows, total):
            v = self.situations[i]
            if len(v) == width:
                m[i] = v
        self._matrix, self._rows = m, total
        return m[:n]


def _ns(t: object) -> int:
    """A stamp as integer UTC nanoseconds."""
    return int(np.asarray(t).astype("datetime64[ns]").astype(np.int64))


def _text_similarity(stored: list[np.ndarray | None], query: np.ndarray) -> np.ndarray:
    """(1 + cosine) / 2 of each stored embedding with ``query`` (0.5 where none is stored)."""
    qn = float(np.linalg.norm(query))
    out = np.full(len(stored), 0.5)
    if qn == 0:
        return out
    for i, e in enumerate(stored):
        if e is not None and e.shape == query.shape:
            en = float(np.linalg.norm(e))
            if en > 0:
                out[i] = (1.0 + float(e @ query) / (en * qn)) / 2.0
    return out
