"""Content-addressed SQLite cache of LLM answers: read-through for cost, strict for replay.

The key hashes everything that decides the answer (provider, the endpoint that serves it, model,
messages, sampling parameters, output schema). A shared cache keeps the latest answer per key; a
run folder gets a cache of its own holding exactly the answers that run used
(:meth:`LLMCache.write_rows`), so it replays that run bit for bit and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    content TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    finish_reason TEXT NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """The stored answer to one request, exactly as the model gave it."""

    content: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


@dataclass(frozen=True, slots=True)
class CacheRow:
    """One stored call: its key, who answered, the (scrubbed) request and the answer."""

    key: str
    provider: str
    model: str
    request: str  # canonical JSON of the scrubbed request
    answer: CachedAnswer


def cache_key(*, provider: str, model: str, messages: list[dict[str, str]],
              params: dict[str, Any], schema: dict[str, Any] | str | None,
              endpoint: str = "") -> str:
    """SHA-256 of the canonical JSON of everything that decides the answer.

    ``endpoint`` names the server or model file (two servers that both call their model
    "default" must not share answers); ``schema`` may be given pre-serialised.
    """
    if not isinstance(schema, str):
        schema = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    payload = json.dumps({"provider": provider, "endpoint": endpoint, "model": model,
                          "messages": messages, "params": params, "schema": schema},
                         sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def occurrence_key(key: str, n: int) -> str:
    """Key of the ``n``-th repeat (n >= 1) of one request within a run, when its answer differed."""
    return hashlib.sha256(f"{key}#{n}".encode()).hexdigest()


class LLMCache:
    """One SQLite file of answers keyed by :func:`cache_key`; safe to share between threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute(_SCHEMA)
        self._db.commit()

    def get(self, key: str) -> CachedAnswer | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: list[str]) -> dict[str, CachedAnswer]:
        """The stored answers of those ``keys`` that have one, in one query per 500 keys."""
        out: dict[str, CachedAnswer] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for i in range(0, len(unique), 500):
                chunk = unique[i:i + 500]
                rows = self._db.execute(
                    "SELECT key, content, prompt_tokens, completion_tokens, finish_reason FROM calls "
                    f"WHERE key IN ({','.join('?' * len(chunk))})", chunk).fetchall()
                for key, *answer in rows:
                    out[key] = CachedAnswer(*answer)
        return out

    def put(self, key: str, *, provider: str, model: str, request: dict[str, Any] | str,
            answer: CachedAnswer, replace: bool = False) -> None:
        """Store an answer; ``replace`` (live mode: a fresh answer) overwrites an older one,
        otherwise an answer already stored for the key stays."""
        if not isinstance(request, str):
            request = json.dumps(request, sort_keys=True, ensure_ascii=False)
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self._lock:
            self._db.execute(
                f"{verb} INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, provider, model, request, answer.content, answer.prompt_tokens,
                 answer.completion_tokens, answer.finish_reason))
            self._db.commit()

    @staticmethod
    def write_rows(path: str | Path, rows: list[CacheRow]) -> Path:
        """A new cache file at ``path`` holding exactly ``rows`` (a run folder's own answers)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.unlink(missing_ok=True)
        db = sqlite3.connect(tmp)
        try:
            db.execute(_SCHEMA)
            db.executemany("INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
                (r.key, r.provider, r.model, r.request, r.answer.content, r.answer.prompt_tokens,
                 r.answer.completion_tokens, r.answer.finish_reason) for r in rows])
            db.commit()
        finally:
            db.close()
        tmp.replace(target)
        return target

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def copy_to(self, path: str | Path) -> Path:
        """Consistent copy of the cache (SQLite backup API), e.g. into a run folder."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            dest = sqlite3.connect(target)
            try:
                self._db.backup(dest)
            finally:
                dest.close()
        return target

    def close(self) -> None:
        with self._lock:
            self._db.close()
