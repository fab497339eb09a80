"""Memory of a 1,000,000-bar session: the recorder stays bounded when it spools to disk.

Runs buy-and-hold over one million synthetic 1-minute bars, in a fresh process per mode, and
prints resident memory at every quarter of the run (during the loop, before the result is
built), the slope over the run, and the peak. ``spool`` packs every 65,536 steps into Parquet
parts in a temporary folder; ``memory`` keeps the packed chunks in RAM (compact columns).
Usage: python benchmarks/session_memory.py [--bars N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _child(bars: int, spool: bool) -> dict:
    import numpy as np

    from tradesim.agents.baselines import BuyAndHold
    from tradesim.data.bars import Bars
    from tradesim.data.view import MarketData
    from tradesim.engine.backtest import BacktestConfig, simulate

    rng = np.random.default_rng(0)
    t0 = np.datetime64("2020-01-01T00:01", "ns")
    time_ = t0 + np.arange(bars) * np.timedelta64(60, "s")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 5e-4, bars)))
    open_ = np.r_[close[0], close[:-1]]
    bars_ = Bars.from_arrays(symbol="X", interval="1m", adjusted=True, source="bench",
                             time=time_, open=open_, high=np.maximum(open_, close) * 1.0002,
                             low=np.minimum(open_, close) * 0.9998, close=close,
                             volume=np.full(bars, 1e6))
    data = MarketData({"X": bars_})
    config = BacktestConfig.build(symbols=("X",), interval="1m", costs="zero")
    marks: list[tuple[int, float]] = []

    def progress(done: int, total: int) -> None:
        if done * 4 // total > len(marks) - 1 or done == total:
            if not marks or marks[-1][0] != done:
                marks.append((done, _rss_mb()))

    start_rss = _rss_mb()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = simulate(config=config, agent=BuyAndHold(), data=data, progress=progress,
                          spool=f"{tmp}/spool" if spool else None)
        seconds = time.perf_counter() - started
        assert len(result.equity) == bars
    quarters = [m for m in marks if m[0] % (bars // 4) == 0 or m[0] == bars][-4:]
    return {"start_mb": start_rss, "marks": quarters, "seconds": seconds,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--child", choices=["spool", "memory"])
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.bars, args.child == "spool")))
        return
    for mode in ("spool", "memory"):
        out = subprocess.run([sys.executable, __file__, "--bars", str(args.bars), "--child", mode],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        (b0, m0), (b1, m1) = r["marks"][1], r["marks"][-1]  # after the first chunk's imports
        slope = (m1 - m0) / max(b1 - b0, 1) * 100_000
        line = ", ".join(f"{b:,} bars {m:.0f} MB" for b, m in r["marks"])
        print(f"{mode:6s}: {args.bars:,} bars in {r['seconds']:.1f} s "
              f"({args.bars / r['seconds']:,.0f} bars/s); RSS during the loop: {line}; "
              f"slope (quarter 2 to end) {slope:+.2f} MB per 100k bars; peak RSS {r['peak_mb']:.0f} MB "
              "(includes building the 1M-row result)")


if __name__ == "__main__":
    main()
