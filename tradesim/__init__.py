"""tradesim: simulate, backtest and paper-trade trading agents on one honest, point-in-time engine."""

__version__ = "0.1.0"
