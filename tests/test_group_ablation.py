"""TradingGroup ablations through the leaderboard API: each variant scored with a Sharpe CI."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from tradinggroup_ablation import VARIANTS, run


def test_ablations_run_through_evaluate_agents_with_confidence_intervals() -> None:
    lines = run(["ALPHA", "BRAVO"], "2018-01-01", "2018-12-31", n_boot=200)
    names = {line.split()[0] for line in lines}
    assert names == {*VARIANTS, "buy_and_hold"}
    for line in lines:
        low, high = (float(x) for x in line.split("[")[1].split("]")[0].split(","))
        sharpe = float(line.split("sharpe")[1].split("[")[0])
        assert math.isfinite(low) and low <= sharpe <= high
