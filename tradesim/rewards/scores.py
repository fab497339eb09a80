"""Hardened terminal scores: bounded, centred against reference policies, and conjunctive.

A score is ``preference x budgets`` in (0, 1). ``preference`` is the mean over reference policies
(buy-and-hold, 1/N, the agent's teacher...) of ``sigmoid((m - m_ref) / scale)`` as in
"Preference As Reward": 0.5 means level with the references, and no metric value, however
extreme, moves it past 1. ``budgets`` is the conjunction of risk budgets (return AND drawdown AND
turnover AND tail risk) as ``exp(sum log sigmoid(margin))`` or ``sigmoid(min margin)``, so one
term cannot buy the score alone. The return terms are medians over blocks of bars, so a single
lucky bar moves them by one block at most.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tradesim.errors import ConfigError
from tradesim.rewards.metrics import TRADING_DAYS
from tradesim.rewards.step import cvar


class ScoreConfig(BaseModel):
    """How a run is scored; load by preset name or from TOML with :func:`load_score_config`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: Literal["sharpe", "log_growth", "sortino"] = "sharpe"  # compared with references
    scale: float = Field(0.5, gt=0)  # metric difference that moves the sigmoid by one unit
    n_blocks: int = Field(8, ge=1)  # median-of-blocks statistics
    periods_per_year: float = Field(TRADING_DAYS, gt=0)
    return_min: float = 0.0  # annualised median-of-blocks log growth must exceed this
    return_scale: float = Field(0.05, gt=0)
    drawdown_max: float = Field(0.25, gt=0)  # deepest drawdown allowed (fraction)
    drawdown_scale: float = Field(0.05, gt=0)
    turnover_max: float = Field(25.0, gt=0)  # annual two-sided turnover allowed
    turnover_scale: float = Field(5.0, gt=0)
    cvar_max: float = Field(0.04, gt=0)  # per-bar CVaR of losses allowed
    cvar_scale: float = Field(0.01, gt=0)
    alpha: float = Field(0.95, gt=0, lt=1)
    aggregate: Literal["logsigmoid", "min"] = "logsigmoid"


PRESETS: dict[str, ScoreConfig] = {
    "balanced": ScoreConfig(),
    "strict": ScoreConfig(drawdown_max=0.15, drawdown_scale=0.03, turnover_max=12.0,
                          turnover_scale=3.0, cvar_max=0.03, cvar_scale=0.005, aggregate="min"),
    "growth": ScoreConfig(metric="log_growth", scale=0.1, drawdown_max=0.4, drawdown_scale=0.1,
                          turnover_max=50.0, turnover_scale=10.0, cvar_max=0.06),
}


@dataclass(frozen=True, slots=True)
class Score:
    """A hardened score with its parts: ``value = preference x budget`` (min-form: the smaller)."""

    value: float
    preference: float  # mean sigmoid against the references, in (0, 1)
    budget: float  # conjunction of the risk budgets, in (0, 1)
    margins: dict[str, float]  # per budget, in scale units; > 0 means within budget
    metrics: dict[str, float]  # the robust statistics the terms were computed from


def load_score_config(source: str | Path | Mapping) -> ScoreConfig:
    """A preset by name, a TOML file (top level or a ``[score]`` table), or a mapping.

    A ``preset`` key starts from that preset and the other keys override it.
    """
    if isinstance(source, str) and source in PRESETS:
        return PRESETS[source]
    if isinstance(source, Mapping):
        table = dict(source)
        where = "score config"
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"score config {source!r} is neither a preset "
                              f"({', '.join(PRESETS)}) nor an existing TOML file")
        try:
            table = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"file {path}: not valid TOML ({exc})") from exc
        table = table.get("score", table)
        where = f"file {path}"
    base = table.pop("preset", "balanced")
    if base not in PRESETS:
        raise ConfigError(f"{where}: unknown preset {base!r}; choose one of {', '.join(PRESETS)}")
    try:
        return ScoreConfig.model_validate({**PRESETS[base].model_dump(), **table})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{where}: {problems} (accepted keys: preset, "
                          f"{', '.join(ScoreConfig.model_fields)})") from exc


def robust_metrics(*, returns: np.ndarray, weights: np.ndarray | None = None,
                   config: ScoreConfig | None = None) -> dict[str, float]:
    """Median-of-blocks Sharpe, Sortino, log growth and turnover; path drawdown and CVaR."""
    cfg = config or ScoreConfig()
    r = _check_returns(returns)
    n_blocks = min(cfg.n_blocks, r.shape[0] // 2)
    if n_blocks < 1:
        raise ConfigError(f"returns has {r.shape[0]} bar(s); a score needs at least 2")
    ppy = cfg.periods_per_year
    blocks = np.array_split(r, n_blocks)
    lg = np.log1p(np.maximum(r, -1 + 1e-12))
    level = np.concatenate([[0.0], np.cumsum(lg)])
    out = {
        "sharpe": float(np.median([_block_sharpe(b, ppy) for b in blocks])),
        "sortino": float(np.median([_block_sortino(b, ppy) for b in blocks])),
        "log_growth": float(np.median([b.mean() * ppy for b in np.array_split(lg, n_blocks)])),
        "max_drawdown": float(1.0 - np.exp(-(np.maximum.accumulate(level) - level).max())),
        "cvar": float(cvar(r, alpha=cfg.alpha)),
    }
    if weights is not None:
        w = np.nan_to_num(np.asarray(weights, dtype=np.float64), nan=0.0)
        if w.ndim != 2 or w.shape[0] < 2:
            raise ConfigError(f"weights must be time x symbol with at least 2 rows, got shape "
                              f"{w.shape}")
        per_bar = np.abs(np.diff(w, axis=0)).sum(axis=1)
        out["turnover"] = float(np.median([b.mean() * ppy
                                           for b in np.array_split(per_bar, n_blocks)]))
    return out


def _block_sharpe(r: np.ndarray, ppy: float) -> float:
    sd = float(np.std(r, ddof=1)) if r.shape[0] > 1 else 0.0
    return float(r.mean() / sd * math.sqrt(ppy)) if sd > 1e-12 else 0.0


def _block_sortino(r: np.ndarray, ppy: float) -> float:
    down = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)))
    return float(r.mean() / down * math.sqrt(ppy)) if down > 1e-12 else 0.0


def _check_returns(returns: np.ndarray) -> np.ndarray:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1:
        raise ConfigError(f"returns must be one series of per-bar returns, got shape {r.shape}")
    bad = ~np.isfinite(r) | (r < -1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ConfigError(f"returns[{i}] is {r[i]}; per-bar returns must be finite and >= -1 "
                          "(end the series at a liquidation bar)")
    return r


def _sigmoid(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * x))


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x > -30 else x - math.log1p(math.exp(x))


def preference_score(*, value: float, references: Mapping[str, float], scale: float) -> float:
    """Mean of ``sigmoid((value - ref) / scale)`` over the references: 0.5 = level with them."""
    if not references:
        raise ConfigError("preference_score needs at least one reference (buy_and_hold, "
                          "equal_weight, teacher...)")
    for name, ref in references.items():
        if not math.isfinite(ref):
            raise ConfigError(f"reference {name!r} has metric value {ref}; compute it with "
                              "robust_metrics on that policy's returns")
    if not math.isfinite(value):
        return 0.0
    return float(np.mean([_sigmoid((value - ref) / scale) for ref in references.values()]))


def budget_margins(metrics: Mapping[str, float], config: ScoreConfig) -> dict[str, float]:
    """Each budget's slack in units of its scale (> 0 within budget)."""
    c = config
    out = {
        "return": (metrics["log_growth"] - c.return_min) / c.return_scale,
        "drawdown": (c.drawdown_max - metrics["max_drawdown"]) / c.drawdown_scale,
        "tail": (c.cvar_max - metrics["cvar"]) / c.cvar_scale,
    }
    if "turnover" in metrics:
        out["turnover"] = (c.turnover_max - metrics["turnover"]) / c.turnover_scale
    return out


def conjunction(margins: Mapping[str, float], *, aggregate: str = "logsigmoid") -> float:
    """Log of the joint budget score: sum of log-sigmoids, or the log-sigmoid of the worst."""
    values = list(margins.values())
    if aggregate == "min":
        return _log_sigmoid(min(values))
    if aggregate == "logsigmoid":
        return float(sum(_log_sigmoid(m) for m in values))
    raise ConfigError(f"aggregate {aggregate!r} is unknown; use 'logsigmoid' or 'min'")


def hardened_score(*, returns: np.ndarray, references: Mapping[str, float],
                   weights: np.ndarray | None = None, config: ScoreConfig | None = None) -> Score:
    """Score per-bar ``returns`` against reference metric values under the risk budgets."""
    cfg = config or ScoreConfig()
    metrics = robust_metrics(returns=returns, weights=weights, config=cfg)
    pref = preference_score(value=metrics[cfg.metric], references=references, scale=cfg.scale)
    margins = budget_margins(metrics, cfg)
    budget = math.exp(conjunction(margins, aggregate=cfg.aggregate))
    value = min(pref, budget) if cfg.aggregate == "min" else pref * budget
    return Score(value=value, preference=pref, budget=budget, margins=margins, metrics=metrics)


def score_from_config(config: ScoreConfig | str | Path | Mapping, *, returns: np.ndarray,
                      references: Mapping[str, float],
                      weights: np.ndarray | None = None) -> Score:
    """:func:`hardened_score` with a config given by preset name, TOML path or mapping."""
    cfg = config if isinstance(config, ScoreConfig) else load_score_config(config)
    return hardened_score(returns=returns, references=references, weights=weights, config=cfg)


def reference_values(*, references: Mapping[str, np.ndarray],
                     config: ScoreConfig | None = None) -> dict[str, float]:
    """The score metric of each reference policy's returns, computed the same robust way."""
    cfg = config or ScoreConfig()
    return {name: robust_metrics(returns=r, config=cfg)[cfg.metric]
            for name, r in references.items()}
