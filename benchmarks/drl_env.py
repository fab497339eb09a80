"""Benchmark: env-steps/s of the batched QTNet env, the single gymnasium env, and gym-anytrading.

One env-step is one book advancing one bar. The batched env steps 10 daily assets jointly
(real files from ../shared/data/daily when present, else the synthetic market) with the
default cost preset on the CPU (or ``--device cuda``). The single gymnasium env (one book on
the engine's compiled bar functions, default costs charged) and the peer, gym-anytrading's
StocksEnv, step one asset in the same run, their timed runs interleaved so a loaded machine
slows both alike; both loops pick actions from a precomputed cycle. Each figure is the median
of ``--repeats`` timed runs (wall clock; the CPU-time rate beside it shows what load cost).
Torch runs on one CPU thread by default: on a shared 2-core box two intra-op threads spin
against other processes and were measured 5-30x slower. Prints one line per figure.
Run: ``python benchmarks/drl_env.py [--device auto] [--seconds 1] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tradesim.agents.qtnet.env import EnvConfig, EnvData, TradingEnv
from tradesim.data.files import read_bars
from tradesim.data.synthetic import SyntheticSource
from tradesim.data.view import MarketData
from tradesim.device import pick_device

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "daily"
SYMBOLS = ("AAPL", "MSFT", "IBM", "INTC", "JNJ", "KO", "MCD", "PG", "GE", "HD")
BATCHES = (1, 64, 1024, 8192, 32768)


def _market() -> tuple[MarketData, str]:
    if DATA.is_dir():
        bars = {s: read_bars(DATA / f"{s.lower()}.us.txt").between("2005-01-01", "2017-11-10")
                for s in SYMBOLS}
        return MarketData(bars), "real daily 2005-2017"
    src = SyntheticSource(symbols=[f"S{i}" for i in range(10)], start="2005-01-01",
                          end="2017-11-10")
    return MarketData({s: src.load(s) for s in src.symbols()}), "synthetic daily 2005-2017"


def _timed(run: Callable[[], tuple[int, float, float]], repeats: int) -> tuple[float, float]:
    """Median (wall-clock, CPU-time) rates over ``repeats`` calls of ``run()``."""
    rates = [run() for _ in range(repeats)]
    return (statistics.median(s / w for s, w, _ in rates),
            statistics.median(s / max(c, 1e-9) for s, _, c in rates))


def _batched(data: EnvData, n_envs: int, device: torch.device, seconds: float,
             repeats: int) -> tuple[float, float]:
    env = TradingEnv(data=data, device=device,
                     config=EnvConfig(n_envs=n_envs, episode_len=256, dtype="float32"))
    env.reset()
    g = torch.Generator(device=device).manual_seed(0)
    actions = torch.rand(16, n_envs, env.n_assets, generator=g, device=device) * 2 - 1

    def run() -> tuple[int, float, float]:
        steps, start, cpu = 0, time.perf_counter(), time.process_time()
        with torch.inference_mode():
            while time.perf_counter() - start < seconds:
                for i in range(16):
                    env.step(actions[i])
                steps += 16
                if device.type == "cuda":
                    torch.cuda.synchronize()
        return steps * n_envs, time.perf_counter() - start, time.process_time() - cpu

    with torch.inference_mode():
        for i in range(3):
            env.step(actions[i])
    return _timed(run, repeats)


def _stepper(env: Any, actions: list[Any], seconds: float) -> Callable[[], tuple[int, float, float]]:
    """A timed run of ``env`` (gymnasium API) cycling through ``actions`` (resets when done)."""
    cycle = len(actions)

    def run() -> tuple[int, float, float]:
        steps, start, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds:
            for i in range(64):
                _, _, term, trunc, _ = env.step(actions[i % cycle])
                if term or trunc:
                    env.reset()
            steps += 64
        return steps, time.perf_counter() - start, time.process_time() - cpu

    return run


def _anytrading(market: MarketData) -> Any | None:
    """gym-anytrading's StocksEnv on the first symbol (None when it is not installed)."""
    try:
        from gym_anytrading.envs import StocksEnv
    except ImportError:
        return None
    frame = market.full(market.symbols[0]).frame().rename(columns=str.capitalize)
    env = StocksEnv(df=frame, window_size=10, frame_bound=(10, len(frame)))
    env.reset(seed=0)
    return env


def _singles(data: EnvData, market: MarketData, seconds: float, repeats: int
             ) -> tuple[tuple[float, float], tuple[float, float] | None]:
    """(single gymnasium env, gym-anytrading) rates, their timed runs interleaved."""
    from tradesim.agents.qtnet.gym_env import QTNetGymEnv

    ours = QTNetGymEnv(data=data, config=EnvConfig(episode_len=256))  # default costs
    ours.reset(seed=0)
    cycle = [np.array([math.sin(k)], dtype=np.float32) for k in range(16)]
    runs = [_stepper(ours, cycle, seconds)]
    peer = _anytrading(market)
    if peer is not None:
        runs.append(_stepper(peer, [0, 1], seconds))
    for run in runs:  # warm: compiled code loaded, caches hot
        run()
    rates: list[list[tuple[int, float, float]]] = [[] for _ in runs]
    for _ in range(repeats):
        for out, run in zip(rates, runs):
            out.append(run())
    medians = [(statistics.median(s / w for s, w, _ in r),
                statistics.median(s / max(c, 1e-9) for s, _, c in r)) for r in rates]
    return medians[0], (medians[1] if len(medians) > 1 else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda | mps")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's)")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)),
                        help="comma-separated n_envs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    market, what = _market()
    data = EnvData.from_market(market)
    print(f"data: {what}, {data.n_assets} assets x {int(data.lengths[0])} bars; device {device}; "
          f"torch threads {torch.get_num_threads()}; median of {args.repeats} x {args.seconds:g} s")
    best = 0.0
    for n in (int(b) for b in args.batches.split(",")):
        rate, cpu_rate = _batched(data, n, device, args.seconds, args.repeats)
        best = max(best, rate)
        print(f"batched env, n_envs={n:>6}: {rate:>14,.0f} env-steps/s (x{data.n_assets} assets; "
              f"{cpu_rate:,.0f} per CPU-second)")
    one = EnvData.from_market(MarketData({SYMBOLS[0]: market.full(market.symbols[0])}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (single, single_cpu), peer = _singles(one, market, args.seconds, args.repeats)
    print(f"single gymnasium env (1 env, 1 asset, default costs): {single:>14,.0f} env-steps/s "
          f"({single_cpu:,.0f} per CPU-second)")
    if peer is None:
        print("gym-anytrading: not installed (pip install gym-anytrading)")
        return
    print(f"gym-anytrading StocksEnv (1 env, 1 asset, no costs): {peer[0]:>14,.0f} env-steps/s "
          f"({peer[1]:,.0f} per CPU-second)")
    ratio = single / peer[0]
    print(f"ratio single gymnasium env / gym-anytrading: {ratio:.2f}x (CPU time "
          f"{single_cpu / peer[1]:.2f}x); target >= 1x: {'met' if ratio >= 1 else 'NOT met'}")
    print(f"ratio best batched / gym-anytrading: {best / peer[0]:,.1f}x")
    print(f"target >= 1,000,000 batched env-steps/s: {'met' if best >= 1e6 else 'NOT met'} "
          f"({best:,.0f})")


if __name__ == "__main__":
    main()
