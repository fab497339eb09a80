"""Content-addressed SQLite cache of LLM answers: read-through for cost, strict for replay.

The key hashes everything that decides the answer (provider, model, messages, sampling
parameters, output schema), so the file can travel with a run folder and replay it bit for bit.
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


def cache_key(*, provider: str, model: str, messages: list[dict[str, str]],
              params: dict[str, Any], schema: dict[str, Any] | None) -> str:
    """SHA-256 of the canonical JSON of everything that decides the answer."""
    payload = json.dumps({"provider": provider, "model": model, "messages": messages,
                          "params": params, "schema": schema},
                         sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


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
        with self._lock:
            row = self._db.execute(
                "SELECT content, prompt_tokens, completion_tokens, finish_reason "
                "FROM calls WHERE key = ?", (key,)).fetchone()
        return CachedAnswer(*row) if row else None

    def put(self, key: str, *, provider: str, model: str, request: dict[str, Any],
            answer: CachedAnswer) -> None:
        """Store an answer (the first answer for a key wins, so replays never drift)."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, provider, model, json.dumps(request, sort_keys=True, ensure_ascii=False),
                 answer.content, answer.prompt_tokens, answer.completion_tokens,
                 answer.finish_reason))
            self._db.commit()

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
