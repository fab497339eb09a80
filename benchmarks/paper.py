"""Paper daemon: RSS over 10,000 ticks (slope) and tick overhead excluding model time.

Runs the daemon on a replay feed of synthetic bars (no pacing), an agent that rebalances every
bar, and the same bars through ``simulate`` as the peer. Prints one line per figure.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tradesim.agents.baselines import SmaCross
from tradesim.contracts import Decision, Observation
from tradesim.data.bars import Bars
from tradesim.data.view import MarketData
from tradesim.engine.backtest import simulate
from tradesim.live.config import PaperConfig
from tradesim.live.daemon import PaperDaemon

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


class _Timed(SmaCross):
    """sma_cross with its own time measured (the model time left out of the overhead)."""

    def start(self, context: object) -> None:  # type: ignore[override]
        super().start(context)  # type: ignore[arg-type]
        self.spent, self.rss = 0.0, []

    def decide(self, obs: Observation) -> Decision:
        t = time.perf_counter()
        d = super().decide(obs)
        self.spent += time.perf_counter() - t
        if obs.step % 500 == 0:
            self.rss.append((obs.step, _rss_mb()))
        return d


def _market(n: int) -> MarketData:
    rng = np.random.default_rng(7)
    t = np.datetime64("2000-01-03T21:00", "ns") + np.arange(n) * np.timedelta64(1, "D")
    out = {}
    for s in ("AAA", "BBB", "CCC"):
        c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        o = c * np.exp(rng.normal(0, 0.002, n))
        out[s] = Bars.from_arrays(symbol=s, interval="1d", adjusted=True, source="bench", time=t,
                                  open=o, high=np.maximum(o, c) * 1.001,
                                  low=np.minimum(o, c) * 0.999, close=c,
                                  volume=np.full(n, 1e6))
    return MarketData(out)


def main() -> None:
    data = _market(N)
    cfg = PaperConfig.build({"name": "bench", "symbols": ["AAA", "BBB", "CCC"],
                             "agent": "sma_cross", "source": "synthetic"})
    agent = _Timed(fast=5, slow=20)
    with tempfile.TemporaryDirectory() as home:
        t0 = time.perf_counter()
        daemon = PaperDaemon(cfg, home=Path(home), data=data, agent=agent, handle_signals=False)
        daemon.run()
        wall = time.perf_counter() - t0
    ticks = daemon.ticks_done
    steps, rss = np.array(agent.rss).T
    half = len(steps) // 2
    slope = np.polyfit(steps[half:], rss[half:], 1)[0] * 1000  # MB per 1,000 ticks, warm half
    print(f"paper ticks: {ticks}")
    print(f"paper RSS: start {rss[0]:.1f} MB, end {rss[-1]:.1f} MB, slope (second half) "
          f"{slope:+.3f} MB per 1,000 ticks")
    overhead = (wall - agent.spent) / ticks * 1e3
    print(f"paper tick overhead excluding model time: {overhead:.2f} ms (goal < 50 ms)")
    peer = _Timed(fast=5, slow=20)
    t0 = time.perf_counter()
    simulate(config=cfg.engine, agent=peer, data=data)
    sim = (time.perf_counter() - t0 - peer.spent) / ticks * 1e3
    print(f"backtest (simulate) step overhead on the same bars: {sim:.3f} ms; paper/backtest "
          f"ratio {overhead / sim:.1f}x (the price of a durable tick)")


if __name__ == "__main__":
    main()
