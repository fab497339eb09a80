"""Isolation overhead per decision, and the look-ahead check's cost against one backtest.

    .venv/bin/python benchmarks/isolation.py [--agent sma_cross] [--symbols ALPHA,BRAVO]
                                             [--repeats 2]

The peer is the same agent in-process on the same bars (the sample: 2,516 daily bars of two
symbols, 2010..2019), measured in the same run. Isolated runs are timed whole (child start
included) and per decision (child start-up, measured alone, left out); bubblewrap is measured
where ``bwrap`` works. The look-ahead check runs as ``tradesim evaluate`` runs it (one twin per
cut, three cuts): in-process in fresh processes, and isolated. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from tradesim.agents.isolation import IsolatedAgent, bwrap_status
from tradesim.agents.registry import load_agent
from tradesim.contracts import RunContext
from tradesim.data.load import load_market
from tradesim.engine.backtest import BacktestConfig, simulate
from tradesim.evaluate.lookahead import check_lookahead


def _best(fn: Callable[[], object], repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out)


def _startup(agent: str, sandbox: str, universe: tuple[str, ...], repeats: int) -> float:
    """Seconds to launch the child, hand it the agent, and stop it (no decision)."""
    def once() -> None:
        iso = IsolatedAgent(load_agent(agent), sandbox=sandbox)  # type: ignore[arg-type]
        iso.start(RunContext(universe=universe, interval="1d", clock="historical", seed=0))
        iso.stop()

    return _best(once, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--agent", default="sma_cross")
    ap.add_argument("--symbols", default="ALPHA,BRAVO")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    symbols = args.symbols.split(",")
    data = load_market(symbols=symbols, source="sample")
    config = BacktestConfig.build(symbols=tuple(symbols))
    bars = len(simulate(config=config, agent=load_agent(args.agent), data=data).equity)
    universe = tuple(symbols)

    base = _best(lambda: simulate(config=config, agent=load_agent(args.agent), data=data),
                 args.repeats)
    print(f"in-process backtest ({args.agent}, {bars:,} bars x {len(symbols)} symbols): "
          f"{base:.3f} s, {base / bars * 1e6:.0f} us per decision (the peer)")
    usable, why = bwrap_status()
    sandboxes = ["process", "bwrap"] if usable else ["process"]
    for sandbox in sandboxes:
        whole = _best(lambda sandbox=sandbox: simulate(
            config=config, agent=IsolatedAgent(load_agent(args.agent), sandbox=sandbox),
            data=data), args.repeats)
        start = _startup(args.agent, sandbox, universe, args.repeats)
        per = (whole - start - base) / bars
        print(f"isolated ({sandbox}): {whole:.3f} s whole = {whole / base:.2f}x in-process; "
              f"child start+stop {start:.3f} s; overhead {per * 1e6:.0f} us per decision "
              f"(= {(whole - start) / base:.2f}x in-process without the start)")
    if not usable:
        print(f"isolated (bwrap): not measured ({why})")

    make = partial(load_agent, args.agent)
    fresh = _best(lambda: check_lookahead(make_agent=make, data=data, config=config, twins=1),
                  1)
    print(f"look-ahead check, in-process agent (3 cuts x 1 twin + the real run, each in a "
          f"fresh process, 2 at a time): {fresh:.2f} s = {fresh / base:.2f}x one backtest")
    iso = _best(lambda: check_lookahead(make_agent=make, data=data, config=config, twins=1,
                                        isolate=True, processes=False), 1)
    mode = "bwrap" if usable else "process"
    print(f"look-ahead check, isolated agent ({mode}; 4 runs in turn): {iso:.2f} s = "
          f"{iso / base:.2f}x one backtest")
    assert np.isfinite(base)


if __name__ == "__main__":
    main()
