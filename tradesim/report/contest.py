"""The contest page: scores and weights over time per entrant, and each team's LLM cost.

The same sections appear on the contest run's ``report.html``; ``contest.html`` is the record
on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradesim.report.charts import time_chart
from tradesim.report.page import frame_table, key_value_table, section, write_page


def contest_sections(record: dict[str, Any]) -> list[str]:
    """The contest's sections (setup, weights, scores, entrants, costs) for a run page or its
    own page."""
    names = [str(n) for n in record.get("entrants", [])]
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
        times = pd.DatetimeIndex(pd.to_datetime([h["time"] for h in hist], utc=True))
        w = _matrix([h.get("weights", []) for h in hist], len(names))
        s = _matrix([h.get("scores", []) for h in hist], len(names))
        weights = pd.DataFrame(w, index=times, columns=names)
        out.append(section("contest-weights", "Weights over time", time_chart(
            weights, ytitle="allocation", yformat=".0%", stack=names, step=True,
            label="contest weights per entrant") + "<p class=note>The share of the book each "
            "entrant's target weights get at each step (stacked; the rest is cash).</p>"))
        out.append(section("contest-scores", "Scores over time", time_chart(
            pd.DataFrame(s, index=times, columns=names), ytitle="score",
            label="contest scores per entrant") + "<p class=note>Gaps are warm-up steps, "
            "before an entrant has enough realised rewards to be scored.</p>"))
        with np.errstate(all="ignore"):
            last = [s[np.isfinite(s[:, j]), j][-1] if np.isfinite(s[:, j]).any() else np.nan
                    for j in range(len(names))]
            summary = pd.DataFrame({
                "entrant": names, "mean weight": np.nanmean(w, axis=0),
                "time allocated": (w > 0).mean(axis=0),
                "mean score": [np.nanmean(s[:, j]) if np.isfinite(s[:, j]).any() else np.nan
                               for j in range(len(names))],
                "last score": last})
        how = pd.Series([h.get("how", "?") for h in hist]).value_counts()
        out.append(section("contest-entrants", "Per entrant", frame_table(summary)
                            + f"<p class=note>score source per step: "
                              f"{', '.join(f'{k} {v}' for k, v in how.items())}</p>"))
    costs = record.get("costs", {})
    if costs:
        cols = ["calls", "model_calls", "prompt_tokens", "completion_tokens", "cost_usd"]
        rows = [{"who": k, **{c: v.get(c, 0) for c in cols}, **{
            c: x for c, x in v.items() if c not in cols}} for k, v in sorted(
            costs.items(), key=lambda kv: (kv[0] == "total", not kv[0].startswith("team:"),
                                           kv[0]))]
        out.append(section("contest-costs", "LLM cost per team and entrant",
                           frame_table(pd.DataFrame(rows).rename(columns=lambda c: c.replace(
                               "_", " "))) + "<p class=note>Rule entrants "
                           "make no model call; teams' calls come from the gateway's journal."
                           "</p>"))
    return out


def write_contest_page(path: str | Path, *, record: dict[str, Any]) -> Path:
    """Write the contest page to ``path`` (self-contained HTML)."""
    names = record.get("entrants", [])
    return write_page(path, title="Contest", body=contest_sections(record),
                      subtitle=f"{len(names)} entrants: {', '.join(map(str, names))}")


def _matrix(rows: list[list[float]], width: int) -> np.ndarray:
    """Rows as a float matrix ``[steps, width]`` (short rows padded with NaN, None as NaN)."""
    out = np.full((len(rows), width), np.nan)
    for i, row in enumerate(rows):
        vals = np.asarray([np.nan if v is None else v for v in row[:width]], dtype=np.float64)
        out[i, :vals.size] = vals
    return out
