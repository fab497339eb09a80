"""The account (broker, fills, costs, ledger), the session loop and its feeds, the backtest,
run records and the vectorised fast path. The engine imports neither agents nor reports."""

from tradesim.engine.account import Account, AccountConfig
from tradesim.engine.backtest import BacktestConfig, simulate
from tradesim.engine.costs import PRESETS, CostModel, load_costs
from tradesim.engine.feed import Feed, HistoricalFeed, Tick
from tradesim.engine.record import Recorder, RunResult
from tradesim.engine.session import Session

__all__ = ["PRESETS", "Account", "AccountConfig", "BacktestConfig", "CostModel", "Feed", "HistoricalFeed",
           "Recorder", "RunResult", "Session", "Tick", "load_costs", "simulate"]
