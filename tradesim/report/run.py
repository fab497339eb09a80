"""The run page: a RunResult's tear sheet, written into its run folder as ``report.html``."""

from __future__ import annotations

from pathlib import Path

from tradesim.engine.record import RunResult
from tradesim.report.tearsheet import write_tearsheet


def write_run_report(result: RunResult, folder: str | Path) -> Path:
    """Write ``report.html`` for ``result`` into ``folder`` and return its path."""
    equity = result.equity
    bench = equity["benchmark"] if equity["benchmark"].notna().any() else None
    title = f"{result.meta.get('agent', 'agent')} on {', '.join(result.config.get('symbols', []))}"
    return write_tearsheet(Path(folder) / "report.html", title=title, equity=equity["equity"],
                           benchmark=bench, weights=result.weights, trades=result.trades,
                           metrics=result.metrics,
                           meta={**result.meta, "fill_mode": result.fill_mode,
                                 "fingerprints": result.fingerprints, "config": result.config})
