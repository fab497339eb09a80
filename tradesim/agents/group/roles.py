"""The five roles: their schemas (LLM path), prompts, and quantitative fallbacks.

Every role has one pydantic schema the gateway validates against and one function that gives
the same kind of answer from numbers alone; an abstaining model answer falls back to it.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tradesim.agents.group import lexicon

Style = Literal["aggressive", "balanced", "conservative"]
STYLES: tuple[str, ...] = ("aggressive", "balanced", "conservative")

# N = 0.55 * base + 0.25 * prob + 0.20 * recency (docs/tradinggroup.md: our reading)
N_BASE, N_PROB, N_RECENCY = 0.55, 0.25, 0.20
RECENCY_DAYS = 3.0  # e-folding age of a headline's recency term

# per style: entry threshold on the merged signal, size multiplier, stop and target in
# sigma * sqrt(horizon) units (docs/tradinggroup.md)
STYLE_RULES: dict[str, dict[str, float]] = {
    "aggressive": {"threshold": 0.10, "size": 1.0, "stop": 2.0, "target": 3.0},
    "balanced": {"threshold": 0.15, "size": 1.0, "stop": 1.5, "target": 2.5},
    "conservative": {"threshold": 0.25, "size": 0.5, "stop": 1.0, "target": 2.0},
}
SIGNAL_WEIGHTS: dict[str, float] = {"news": 0.35, "report": 0.15, "trend": 0.50}


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NewsView(_Schema):
    """News sentiment role: polarity of the recent headlines and how sure it is."""

    sentiment: float = Field(ge=-1.0, le=1.0, description="-1 very negative .. +1 very positive")
    probability: float = Field(ge=0.0, le=1.0, description="how sure, 0..1")
    rationale: str = Field(max_length=400)


class ReportView(_Schema):
    """Report role: what the visible fundamentals say."""

    score: float = Field(ge=-1.0, le=1.0, description="-1 deteriorating .. +1 improving")
    rationale: str = Field(max_length=400)


class TrendView(_Schema):
    """Trend forecasting role: direction over the horizon and confidence."""

    direction: Literal["up", "down", "flat"]
    confidence: float = Field(ge=0.0, le=1.0)
    rationale: str = Field(max_length=400)


class StyleView(_Schema):
    """Style role: the trading style for this step."""

    style: Style
    rationale: str = Field(max_length=400)


class TeamDecision(_Schema):
    """Decision role: buy, sell or hold with a size (fraction of the symbol's allocation)."""

    action: Literal["buy", "sell", "hold"]
    size: float = Field(ge=0.0, le=1.0)
    confidence: float = Field(ge=0.0, le=1.0)
    rationale: str = Field(max_length=400)


SYSTEM: dict[str, str] = {
    "news": ("[role:news] You are the news sentiment analyst of a trading team. Read the dated "
             "headlines and reply with JSON: sentiment (-1..1), probability (0..1), rationale."),
    "report": ("[role:report] You are the financial report analyst of a trading team. Read the "
               "fundamentals visible today and reply with JSON: score (-1..1), rationale."),
    "trend": ("[role:trend] You are the trend forecaster of a trading team. From the indicators "
              "and your past experience, forecast the direction over the horizon. Reply with "
              "JSON: direction (up, down or flat), confidence (0..1), rationale."),
    "style": ("[role:style] You set the trading style of a team: aggressive, balanced or "
              "conservative (conservative buys at half size). Reply with JSON: style, rationale."),
    "decision": ("[role:decision] You are the decision maker of a trading team. Merge the "
                 "analysts' signals, the style and your past experience into buy, sell or hold "
                 "with a size (0..1 of the stock's allocation). Reply with JSON: action, size, "
                 "confidence, rationale."),
}


# --- quantitative paths ----------------------------------------------------------------------

def news_quant(titles: list[str], ages_days: list[float]) -> tuple[float, float, str]:
    """(signed score in [-1, 1], mean influence N, summary) from the lexicon.

    Per item: base = |polarity|, prob = lexicon strength, recency = exp(-age / 3 days);
    N = 0.55 base + 0.25 prob + 0.20 recency; the item's signal is sign(polarity) * N. The
    symbol's score is the mean signal; items without a lexicon hit carry no sign (signal 0).
    """
    if not titles:
        return 0.0, 0.0, "no news available at decision time"
    signals, influence = [], []
    for title, age in zip(titles, ages_days):
        pol, prob = lexicon.score(title)
        n = influence_score(abs(pol), prob, age)
        influence.append(n)
        signals.append(math.copysign(n, pol) if pol else 0.0)
    s = float(np.mean(signals))
    return s, float(np.mean(influence)), (f"{len(titles)} headlines, lexicon score {s:+.2f}, "
                                          f"mean influence {np.mean(influence):.2f}")


def influence_score(base: float, prob: float, age_days: float) -> float:
    """N = 0.55 base + 0.25 prob + 0.20 recency, recency = exp(-age / 3 days); in [0, 1]."""
    recency = math.exp(-max(age_days, 0.0) / RECENCY_DAYS)
    return N_BASE * base + N_PROB * prob + N_RECENCY * recency


def trend_quant(feat: dict[str, float]) -> tuple[str, float, float]:
    """(direction, confidence, signed score) from RSI-14, SMA-20 deviation and 20-bar high.

    score = 0.5 tanh(dev_sma20 / 0.05) + 0.3 (RSI - 50) / 50 + 0.2 clip(1 + 2 tanh(dist / 0.05),
    -1, 1), halved when RSI > 75 or < 25 (stretched: trend likely to stall). |score| < 0.15 is
    flat.
    """
    if not all(math.isfinite(feat[k]) for k in ("rsi14", "dev_sma20", "dist_high20")):
        return "flat", 0.0, 0.0
    high = max(-1.0, min(1.0, 1.0 + 2.0 * math.tanh(feat["dist_high20"] / 0.05)))
    score = (0.5 * math.tanh(feat["dev_sma20"] / 0.05) + 0.3 * (feat["rsi14"] - 50.0) / 50.0
             + 0.2 * high)
    if feat["rsi14"] > 75 or feat["rsi14"] < 25:
        score *= 0.5
    direction = "up" if score > 0.15 else "down" if score < -0.15 else "flat"
    return direction, min(1.0, abs(score)), score


def style_quant(*, drawdown: float, vol: float, hit_rate: float, n_past: int) -> tuple[str, str]:
    """(style, why): conservative in a drawdown > 8 %, daily vol > 2.8 % or when past decisions
    lost (hit rate < 40 % over >= 3); aggressive below 2 % drawdown with daily vol < 1.6 % and a
    hit rate >= 55 % over >= 3; balanced otherwise."""
    seasoned = n_past >= 3 and math.isfinite(hit_rate)
    if drawdown > 0.08 or (math.isfinite(vol) and vol > 0.028) or (seasoned and hit_rate < 0.4):
        return "conservative", (f"drawdown {drawdown:.1%}, vol {vol:.2%}, hit rate "
                                f"{hit_rate:.0%} over {n_past}")
    if drawdown < 0.02 and math.isfinite(vol) and vol < 0.016 and seasoned and hit_rate >= 0.55:
        return "aggressive", f"calm (vol {vol:.2%}) and winning ({hit_rate:.0%} over {n_past})"
    return "balanced", f"drawdown {drawdown:.1%}, vol {vol:.2%}"


def merge_signals(news: float, report: float, trend: float) -> float:
    """The decision role's merged signal: 0.35 news + 0.15 report + 0.50 trend."""
    w = SIGNAL_WEIGHTS
    return w["news"] * news + w["report"] * report + w["trend"] * trend


def decision_quant(signal: float, style: str) -> tuple[str, float, float]:
    """(action, size in [0, 1], confidence): buy above the style's threshold, sell below its
    negative; size = style size * conviction (aggressive: full conviction), conviction =
    min(1, |signal| / 0.5)."""
    rule = STYLE_RULES[style]
    conviction = min(1.0, abs(signal) / 0.5)
    if signal > rule["threshold"]:
        size = rule["size"] * (1.0 if style == "aggressive" else conviction)
        return "buy", size, conviction
    if signal < -rule["threshold"]:
        return "sell", rule["size"] * conviction, conviction
    return "hold", 0.0, 1.0 - conviction
