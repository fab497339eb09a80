"""Prompt token counts for estimates and budget reservations, with the model's own tokenizer.

OpenAI models are counted with tiktoken when it is installed and its encoding is available
(it downloads encodings once; offline without a copy it is skipped), the embedded local model
with its GGUF tokenizer and chat template; anything else falls back to about four characters a
token and says so (``exact`` False), and budget reservations then use a safer three.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_PER_MESSAGE = 4  # chat framing tokens per message (OpenAI's documented overhead: 3-4)
_PER_REPLY = 3
_LOCK = threading.Lock()
_TIKTOKEN: dict[str, Any] = {}  # model -> encoding or None (unavailable: do not retry)
_GGUF: dict[str, Any] = {}  # path -> vocab-only Llama and its chat formatter


@dataclass(frozen=True, slots=True)
class TokenCounter:
    """Counts chat prompts in tokens; ``name`` says how (shown with every estimate)."""

    name: str
    exact: bool
    _count: Callable[[list[dict[str, str]]], int]

    def messages(self, messages: list[dict[str, str]]) -> int:
        """Tokens of ``messages`` as the model will see them."""
        return self._count(messages)

    def text(self, text: str) -> int:
        return self._count([{"role": "user", "content": text}])

    def upper_bound(self, messages: list[dict[str, str]]) -> int:
        """An over-estimate for budget reservations (exact counts get a 5% margin)."""
        if self.exact:
            return math.ceil(self._count(messages) * 1.05) + 8
        return sum(math.ceil(len(m.get("content", "")) / 3) + _PER_MESSAGE
                   for m in messages) + _PER_REPLY


def _chars(messages: list[dict[str, str]]) -> int:
    return sum(max(1, (len(m.get("content", "")) + 3) // 4) + _PER_MESSAGE
               for m in messages) + _PER_REPLY


CHARS = TokenCounter("chars/4 (no tokenizer)", False, _chars)


def token_counter(*, provider: str, model: str, model_path: str | None = None) -> TokenCounter:
    """The best counter available for this provider and model (never raises)."""
    if provider == "local":
        counter = _gguf_counter(model_path)
        if counter is not None:
            return counter
    if provider in ("openai", "langchain-openai", "openai-compatible"):
        counter = _tiktoken_counter(model)
        if counter is not None:
            return counter
    return CHARS


def _tiktoken_counter(model: str) -> TokenCounter | None:
    with _LOCK:
        if model not in _TIKTOKEN:
            try:
                import tiktoken

                _TIKTOKEN[model] = tiktoken.encoding_for_model(model.rsplit("/", 1)[-1])
            except Exception:  # not installed, unknown model, or its encoding not downloadable
                _TIKTOKEN[model] = None
        enc = _TIKTOKEN[model]
    if enc is None:
        return None

    def count(messages: list[dict[str, str]]) -> int:
        return sum(len(enc.encode(m.get("content", ""), disallowed_special=()))
                   + _PER_MESSAGE for m in messages) + _PER_REPLY

    return TokenCounter(f"tiktoken:{enc.name}", True, count)


def _gguf_counter(model_path: str | None) -> TokenCounter | None:
    try:
        from tradesim.llm.local import resolve_model_path

        path = str(resolve_model_path(model_path))
    except Exception:  # llama-cpp or the packaged model missing: fall back
        return None
    with _LOCK:
        if path not in _GGUF:
            try:
                from llama_cpp import Llama
                from llama_cpp.llama_chat_format import Jinja2ChatFormatter

                llama = Llama(model_path=path, vocab_only=True, verbose=False)
                piece = (lambda t: llama.detokenize([t], special=True).decode(errors="ignore"))
                template = llama.metadata.get("tokenizer.chat_template")
                fmt = (Jinja2ChatFormatter(template=template, eos_token=piece(llama.token_eos()),
                                           bos_token=piece(llama.token_bos()))
                       if template else None)
                _GGUF[path] = (llama, fmt)
            except Exception:
                _GGUF[path] = None
        entry = _GGUF[path]
    if entry is None:
        return None
    llama, fmt = entry

    def count(messages: list[dict[str, str]]) -> int:
        text = (fmt(messages=messages).prompt if fmt is not None
                else "\n".join(m.get("content", "") for m in messages))
        with _LOCK:
            return len(llama.tokenize(text.encode(), add_bos=True, special=True))

    return TokenCounter(f"gguf:{path.rsplit('/', 1)[-1]}", True, count)
