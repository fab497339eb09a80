"""The RunResult of a paper session, rebuilt from its log (the same record a backtest makes)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tradesim.engine.record import Recorder, RunResult
from tradesim.live.store import SessionStore


def rebuild_result(store: SessionStore) -> RunResult:
    """Replay the committed log into a recorder and build the RunResult (partial while running)."""
    meta = store.meta()
    symbols = tuple(meta["symbols"])
    config: dict[str, Any] = meta["config"]
    engine = config["engine"]
    rec = Recorder(symbols=symbols)
    col = {s: j for j, s in enumerate(symbols)}
    for tick, decisions, fills, orders, events in store.replay_records():
        for step, t, d, fallback, error in decisions:
            rec.decision(step=step, time=t, decision=d, fallback=fallback, error=error)
        if tick:
            reward = tick["reward"]
            rec.row(step=tick["step"], time=np.datetime64(int(tick["time"]), "ns"),
                    equity=tick["equity"], cash=tick["cash"], gross=tick["gross"],
                    net=tick["net"], costs_total=tick["costs_total"],
                    positions=tick["positions"], marks=tick["marks"],
                    reward=math.nan if reward is None else reward)
        for o in orders:
            o.col = col[o.symbol]
        rec.take(fills, orders, events)
    from tradesim.rewards.metrics import compute_metrics

    finished = meta.get("finished")
    run_meta = {"agent": meta.get("agent", engine.get("agent")), "bars": rec.steps,
                "partial": finished is None, "paper_session": config["name"],
                "clock": "live", **({"stopped": finished} if finished not in (None, "end") else {})}
    return rec.build(config=engine, fingerprints=meta.get("fingerprints", {}),
                     fill_mode=engine["fill"], benchmark=None,
                     initial_cash=float(engine["initial_cash"]), meta=run_meta,
                     metrics_fn=compute_metrics)
