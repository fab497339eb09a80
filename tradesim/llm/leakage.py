"""Leakage guards: model knowledge cutoffs, and ticker/date anonymisation in prompts.

A model evaluated on a window it was trained on may simply remember what happened; the run
record carries :func:`leakage_flags` so the report can say so (not on synthetic data, which no
model has seen). Anonymisation hides what lets a model look its memory up: tickers (any case),
company names (:data:`COMPANY_NAMES`, extend it with :func:`register_company_names`), dates in
the usual formats and bare years; it is reversed on the way out. :func:`compare_anonymised`
measures whether it matters: the same agent over the same window with and without it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tradesim.errors import ConfigError


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


SYNTHETIC_SOURCES = frozenset({"synthetic", "sample"})  # generated data: nothing to remember
_ANON_NOTE = (" Prompts were anonymised (tickers, company names, dates, years), so the model "
              "cannot look the period up by name, though price paths and news wording may still "
              "identify it; compare_anonymised measures whether its decisions depend on it.")


def leakage_flags(model: str, start: np.datetime64 | str, end: np.datetime64 | str, *,
                  sources: Iterable[str] = (), anonymized: bool = False) -> list[LeakageFlag]:
    """Flags for a backtest window [start, end] that precedes (part of) the model's cutoff.

    ``sources`` are the data sources the run read: all synthetic means no flag (no model was
    trained on them). ``anonymized`` turns full/partial into "reduced" and says what is left.
    """
    sources = set(sources)
    if sources and sources <= SYNTHETIC_SOURCES:
        return []
    flags = _cutoff_flags(model, start, end)
    if anonymized:
        flags = [LeakageFlag(f.model, "reduced" if f.level in ("full", "partial") else f.level,
                             f.message + _ANON_NOTE) for f in flags]
    return flags


def _day(value: np.datetime64 | str) -> np.datetime64:
    """A stamp or ISO text as a calendar day."""
    day: np.datetime64 = np.datetime64(str(np.asarray(value, dtype="datetime64[D]")), "D")
    return day


def _cutoff_flags(model: str, start: np.datetime64 | str,
                  end: np.datetime64 | str) -> list[LeakageFlag]:
    lo, hi = _day(start), _day(end)
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


# Company names per ticker that prompts and news may use; extend with register_company_names.
COMPANY_NAMES: dict[str, tuple[str, ...]] = {
    "AAPL": ("Apple Inc.", "Apple"), "MSFT": ("Microsoft Corporation", "Microsoft"),
    "AMZN": ("Amazon.com", "Amazon"), "GOOGL": ("Alphabet", "Google"), "GOOG": ("Alphabet", "Google"),
    "META": ("Meta Platforms", "Facebook"), "NVDA": ("Nvidia",), "TSLA": ("Tesla",),
    "JPM": ("JPMorgan Chase", "JPMorgan", "JP Morgan"), "BRK.B": ("Berkshire Hathaway",),
    "XOM": ("Exxon Mobil", "ExxonMobil", "Exxon"), "JNJ": ("Johnson & Johnson",),
    "WMT": ("Walmart",), "NFLX": ("Netflix",), "INTC": ("Intel",), "AMD": ("Advanced Micro Devices",),
    "IBM": ("International Business Machines",), "KO": ("Coca-Cola", "Coca Cola"),
    "PFE": ("Pfizer",), "BA": ("Boeing",), "DIS": ("Walt Disney", "Disney"),
    "SPY": ("S&P 500", "SPDR S&P 500"),
}
# Lower-case forms of these tickers are ordinary words; only their upper-case form is replaced.
_COMMON_WORDS = frozenset({"a", "all", "am", "an", "and", "are", "as", "at", "be", "by", "can",
                           "cat", "do", "for", "go", "has", "he", "hi", "i", "if", "in", "is",
                           "it", "key", "low", "main", "man", "new", "now", "o", "on", "one",
                           "or", "out", "run", "see", "so", "t", "the", "to", "up", "us", "way",
                           "well", "win", "you"})
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december")
_MONTH = (r"(?P<mon>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|"
          r"aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_DATES = re.compile("|".join([
    r"\b(?P<iy>\d{4})-(?P<im>\d{2})-(?P<id>\d{2})\b",  # 2019-03-03
    r"\b(?P<sy>\d{4})/(?P<sm>\d{1,2})/(?P<sd>\d{1,2})\b",  # 2019/03/03
    r"\b(?P<um>\d{1,2})/(?P<ud>\d{1,2})/(?P<uy>\d{4})\b",  # 03/03/2019 (US month first)
    _MONTH.replace("mon", "am") + r"\s+(?P<ad>\d{1,2})(?:st|nd|rd|th)?,?\s+(?P<ay>\d{4})\b",
    r"\b(?P<bd>\d{1,2})(?:st|nd|rd|th)?\s+" + _MONTH.replace("mon", "bm") + r",?\s+(?P<by>\d{4})\b",
]), re.IGNORECASE)
_YEAR = re.compile(r"(?<![\d.,$%+-])\b(19[5-9]\d|20[0-4]\d)\b(?![.,]?\d|%)")
_REL = re.compile(r"\bD([+-]\d+)\b")
_REL_YEAR = re.compile(r"\bY([+-]\d+)\b")


def register_company_names(names: dict[str, str | Iterable[str]]) -> None:
    """Add company names per ticker to :data:`COMPANY_NAMES` (used by every Anonymizer)."""
    for symbol, value in names.items():
        extra = (value,) if isinstance(value, str) else tuple(value)
        COMPANY_NAMES[symbol] = tuple(dict.fromkeys((*COMPANY_NAMES.get(symbol, ()), *extra)))


class Anonymizer:
    """Consistent ticker aliases and dates relative to an anchor, reversible on the way out.

    ``AAPL`` (also ``aapl``, ``$AAPL``) and its company names become ``STOCK_A`` everywhere in a
    run (aliases follow sorted symbols, so they do not depend on prompt order); ``2024-03-01``,
    ``March 1, 2024``, ``1 Mar 2024``, ``03/01/2024`` become ``D-3`` for an anchor of
    2024-03-04, and a bare year such as ``2023`` becomes ``Y-1``. ``names`` adds to
    :data:`COMPANY_NAMES` for this anonymiser.
    """

    def __init__(self, *, symbols: Iterable[str], anchor: np.datetime64 | str,
                 names: dict[str, str | Iterable[str]] | None = None) -> None:
        self.anchor = _day(anchor)
        self._year = int(str(self.anchor)[:4])
        self.aliases = {s: f"STOCK_{_letters(i)}" for i, s in enumerate(sorted(set(symbols)))}
        table: dict[str, str] = {}
        for s in self.aliases:
            for name in COMPANY_NAMES.get(s, ()):
                table[name.lower()] = self.aliases[s]
        for s, value in (names or {}).items():
            if s in self.aliases:
                for name in ((value,) if isinstance(value, str) else value):
                    table[name.lower()] = self.aliases[s]
        self.names = table  # lower-cased company name -> alias
        exact = sorted(self.aliases, key=len, reverse=True)
        lower = sorted((s.lower() for s in self.aliases if s.lower() not in _COMMON_WORDS),
                       key=len, reverse=True)
        names_sorted = sorted(table, key=len, reverse=True)
        parts = []
        if names_sorted:  # names first: "Apple Inc." before "Apple"
            parts.append(r"(?i:(?P<name>" + "|".join(map(_name_pattern, names_sorted)) + r"))")
        if exact:
            parts.append(r"\$?\b(?P<sym>" + "|".join(map(re.escape, exact)) + r")\b")
        if lower:
            parts.append(r"\$?\b(?P<low>" + "|".join(map(re.escape, lower)) + r")\b")
        self._forward = re.compile("|".join(parts)) if parts else None
        self._by_lower = {s.lower(): a for s, a in self.aliases.items()}
        self._back = {a: s for s, a in self.aliases.items()}
        self._backward = re.compile(r"\b(STOCK_[A-Z]+)\b")

    def anonymize(self, text: str) -> str:
        if self._forward is not None:
            text = self._forward.sub(self._alias, text)
        text = _DATES.sub(self._relative, text)
        return _YEAR.sub(lambda m: f"Y{int(m[1]) - self._year:+d}", text)

    def restore(self, text: str) -> str:
        text = self._backward.sub(lambda m: self._back.get(m[1], m[1]), text)
        text = _REL.sub(lambda m: str(self.anchor + np.timedelta64(int(m[1]), "D")), text)
        return _REL_YEAR.sub(lambda m: str(self._year + int(m[1])), text)

    def anonymize_messages(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        return [{**m, "content": self.anonymize(m["content"])} for m in messages]

    def _alias(self, m: re.Match[str]) -> str:
        g = m.groupdict()
        if g.get("name"):
            return self.names[" ".join(g["name"].lower().split())]
        if g.get("sym"):
            return self.aliases[g["sym"]]
        return self._by_lower[g["low"]]

    def _relative(self, m: re.Match[str]) -> str:
        g = m.groupdict()
        try:
            if g["iy"]:
                y, mo, d = int(g["iy"]), int(g["im"]), int(g["id"])
            elif g["sy"]:
                y, mo, d = int(g["sy"]), int(g["sm"]), int(g["sd"])
            elif g["uy"]:
                y, mo, d = int(g["uy"]), int(g["um"]), int(g["ud"])
            elif g["ay"]:
                y, mo, d = int(g["ay"]), _month(g["am"]), int(g["ad"])
            else:
                y, mo, d = int(g["by"]), _month(g["bm"]), int(g["bd"])
            day = np.datetime64(f"{y:04d}-{mo:02d}-{d:02d}", "D")
        except ValueError:  # not a real date (e.g. 2024-13-45): leave it
            return m[0]
        return f"D{int((day - self.anchor) / np.timedelta64(1, 'D')):+d}"


def _month(name: str) -> int:
    key = name.lower().rstrip(".")[:3]
    return next(i for i, full in enumerate(_MONTHS, 1) if full.startswith(key))


def _name_pattern(name: str) -> str:
    """A company name as a regex: word-bounded where it starts/ends with a word character."""
    body = r"\s+".join(map(re.escape, name.split()))
    start = r"\b" if name[:1].isalnum() else ""
    end = r"\b" if name[-1:].isalnum() else ""
    return start + body + end


def _letters(i: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA (spreadsheet column names)."""
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = chr(65 + r) + out
    return out


@dataclass(frozen=True, slots=True)
class MemorisationResult:
    """The same agent over the same window, with and without anonymised prompts.

    A model that only reads the data decides the same either way; one that recognises the
    tickers and dates (and remembers what followed) decides differently, and usually earns more
    with the names visible. Intervals are percentile bootstraps over decision steps and days.
    """

    decisions: int
    agreement: float  # share of decision steps whose target weights are identical
    agreement_ci: tuple[float, float]
    return_diff: float  # mean per-bar return, plain minus anonymised
    return_diff_ci: tuple[float, float]
    total_return_plain: float
    total_return_anonymised: float
    confidence: float

    @property
    def remembers(self) -> bool:
        """True when the decisions differ beyond chance (the agreement CI excludes 1)."""
        return self.agreement_ci[1] < 1.0

    def __str__(self) -> str:
        pct = round(self.confidence * 100)
        return (f"memorisation probe over {self.decisions} decisions: same decision "
                f"{self.agreement:.0%} ({pct}% CI {self.agreement_ci[0]:.0%}..{self.agreement_ci[1]:.0%}); "
                f"return per bar plain minus anonymised {self.return_diff * 1e4:+.2f} bp "
                f"({pct}% CI {self.return_diff_ci[0] * 1e4:+.2f}..{self.return_diff_ci[1] * 1e4:+.2f} bp); "
                f"total return {self.total_return_plain:+.2%} plain vs "
                f"{self.total_return_anonymised:+.2%} anonymised")


def compare_anonymised(*, plain: Any, anonymised: Any, n_boot: int = 2000, seed: int = 0,
                       confidence: float = 0.95) -> MemorisationResult:
    """Compare two runs (RunResult-like: ``decisions`` with a JSON ``weights`` column and
    ``equity`` with an ``equity`` column) of the same agent and window, plain vs anonymised."""
    w_plain = [_weights(w) for w in plain.decisions["weights"]]
    w_anon = [_weights(w) for w in anonymised.decisions["weights"]]
    if len(w_plain) != len(w_anon) or not w_plain:
        raise ConfigError(f"compare_anonymised needs two runs over the same window; got "
                          f"{len(w_plain)} and {len(w_anon)} decisions")
    same = np.array([a == b for a, b in zip(w_plain, w_anon, strict=True)], dtype=float)
    eq_p = plain.equity["equity"].to_numpy(dtype=float)
    eq_a = anonymised.equity["equity"].to_numpy(dtype=float)
    r_p, r_a = np.diff(eq_p) / eq_p[:-1], np.diff(eq_a) / eq_a[:-1]
    diff = r_p - r_a
    rng = np.random.default_rng(seed)
    tail = (1 - confidence) / 2
    return MemorisationResult(
        decisions=len(same), agreement=float(same.mean()),
        agreement_ci=_boot_ci(same, n_boot, rng, tail),
        return_diff=float(diff.mean()) if len(diff) else 0.0,
        return_diff_ci=_boot_ci(diff, n_boot, rng, tail) if len(diff) else (0.0, 0.0),
        total_return_plain=float(eq_p[-1] / eq_p[0] - 1) if len(eq_p) else 0.0,
        total_return_anonymised=float(eq_a[-1] / eq_a[0] - 1) if len(eq_a) else 0.0,
        confidence=confidence)


def memorisation_probe(*, backtest: Callable[[bool], Any], n_boot: int = 2000, seed: int = 0,
                       confidence: float = 0.95) -> MemorisationResult:
    """Run ``backtest(anonymize)`` for False and True (the same agent, window and model; the
    caller builds both, e.g. with run_backtest) and compare them with :func:`compare_anonymised`."""
    return compare_anonymised(plain=backtest(False), anonymised=backtest(True), n_boot=n_boot,
                              seed=seed, confidence=confidence)


def _weights(cell: Any) -> dict[str, float]:
    raw = json.loads(cell) if isinstance(cell, str) else dict(cell or {})
    return {k: round(float(v), 10) for k, v in raw.items()}


def _boot_ci(x: np.ndarray, n_boot: int, rng: np.random.Generator,
             tail: float) -> tuple[float, float]:
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return float(lo), float(hi)
