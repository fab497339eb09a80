"""Cash at fill: tradesim against backtesting.py on gapping daily series, one row per series.

The scenario is the one that drove cash negative before the fix: an all-in SMA 10/30 crossover
(weight 1.0, whole shares sized at the signal bar's close, filled at the next open, 0.1%
commission, no leverage). A gap up between the close and the open makes the order cost more
cash than there is. tradesim shrinks such an order to the whole shares the cash buys at the
fill price (an ``order_shrunk`` event). backtesting.py is configured the same way: its own
relative sizing (``buy(size=<1)``, sized at the fill from the margin available at the fill price
net of commission) is used for exactly the orders whose whole-share size the next open makes
unaffordable; every other order is the same whole-share order as ours. The harness knows the
next open to make that switch; the sizes, fills, commissions and equity are backtesting.py's.
The last columns run backtesting.py unchanged, which cancels those orders.

    .venv/bin/python benchmarks/fill_parity.py [DATA_DIR]   # default ../shared/data/daily
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

CASH, COMMISSION, WEIGHT, START = 100_000.0, 0.001, 1.0, "2005-01-01"
SERIES = ("aapl", "amzn", "ba", "ge", "intc", "jpm", "msft", "xom")
_ALMOST_ALL = 1 - 1e-12  # backtesting.py's relative size: "all the margin available"


def load(data_dir: Path, name: str) -> pd.DataFrame:
    """OHLCV of ``<name>.us.txt`` from ``START`` on, as backtesting.py wants it."""
    df = pd.read_csv(data_dir / f"{name}.us.txt", parse_dates=["Date"], index_col="Date")
    return df.loc[START:, ["Open", "High", "Low", "Close", "Volume"]].astype(float)


def sma_signal(df: pd.DataFrame) -> np.ndarray:
    """+1 on a 10/30 cross up, -1 on a cross down, 0 otherwise (computed once for all engines)."""
    fast, slow = df["Close"].rolling(10).mean(), df["Close"].rolling(30).mean()
    above = (fast > slow).to_numpy()
    valid = (fast.notna() & slow.notna()).to_numpy()
    prev_valid = np.r_[False, valid[:-1]]
    up = valid & prev_valid & above & ~np.r_[False, above[:-1]]
    down = valid & prev_valid & ~above & np.r_[False, above[:-1]]
    return up.astype(int) - down.astype(int)


def run_tradesim(df: pd.DataFrame, signal: np.ndarray, symbol: str) -> Any:
    """The crossover through tradesim's event loop (whole shares, max_leverage 1)."""
    from tradesim.contracts import BaseAgent, Decision, Observation
    from tradesim.data.bars import Bars
    from tradesim.data.view import MarketData
    from tradesim.evaluate.backtest import BacktestConfig, run_backtest

    class _Signal(BaseAgent):
        name = "sma_all_in"

        def decide(self, obs: Observation) -> Decision:
            s = signal[obs.market.count(symbol) - 1]
            held = obs.portfolio.positions.get(symbol, 0.0)
            if s == 1 and held == 0:
                return Decision(weights={symbol: WEIGHT})
            if s == -1 and held > 0:
                return Decision(weights={symbol: 0.0})
            return Decision.hold()

    bars = Bars.from_frame(df.rename(columns=str.lower), symbol=symbol, interval="1d",
                           adjusted=True, source="file")
    config = BacktestConfig.build(symbols=[symbol], initial_cash=CASH, fill="next_open",
                                  max_leverage=1.0, costs={"commission_bps": COMMISSION * 1e4})
    return run_backtest(config=config, agent=_Signal(), data=MarketData({symbol: bars}))


def run_backtesting_py(df: pd.DataFrame, signal: np.ndarray, *, shrink: bool
                       ) -> tuple[Any, int]:
    """backtesting.py on the same signal; ``shrink``: relative sizing where cash falls short.

    Returns (stats, orders backtesting.py cancelled for insufficient margin).
    """
    from backtesting import Backtest, Strategy

    opens = df["Open"].to_numpy()

    class _Signal(Strategy):
        def init(self) -> None:
            pass

        def next(self) -> None:
            t = len(self.data) - 1
            s = signal[t]
            if s == 1 and not self.position:
                size = int(WEIGHT * self.equity / self.data.Close[-1])
                if shrink and t + 1 < len(opens) and (
                        size * opens[t + 1] * (1 + COMMISSION) > self.equity):
                    self.buy(size=_ALMOST_ALL)  # sized at the fill from the cash there
                else:
                    self.buy(size=size)
            elif s == -1 and self.position.is_long:
                self.position.close()

    bt = Backtest(df, _Signal, cash=CASH, commission=COMMISSION, trade_on_close=False,
                  exclusive_orders=False, hedging=False, margin=1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats = bt.run()
    cancelled = sum("canceled the order due to insufficient margin" in str(w.message)
                    for w in caught)
    return stats, cancelled


def parity_row(data_dir: Path, name: str) -> dict[str, Any]:
    """One series: our run, backtesting.py configured alike, backtesting.py unchanged."""
    df = load(data_dir, name)
    signal = sma_signal(df)
    ours = run_tradesim(df, signal, name.upper())
    stats, _ = run_backtesting_py(df, signal, shrink=True)
    native, cancelled = run_backtesting_py(df, signal, shrink=False)
    gap = (df["Open"] / df["Close"].shift(1) - 1).abs()
    events = ours.events
    shrunk = int((events["kind"] == "order_shrunk").sum()) if len(events) else 0
    theirs = stats["_trades"]
    mine = ours.trades
    if len(theirs) == len(mine) + 1:  # backtesting.py also lists a still-open final trade
        theirs = theirs.iloc[:-1]
    same_trades = (len(theirs) == len(mine) and bool(
        (mine["quantity"].to_numpy() == theirs["Size"].to_numpy()).all()
        and np.allclose(mine["entry_price"], theirs["EntryPrice"], rtol=1e-12)
        and np.allclose(mine["exit_price"], theirs["ExitPrice"], rtol=1e-12)
        and np.allclose(mine["pnl"], theirs["PnL"], rtol=1e-6)))
    final, bt_final = float(ours.final_equity), float(stats["Equity Final [$]"])
    bt_native = float(native["Equity Final [$]"])
    return {"series": name, "bars": len(df), "gaps_2pct": int((gap > 0.02).sum()),
            "entries": int((ours.fills["quantity"] > 0).sum()), "shrunk": shrunk,
            "bt_cancelled": cancelled, "trades": len(mine), "same_trades": same_trades,
            "min_cash": float(ours.equity["cash"].min()), "tradesim": final,
            "backtesting_py": bt_final, "rel_diff": final / bt_final - 1,
            "bt_unchanged": bt_native, "vs_unchanged": final / bt_native - 1}


def table(rows: list[dict[str, Any]]) -> str:
    """The parity table as text."""
    head = (f"{'series':<7}{'bars':>6}{'gaps>2%':>8}{'entries':>8}{'shrunk':>7}"
            f"{'bt_cxl':>7}{'trades':>7}{'same':>6}{'min_cash':>11}{'tradesim':>14}"
            f"{'backtesting.py':>16}{'rel_diff':>10}{'bt_unchanged':>14}{'vs_unch':>9}")
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['series']:<7}{r['bars']:>6}{r['gaps_2pct']:>8}{r['entries']:>8}{r['shrunk']:>7}"
            f"{r['bt_cancelled']:>7}{r['trades']:>7}{str(r['same_trades']):>6}"
            f"{r['min_cash']:>11.2f}{r['tradesim']:>14.2f}{r['backtesting_py']:>16.2f}"
            f"{r['rel_diff']:>10.1e}{r['bt_unchanged']:>14.2f}{r['vs_unchanged']:>+9.1%}")
    return "\n".join(lines)


def main() -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")  # backtesting.py's progress bars
    here = Path(__file__).resolve().parents[1]
    data_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else here.parent / "shared" / "data" / "daily"
    if not data_dir.is_dir():
        raise SystemExit(f"no daily data at {data_dir}; pass the folder of <name>.us.txt files")
    rows = [parity_row(data_dir, name) for name in SERIES]
    print(table(rows))
    worst = max(abs(r["rel_diff"]) for r in rows)
    print(f"max |tradesim / backtesting.py - 1| over {len(rows)} series: {worst:.1e}"
          f" ({sum(r['shrunk'] for r in rows)} shrunk orders)")
    if not math.isfinite(worst):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
