"""Fundamentals for the report role, visible only after their publication lag.

A report source is a CSV or Parquet file with one row per (symbol, fiscal period):
``symbol, period_end`` plus numeric metrics (``revenue``, ``eps``, ``net_income`` ... any
numeric column) and optionally ``filed_at`` (when the filing was published). The rule: a row
becomes visible at ``filed_at + lag_days`` when the file has ``filed_at``, else at
``period_end + fallback_days`` (45 days: the SEC 10-Q deadline of 40 days for large
accelerated filers, plus margin; annual 10-K rows would need 60-90, so give ``filed_at`` when
you have it). Nothing is visible before that, whatever the period it covers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradesim.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Report:
    """One visible fiscal period of one symbol."""

    symbol: str
    period_end: np.datetime64
    visible_at: np.datetime64
    metrics: dict[str, float]


class ReportSource:
    """Reports read once from a file; :meth:`visible` answers point-in-time."""

    def __init__(self, path: str | Path, *, lag_days: int = 1, fallback_days: int = 45) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"report file {self.path} does not exist; pass a CSV or Parquet "
                              "file with symbol, period_end[, filed_at] and numeric columns, or "
                              "leave reports unset")
        frame = (pd.read_parquet(self.path) if self.path.suffix == ".parquet"
                 else pd.read_csv(self.path))
        missing = [c for c in ("symbol", "period_end") if c not in frame.columns]
        if missing:
            raise ConfigError(f"report file {self.path} lacks column(s) {', '.join(missing)}; "
                              "it needs symbol, period_end and optionally filed_at")
        period = pd.to_datetime(frame["period_end"], utc=True).dt.tz_localize(None)
        if "filed_at" in frame.columns:
            filed = pd.to_datetime(frame["filed_at"], utc=True).dt.tz_localize(None)
            visible = filed + pd.Timedelta(days=lag_days)
            visible = visible.fillna(period + pd.Timedelta(days=fallback_days))
        else:
            visible = period + pd.Timedelta(days=fallback_days)
        numeric = [c for c in frame.columns if c not in ("symbol", "period_end", "filed_at")
                   and pd.api.types.is_numeric_dtype(frame[c])]
        self._by_symbol: dict[str, list[Report]] = {}
        for i in range(len(frame)):
            rep = Report(str(frame["symbol"].iat[i]).upper(),
                         period.iat[i].to_datetime64().astype("datetime64[ns]"),
                         visible.iat[i].to_datetime64().astype("datetime64[ns]"),
                         {c: float(frame[c].iat[i]) for c in numeric})
            self._by_symbol.setdefault(rep.symbol, []).append(rep)
        for reps in self._by_symbol.values():
            reps.sort(key=lambda r: (r.visible_at, r.period_end))

    def visible(self, symbol: str, t: np.datetime64, n: int = 5) -> list[Report]:
        """The latest ``n`` reports of ``symbol`` visible at ``t`` (oldest first)."""
        reps = [r for r in self._by_symbol.get(symbol, []) if r.visible_at <= t]
        return reps[-n:]


def report_score(reports: list[Report]) -> tuple[float, str]:
    """(score in [-1, 1], one-line summary) from growth of the latest visible period.

    Growth of revenue and EPS (or net income) against the period a year earlier when present
    (4 quarters back), else the previous period; squashed with tanh(growth / 0.2).
    """
    if not reports:
        return 0.0, "no fundamentals visible at decision time"
    last = reports[-1]
    base = reports[-5] if len(reports) >= 5 else reports[-2] if len(reports) >= 2 else None
    parts, scores = [], []
    for key in ("revenue", "eps", "net_income"):
        now = last.metrics.get(key, math.nan)
        then = base.metrics.get(key, math.nan) if base is not None else math.nan
        if math.isfinite(now) and math.isfinite(then) and then != 0:
            g = (now - then) / abs(then)
            scores.append(math.tanh(g / 0.2))
            parts.append(f"{key} {g:+.1%}")
    day = str(last.period_end.astype("datetime64[D]"))
    if not scores:
        return 0.0, f"report for period ending {day}; no comparable earlier period"
    return float(np.mean(scores)), f"period ending {day}: " + ", ".join(parts)


def describe(reports: list[Report]) -> list[dict[str, Any]]:
    """Reports as prompt-ready dicts."""
    return [{"period_end": str(r.period_end.astype("datetime64[D]")),
             **{k: round(v, 4) for k, v in r.metrics.items()}} for r in reports]
