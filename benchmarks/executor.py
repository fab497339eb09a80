"""Wall time of one leaderboard on each executor: sequential vs the local process pool vs Ray.

    .venv/bin/python benchmarks/executor.py [--agents sma_cross,macd,momentum,buy_and_hold]
        [--seeds 2] [--executors sequential,local,ray] [--no-lookahead]

Runs `evaluate_agents` (4 agents x 2 seeds on ALPHA and BRAVO of the embedded sample, isolated,
with the look-ahead check, as `tradesim evaluate` does) once per executor, checks that every
executor's leaderboard equals the sequential one exactly, and prints one line per executor with
its wall time and the ratio to sequential. Ray's line includes starting the local instance.
"""

from __future__ import annotations

import argparse
import os
import time

from tradesim.data.load import load_market
from tradesim.evaluate.executor import default_workers, make_executor
from tradesim.evaluate.leaderboard import Leaderboard, evaluate_agents


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--agents", default="sma_cross,macd,momentum,buy_and_hold")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--executors", default="sequential,local,ray")
    ap.add_argument("--start", default="2018-01-01")
    ap.add_argument("--end", default="2019-12-31")
    ap.add_argument("--no-lookahead", action="store_true")
    args = ap.parse_args()
    data = load_market(symbols=["ALPHA", "BRAVO"], source="sample", start=args.start,
                       end=args.end)
    agents = args.agents.split(",")
    print(f"{len(agents)} agents x {args.seeds} seeds on {', '.join(data.symbols)} "
          f"{args.start}..{args.end}, look-ahead check {'off' if args.no_lookahead else 'on'}; "
          f"{os.cpu_count()} cores, {default_workers()} local workers, load average "
          f"{os.getloadavg()[0]:.1f}")
    boards: dict[str, Leaderboard] = {}
    base = None
    for spec in args.executors.split(","):
        started = time.perf_counter()
        with make_executor(spec) as ex:
            boards[spec] = evaluate_agents(agents=agents, data=data, seeds=args.seeds,
                                           n_boot=1000, executor=ex,
                                           lookahead=not args.no_lookahead)
        seconds = time.perf_counter() - started
        base = base or seconds
        first = boards[next(iter(boards))]
        same = all(a.equals(b) for a, b in ((first.table, boards[spec].table),
                                            (first.runs, boards[spec].runs),
                                            (first.equity, boards[spec].equity)))
        print(f"executor {spec:<12} {seconds:7.1f} s   x{base / seconds:4.2f} vs "
              f"{next(iter(boards))}   identical tables: {same}", flush=True)


if __name__ == "__main__":
    main()
