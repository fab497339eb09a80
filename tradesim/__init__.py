"""tradesim: simulate, backtest and paper-trade trading agents on one honest, point-in-time engine.

The small public API (imported lazily, so ``import tradesim`` stays cheap)::

    from tradesim import BacktestConfig, run_backtest, load_agent, RunResult
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "BacktestConfig": "tradesim.engine.backtest",
    "RunResult": "tradesim.engine.record",
    "run_backtest": "tradesim.evaluate.backtest",
    "estimate_backtest": "tradesim.evaluate.backtest",
    "load_agent": "tradesim.agents.registry",
    "load_market": "tradesim.data.load",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tradesim' has no attribute {name!r}")
