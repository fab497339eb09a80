"""Plots that several pages share: Sharpe ratios with their intervals, and equity curves."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tradesim.report.page import figure_png


def sharpe_intervals(labels: Sequence[str], sharpe: Sequence[float], low: Sequence[float],
                     high: Sequence[float], *, xlabel: str, width: float = 11.0) -> bytes:
    """One row per label, top to bottom: the Sharpe point and its interval (rows without an
    interval are left out of the error bars but keep their label)."""
    s, lo, hi = (np.asarray(x, dtype=np.float64) for x in (sharpe, low, high))
    fig = Figure(figsize=(width, 0.5 * len(labels) + 1.5))
    ax = fig.subplots()
    y = np.arange(len(labels))[::-1]
    ok = np.isfinite(s) & np.isfinite(lo) & np.isfinite(hi)
    ax.errorbar(s[ok], y[ok], xerr=[(s - lo)[ok], (hi - s)[ok]], fmt="o", color="#1f4e9c",
                capsize=4)
    ax.set_yticks(y, list(labels))
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3, axis="x")
    return figure_png(fig)


def equity_curves(equity: pd.DataFrame, *, ylabel: str, bold: Collection[str] = (),
                  width: float = 11.0) -> bytes:
    """Every column of ``equity`` (time x name) as a line; ``bold`` columns stand out (the
    references a study is judged against)."""
    fig = Figure(figsize=(width, 3.5))
    ax = fig.subplots()
    for name in equity.columns:
        strong = name in bold
        ax.plot(equity.index, equity[name].to_numpy(), lw=1.8 if strong else 1.1,
                alpha=1.0 if strong or not bold else 0.7, label=name)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return figure_png(fig)
