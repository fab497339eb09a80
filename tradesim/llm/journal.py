"""The record of every LLM call of a run, with secrets scrubbed before anything is kept."""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

# Shapes of provider keys (OpenAI sk-/sk-proj-, Anthropic sk-ant-, bearer tokens, HF hf_).
_KEY_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|hf_[A-Za-z0-9]{16,}|(?i:bearer)\s+[A-Za-z0-9._\-]{12,})")
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)$", re.IGNORECASE)
REDACTED = "[REDACTED]"


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One gateway call as the run record keeps it."""

    call_id: str
    key: str  # cache key
    provider: str
    model: str
    messages: list[dict[str, str]]
    response: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float
    cache_hit: bool
    attempts: int
    decision_time: str | None
    tag: str | None
    error: str | None = None
    abstained: bool = False
    repaired: bool = False


@dataclass
class Journal:
    """Append-only list of :class:`CallRecord`, redacted on the way in, saved as JSON lines."""

    secrets: list[str] = field(default_factory=list)
    records: list[CallRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._scrub = Scrubber(self.secrets)

    def add(self, record: CallRecord) -> CallRecord:
        scrub = self._scrub
        clean = replace(record, messages=scrub(record.messages), response=scrub(record.response),
                        tag=scrub(record.tag), error=scrub(record.error))
        with self._lock:
            self.records.append(clean)
        return clean

    def update(self, call_id: str, **changes: Any) -> None:
        """Amend the latest record of ``call_id`` (validation error, abstention) after the fact."""
        changes = self._scrub(changes)
        with self._lock:
            for i in range(len(self.records) - 1, -1, -1):
                if self.records[i].call_id == call_id:
                    self.records[i] = replace(self.records[i], **changes)
                    return

    def save(self, path: str | Path) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            lines = [json.dumps(asdict(r), ensure_ascii=False, sort_keys=True) for r in self.records]
        target.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return target

    @staticmethod
    def load(path: str | Path) -> list[CallRecord]:
        text = Path(path).read_text(encoding="utf-8")
        return [CallRecord(**json.loads(line)) for line in text.splitlines() if line.strip()]


def environment_secrets() -> list[str]:
    """Values of environment variables whose names end in KEY/TOKEN/SECRET/PASSWORD."""
    return [v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 6]


class Scrubber:
    """Replaces known secrets (given ones and secret-named environment variables, read once) and
    key-shaped strings with [REDACTED] in strings, dicts and lists; one compiled pattern, so it
    is cheap enough for every call on the cached hot path."""

    def __init__(self, secrets: list[str] | tuple[str, ...] = ()) -> None:
        known = sorted({s for s in (*secrets, *environment_secrets()) if s}, key=len, reverse=True)
        self.secrets = tuple(known)
        alternatives = [re.escape(s) for s in known] + [_KEY_PATTERNS.pattern]
        self._pattern = re.compile("|".join(alternatives))

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._pattern.sub(REDACTED, value)
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self(v) for v in value]
        return value


def redact(value: Any, *, secrets: list[str] | tuple[str, ...] = ()) -> Any:
    """``value`` with every known secret and every key-shaped string replaced by [REDACTED]."""
    return Scrubber(secrets)(value)
