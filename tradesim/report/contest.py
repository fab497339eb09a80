"""The contest page: scores and weights over time per entrant, and each team's LLM cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tradesim.report.page import (
    figure_png,
    frame_table,
    img_tag,
    key_value_table,
    section,
    write_page,
)


def contest_sections(record: dict[str, Any]) -> list[str]:
    """The contest's sections (setup, weights, scores, costs) for a run page or its own page."""
    names = list(record.get("entrants", []))
    hist = record.get("history", [])
    params = record.get("params", {})
    setup = {k: params.get(k) for k in ("allocation", "scoring", "reward", "predictor",
                                         "history", "horizon", "window", "min_samples",
                                         "refit_every", "sigma_floor", "judges", "samples")
             if k in params}
    setup["entrants"] = ", ".join(names)
    setup["steps"] = len(hist)
    out = [section("contest-setup", "Contest setup", key_value_table(setup) + (
        "<p class=note>Scores use only rewards realised by decision time: a signal decided "
        "after bar j earns open[j+1] -> open[j+2] and is scored from step j+2.</p>"))]
    if hist:
        times = pd.to_datetime([h["time"] for h in hist])
        w = np.asarray([h["weights"] for h in hist], dtype=float)
        s = np.asarray([h["scores"] for h in hist], dtype=float)
        out.append(section("contest-weights", "Weights over time",
                           img_tag(_plot(times, w, names, "allocation"), "contest weights")))
        out.append(section("contest-scores", "Scores over time",
                           img_tag(_plot(times, s, names, "score"), "contest scores")))
        with np.errstate(all="ignore"):
            summary = pd.DataFrame({
                "entrant": names, "mean weight": np.nanmean(w, axis=0),
                "time allocated": (w > 0).mean(axis=0),
                "last score": s[-1] if len(s) else np.nan})
        how = pd.Series([h["how"] for h in hist]).value_counts()
        out.append(section("contest-entrants", "Per entrant", frame_table(summary)
                            + f"<p class=note>score source per step: "
                              f"{', '.join(f'{k} {v}' for k, v in how.items())}</p>"))
    costs = record.get("costs", {})
    if costs:
        rows = [{"who": k, **v} for k, v in sorted(costs.items())]
        out.append(section("contest-costs", "LLM cost per team and entrant",
                           frame_table(pd.DataFrame(rows))))
    return out


def write_contest_page(path: str | Path, *, record: dict[str, Any]) -> Path:
    """Write the contest page to ``path`` (self-contained HTML)."""
    return write_page(path, title="Contest", body=contest_sections(record))


def _plot(times: pd.DatetimeIndex, values: np.ndarray, names: list[str], label: str) -> bytes:
    fig = Figure(figsize=(10, 3.2))
    ax = fig.add_subplot()
    for j, name in enumerate(names):
        if j < values.shape[1]:
            ax.plot(times, values[:, j], label=name, lw=1.2)
    ax.set_ylabel(label)
    ax.legend(loc="upper left", fontsize=8, ncol=min(4, max(1, len(names))))
    ax.grid(alpha=0.3)
    return figure_png(fig)
