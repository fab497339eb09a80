"""Benchmark: walk ``MarketData.as_of`` over every date of the 25 real daily files.

Prints one line per figure: load time, steps, time per step, the same walk done the naive pandas
way (``frame.loc[:t]`` per symbol and step) measured in this run, their ratio, and the memory the
walk allocated (it must not copy bars per step). Run: ``python benchmarks/data_asof.py``.
"""

from __future__ import annotations

import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np

from tradesim.data.files import FileSource
from tradesim.data.view import MarketData

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "daily"
WINDOW = 20
PEER_STEPS = 500  # the pandas walk is slow: time a sample of evenly spaced steps


def _walk(data: MarketData, stamps: np.ndarray) -> float:
    """Touch each symbol's last close and a 20-bar close window at every stamp; checksum."""
    total = 0.0
    symbols = data.symbols
    for t in stamps:
        view = data.as_of(t)
        for s in symbols:
            if view.count(s):
                total += view.last_close(s) + view.bars(s, lookback=WINDOW).close[0]
    return total


def _pandas_walk(frames: dict, stamps: np.ndarray) -> float:
    total = 0.0
    for t in stamps:
        for frame in frames.values():
            seen = frame.loc[:t]
            if len(seen):
                total += seen["close"].iloc[-1] + seen["close"].iloc[-WINDOW:].iloc[0]
    return total


def main() -> None:
    if not DATA.is_dir():
        sys.exit(f"data folder {DATA} is absent: place the shared data beside the project "
                 "(../shared/data/daily with the 25 *.us.txt files) to run this benchmark")
    start = time.perf_counter()
    source = FileSource(DATA, quality="warn")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the files' known quirks (zero volume, gaps)
        bars = {s: source.load(s) for s in source.symbols()}
    data = MarketData(bars)
    load_s = time.perf_counter() - start
    stamps = data.timeline()
    size = sum(b.time.nbytes + 5 * b.close.nbytes for b in bars.values())
    print(f"load: {len(bars)} files, {sum(map(len, bars.values())):,} bars in {load_s:.2f} s")

    start = time.perf_counter()
    _walk(data, stamps)
    walk_s = time.perf_counter() - start
    per_step = walk_s / len(stamps) * 1e6
    print(f"steps: {len(stamps):,} dates of the union timeline, {len(bars)} symbols each")
    print(f"as_of walk: {per_step:.1f} us per step ({walk_s:.2f} s in all)")

    frames = {s: b.frame() for s, b in bars.items()}
    sample = stamps[np.linspace(0, len(stamps) - 1, min(PEER_STEPS, len(stamps))).astype(int)]
    start = time.perf_counter()
    peer = _pandas_walk({s: f.tz_localize(None) for s, f in frames.items()}, sample)
    peer_step = (time.perf_counter() - start) / len(sample) * 1e6
    check = _walk(data, sample)
    assert np.isclose(peer, check), (peer, check)
    print(f"pandas df.loc[:t] walk (peer, {len(sample)} sampled steps): {peer_step:.1f} us per "
          f"step; ratio {peer_step / per_step:.1f}x slower than as_of")

    tracemalloc.start()  # slows Python down, so on the sample only and untimed
    _walk(data, sample)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    view = data.as_of(stamps[len(stamps) // 2])
    shared = all(np.shares_memory(view[s].close, bars[s].close) for s in data.symbols
                 if view.count(s))
    print(f"walk memory: peak {peak / 1024:.0f} KiB traced over the sampled walk vs {size / 2**20:.1f} MiB of bars; "
          f"views share the loaded arrays: {shared}")
    if not shared or peak > size / 10:
        sys.exit("FAIL: the walk copied bar data")


if __name__ == "__main__":
    main()
