"""Leakage guards: model knowledge cutoffs, and ticker/date anonymisation in prompts.

A model evaluated on a window it was trained on may simply remember what happened; the run
record carries :func:`leakage_flags` so the report can say so. Anonymisation hides the
tickers and calendar dates that let a model look its memory up, and is reversed on the way out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the registry knows of a model: its training-data cutoff and where that comes from."""

    name: str
    cutoff: np.datetime64  # last month of training data, as the vendor states it
    source: str


def _m(name: str, cutoff: str, source: str) -> ModelInfo:
    return ModelInfo(name=name, cutoff=np.datetime64(cutoff, "D"), source=source)


MODELS: dict[str, ModelInfo] = {m.name: m for m in (
    _m("gpt-3.5-turbo", "2021-09-01", "OpenAI model card"),
    _m("gpt-4o", "2023-10-01", "OpenAI model card"),
    _m("gpt-4o-mini", "2023-10-01", "OpenAI model card"),
    _m("gpt-4.1", "2024-06-01", "OpenAI model card"),
    _m("gpt-4.1-mini", "2024-06-01", "OpenAI model card"),
    _m("gpt-4.1-nano", "2024-06-01", "OpenAI model card"),
    _m("o4-mini", "2024-06-01", "OpenAI model card"),
    _m("llama-3.1-8b-instruct", "2023-12-01", "Meta model card"),
    _m("qwen2.5-7b-instruct", "2024-09-01", "release date (no stated cutoff)"),
    _m("smollm2-135m-instruct", "2024-11-01", "release date (no stated cutoff)"),
)}


@dataclass(frozen=True, slots=True)
class LeakageFlag:
    """One reason to distrust a backtest's LLM decisions; ``level`` is full|partial|unknown."""

    model: str
    level: str
    message: str


def model_info(model: str) -> ModelInfo | None:
    """Registry entry for ``model`` (exact name, then the family of a dated snapshot)."""
    key = model.lower().rsplit("/", 1)[-1].removesuffix(".gguf")
    if key in MODELS:
        return MODELS[key]
    matches = [k for k in MODELS if key.startswith(k)]
    return MODELS[max(matches, key=len)] if matches else None


def leakage_flags(model: str, start: np.datetime64 | str, end: np.datetime64 | str) -> list[LeakageFlag]:
    """Flags for a backtest window [start, end] that precedes (part of) the model's cutoff."""
    lo, hi = np.datetime64(start, "D"), np.datetime64(end, "D")
    info = model_info(model)
    if info is None:
        return [LeakageFlag(model, "unknown", (
            f"model {model!r} has no known knowledge cutoff; it may have seen {lo}..{hi}. "
            "Add it to tradesim.llm.leakage.MODELS or anonymise prompts."))]
    if hi <= info.cutoff:
        return [LeakageFlag(model, "full", (
            f"backtest {lo}..{hi} lies entirely before {model}'s knowledge cutoff {info.cutoff} "
            f"({info.source}): the model may remember the outcomes. Anonymise prompts or test "
            "after the cutoff."))]
    if lo <= info.cutoff:
        return [LeakageFlag(model, "partial", (
            f"backtest {lo}..{hi} starts before {model}'s knowledge cutoff {info.cutoff} "
            f"({info.source}): only results after {info.cutoff} are free of training-data leakage."))]
    return []


_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_REL = re.compile(r"\bD([+-]\d+)\b")


class Anonymizer:
    """Consistent ticker aliases and dates relative to an anchor, reversible on the way out.

    ``AAPL`` becomes ``STOCK_A`` everywhere in a run (aliases follow sorted symbols, so they do not
    depend on prompt order) and ``2024-03-01`` becomes ``D-3`` for an anchor of 2024-03-04.
    """

    def __init__(self, *, symbols: Iterable[str], anchor: np.datetime64 | str,
                 names: dict[str, str] | None = None) -> None:
        self.anchor = np.datetime64(anchor, "D")
        self.aliases = {s: f"STOCK_{_letters(i)}" for i, s in enumerate(sorted(set(symbols)))}
        self.names = {name: self.aliases[s] for s, name in (names or {}).items() if s in self.aliases}
        terms = sorted([*self.aliases, *self.names], key=len, reverse=True)
        self._forward = re.compile(r"\b(" + "|".join(map(re.escape, terms)) + r")\b") if terms else None
        self._back = {a: s for s, a in self.aliases.items()}
        self._backward = re.compile(r"\b(STOCK_[A-Z]+)\b")

    def anonymize(self, text: str) -> str:
        if self._forward is not None:
            text = self._forward.sub(lambda m: self.aliases.get(m[1]) or self.names[m[1]], text)
        return _DATE.sub(self._relative, text)

    def restore(self, text: str) -> str:
        text = self._backward.sub(lambda m: self._back.get(m[1], m[1]), text)
        return _REL.sub(lambda m: str(self.anchor + np.timedelta64(int(m[1]), "D")), text)

    def anonymize_messages(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        return [{**m, "content": self.anonymize(m["content"])} for m in messages]

    def _relative(self, m: re.Match[str]) -> str:
        try:
            days = int((np.datetime64(m[0], "D") - self.anchor) / np.timedelta64(1, "D"))
        except ValueError:  # not a real date (e.g. 2024-13-45): leave it
            return m[0]
        return f"D{days:+d}"


def _letters(i: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA (spreadsheet column names)."""
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = chr(65 + r) + out
    return out
