"""Golden runs of every built-in agent on the embedded sample: equity and fills as digests.

``python tests/golden_runs.py --write`` records them (done once, before the session-loop
refactor); tests/test_golden_runs.py recomputes and compares, so no reshaping changes a result.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent / "golden"
GOLDEN = HERE / "sample_runs.json"
CHECKPOINT = HERE / "qtnet_tiny.pt"
LLM_SYMBOLS = ("ALPHA", "BRAVO")
LLM_WINDOW = ("2019-01-02", "2019-03-29")
AGENTS = ("buy_and_hold", "equal_weight", "sma_cross", "macd", "dual_thrust", "momentum",
          "qtnet", "llm_analyst")


def digest(result: Any) -> dict[str, Any]:
    """Final equity, counts and SHA-256 of the equity curve and the fills (rounded to 1e-8)."""
    eq = np.round(result.equity["equity"].to_numpy(dtype=float), 8)
    fills = result.fills
    rows = [f"{t.value}|{s}|{q:.8f}|{p:.8f}|{c:.8f}" for t, s, q, p, c in zip(
        fills["time"], fills["symbol"], fills["quantity"], fills["price"],
        fills["commission"] + fills["spread_cost"] + fills["slippage_cost"])]
    return {"final_equity": round(float(eq[-1]), 6), "bars": int(len(eq)), "fills": len(rows),
            "equity_sha": hashlib.sha256(eq.tobytes()).hexdigest(),
            "fills_sha": hashlib.sha256("\n".join(rows).encode()).hexdigest()}


def make_checkpoint(path: Path) -> None:
    """A tiny deterministic QTNet policy (trained two iterations on the sample's ALPHA)."""
    import torch

    from tradesim.agents.qtnet.env import EnvConfig, EnvData
    from tradesim.agents.qtnet.train import TrainConfig, train
    from tradesim.data.load import load_market

    torch.manual_seed(0)
    torch.set_num_threads(1)
    market = load_market(symbols=["ALPHA"], source="sample", end="2016-12-31")
    data = EnvData.from_market(market, separate=True)
    cfg = TrainConfig(env=EnvConfig(n_envs=4, episode_len=16, warmup=30), iterations=2,
                      updates=1, batch_size=4, hidden=8, eval_every=1, seed=0)
    out = path.parent / "qtnet_train"
    train(config=cfg, train_data=data, val_data=data, out_dir=out)
    (out / "best.pt").replace(path)
    for f in out.iterdir():
        f.unlink()
    out.rmdir()


def llm_reply(body: dict[str, Any]) -> Any:
    """The scripted analyst: buy after an up bar, sell after a down one (deterministic)."""
    import re

    from tradesim.llm.testing import Reply

    prompt = body["messages"][-1]["content"]
    last = float(re.search(r"oldest first: (.*)", prompt)[1].split()[-1])
    answer = {"action": "buy" if last > 0 else "sell", "weight": 0.8, "confidence": 0.6,
              "rationale": f"moved {last:+.2f}% on the last bar"}
    return Reply(content=json.dumps(answer), prompt_tokens=100, completion_tokens=30)


def run_agent(name: str, tmp: Path) -> Any:
    """One built-in agent's backtest on the embedded sample (LLM: scripted local server)."""
    from tradesim.evaluate.backtest import BacktestConfig, run_backtest

    if name == "qtnet":
        config = BacktestConfig.build(agent="qtnet", symbols=("ALPHA", "BRAVO"), allow_short=True,
                                      agent_params={"checkpoint": str(CHECKPOINT)})
        return run_backtest(config=config)
    if name != "llm_analyst":  # dual_thrust's spec goes short, momentum's levers up to 2x
        return run_backtest(config=BacktestConfig.build(
            agent=name, allow_short=name == "dual_thrust",
            max_leverage=2.0 if name == "momentum" else 1.0,
            agent_params={"max_gross": 2.0} if name == "momentum" else {}))
    from tradesim.llm.testing import FakeOpenAIServer

    with FakeOpenAIServer(default=llm_reply) as server:
        gateway = {"provider": "openai", "base_url": server.base_url, "mode": "live",
                   "cache_path": str(tmp / "cache.sqlite"), "api_key_env": "TRADESIM_GOLDEN_KEY"}
        config = BacktestConfig.build(agent="llm_analyst", symbols=LLM_SYMBOLS,
                                      start=LLM_WINDOW[0], end=LLM_WINDOW[1],
                                      agent_params={"gateway": gateway})
        return run_backtest(config=config)


def main() -> None:
    import os
    import tempfile

    os.environ.setdefault("TRADESIM_GOLDEN_KEY", "sk-golden")
    if "--write" not in sys.argv:
        raise SystemExit("usage: python tests/golden_runs.py --write")
    if not CHECKPOINT.is_file():
        make_checkpoint(CHECKPOINT)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in AGENTS:
            out[name] = digest(run_agent(name, Path(tmp)))
            print(name, out[name]["final_equity"], out[name]["fills"])
    GOLDEN.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
