"""The decision-bias audit as one self-contained HTML page (metrics with intervals, answers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from tradesim.report.charts import interval_chart
from tradesim.report.page import frame_table, key_value_table, section, write_page


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
            section("plot", "Rates with intervals vs random", _plot(audit.metrics)),
            section("answers", "Answers per item",
                    frame_table(answers) if len(answers) else "<p class=note>no answers</p>")]
    return write_page(path, title=f"LLM decision-bias audit: {audit.model}", body=body,
                      subtitle=f"{audit.provider} · {audit.items} items x {audit.samples} "
                               f"samples · {audit.calls} calls")


def _plot(metrics: list[Any]) -> str:
    """Each rate with its Wilson interval (o) and the random answerer's rate (x)."""
    if not metrics:
        return "<p class=note>no metrics</p>"
    return interval_chart([f"{m.test}: {m.name}" for m in metrics], [m.value for m in metrics],
                          [m.lo for m in metrics], [m.hi for m in metrics],
                          xtitle="rate (o model with 95% interval, x random answerer)",
                          baseline=[float("nan") if m.baseline is None else m.baseline
                                    for m in metrics],
                          baseline_name="random answerer", xrange=(-0.02, 1.02))
