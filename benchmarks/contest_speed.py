"""Rules-only contest year: the former full-recompute scorer (git HEAD) vs the incremental one.

    .venv/bin/python benchmarks/contest_speed.py [--before REV]

Both run in fresh processes on the embedded sample (ALPHA, BRAVO, 2018) with LightGBM imported
beforehand, so the figures are the contest's own work; prints one line per figure and the ratio.
The "before" code is read from git (``REV:tradesim/agents/contest``); skipped without git.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ("__init__", "agent", "book", "predictor", "teams")
RUN = """
import time, lightgbm  # noqa: F401  (import cost is the same either way: paid before timing)
from tradesim.agents.registry import load_agent
from tradesim.data.load import load_market
from tradesim.engine.backtest import BacktestConfig, simulate
m = load_market(symbols=["ALPHA", "BRAVO"], source="sample", end="2018-12-31")
cfg = BacktestConfig.build(symbols=("ALPHA", "BRAVO"), start="2018-01-01", end="2018-12-31")
agent = load_agent("{cls}", data_agents=[], research_agents=[])
t = time.perf_counter()
r = simulate(config=cfg, agent=agent, data=m)
print(time.perf_counter() - t, len(r.equity), r.final_equity)
"""


def _time(cls: str, path: str | None = None) -> tuple[float, int, float]:
    code = RUN.format(cls=cls)
    env_path = f"{path}:{ROOT}" if path else str(ROOT)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"})
    secs, bars, equity = out.stdout.split()[-3:]
    return float(secs), int(bars), float(equity)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--before", default="HEAD", help="git revision of the former contest code")
    args = ap.parse_args()
    after = _time("contest")
    print(f"after  (incremental)     rules-only year: {after[0]:6.2f} s  "
          f"({after[1]} bars, final equity {after[2]:,.2f})")
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp) / "contest_before"
        pkg.mkdir()
        try:
            for f in FILES:
                src = subprocess.run(["git", "show", f"{args.before}:tradesim/agents/contest/{f}.py"],
                                     cwd=ROOT, capture_output=True, text=True, check=True).stdout
                (pkg / f"{f}.py").write_text(src.replace("tradesim.agents.contest",
                                                         "contest_before"), encoding="utf-8")
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"before: skipped ({exc})")
            return
        before = _time("contest_before:ContestAgent", tmp)
    print(f"before (full recompute)  rules-only year: {before[0]:6.2f} s  "
          f"({before[1]} bars, final equity {before[2]:,.2f})")
    print(f"speed-up: {before[0] / after[0]:.1f}x; same final equity: {before[2] == after[2]}")


if __name__ == "__main__":
    main()
