"""Clock, broker, fills and costs, ledger, the step loop, backtest runner and fast path."""
