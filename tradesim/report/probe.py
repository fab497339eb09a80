"""The decision-bias audit as one self-contained HTML page (metrics with intervals, answers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def write_probe_report(path: str | Path, audit: Any) -> Path:
    """Write ``audit`` (a :class:`tradesim.llm.probe.AuditResult`) to ``path`` as HTML."""
    header = key_value_table({
        "provider": audit.provider, "model": audit.model, "endpoint": audit.endpoint,
        "temperature": audit.temperature, "items": audit.items,
        "samples per item": audit.samples, "calls": audit.calls,
        "abstained (counted as failures)": audit.abstained})
    rows = pd.DataFrame([{
        "test": m.test, "metric": m.name, "value": f"{m.value:.1%}",
        "95% interval": f"{m.lo:.0%} .. {m.hi:.0%}", "n": m.n,
        "random answerer": "" if m.baseline is None else f"{m.baseline:.0%}",
        "ideal": m.ideal, "note": m.note} for m in audit.metrics])
    answers = pd.DataFrame(audit.answers)
    if len(answers):
        answers = answers.pivot_table(index="item", columns=["test", "variant"], values="answer",
                                      aggfunc="first")
        answers.columns = [f"{t}:{v}" for t, v in answers.columns]
        answers = answers.reset_index()
    intro = ("<p class=note>Each rate is over items with a Wilson 95% interval; the random "
             "answerer column is what uniform guessing scores on the same test. Abstentions "
             "count as failures, never as hold.</p>")
    body = [section("audit", "Decision-bias audit", header + intro),
            section("metrics", "Metrics", frame_table(rows)),
            section("plot", "Rates with intervals vs random",
                    img_tag(_plot(audit.metrics), "audit metrics")),
            section("answers", "Answers per item",
                    frame_table(answers) if len(answers) else "<p class=note>no answers</p>")]
    return write_page(path, title=f"LLM decision-bias audit: {audit.model}",
                      body=body)


def _plot(metrics: list[Any]) -> bytes:
    fig = Figure(figsize=(11, 0.45 * len(metrics) + 1))
    ax = fig.subplots()
    ys = range(len(metrics))[::-1]
    for y, m in zip(ys, metrics, strict=True):
        ax.plot([m.lo, m.hi], [y, y], color="#1f4e9c", lw=2)
        ax.plot([m.value], [y], "o", color="#1f4e9c")
        if m.baseline is not None:
            ax.plot([m.baseline], [y], "x", color="#c0392b")
    ax.set_yticks(list(ys), [f"{m.test}: {m.name}" for m in metrics], fontsize=8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("rate (o model with 95% interval, x random answerer)")
    fig.tight_layout()
    return figure_png(fig)
