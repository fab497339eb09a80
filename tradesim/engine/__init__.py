"""Clock, broker, fills and costs, ledger, the step loop, backtest runner and fast path."""

from tradesim.engine.backtest import BacktestConfig, run_backtest
from tradesim.engine.costs import PRESETS, CostModel, load_costs
from tradesim.engine.loop import Engine
from tradesim.engine.record import RunResult

__all__ = ["PRESETS", "BacktestConfig", "CostModel", "Engine", "RunResult", "load_costs",
           "run_backtest"]
