"""Vectorised fast path: a weights matrix decided up front, run through one compiled array kernel.

For agents whose decisions do not depend on their own fills (baselines, parameter sweeps) the
weights at every bar end can be computed at once (``agent.target_weights(data)``). The kernel
then replays exactly what the event loop (:mod:`tradesim.engine.session`) does with market orders:
shares sized at decision time from the last close and truncated to whole lots (or fractional),
fills at the next bar's open (or this bar's close with ``fill="close"``), the same commission,
half-spread, slippage and square-root impact, participation cap (whole lots; the rest keeps
working on later bars until filled or replaced, ``target_unreached`` at the end), reductions
filled first and the rest shrunk to the cash and leverage available at the fill price
(``order_shrunk`` events), short borrow fee, decision
checks (shorting, leverage, no price yet), margin liquidation and ruin. NaN weights hold.

The kernel and the rules it calls are :mod:`tradesim.engine.core`, the account core the event
loop calls too; this module aligns weights to the clock and turns the kernel's records into the
event loop's :class:`~tradesim.engine.record.RunResult`. Stops, take-profits and limit/stop
orders need the event loop: a weights matrix has no input for them, so it cannot approximate
them.
"""

from __future__ import annotations

import math
import time as _time
from typing import Any, cast

import numpy as np
import pandas as pd

from tradesim.engine.core import (
    ERR_GROSS,
    ERR_LEVERAGE,
    ERR_NEG,
    ERR_NEG_EQUITY,
    ERR_NO_PRICE,
    ERR_NONFINITE,
    ERR_OK,
    EV_LIQUIDATION,
    EV_RUIN,
    EV_SHRUNK,
    ORDER_CANCELLED,
    ORDER_OPEN,
    ORDER_STATUS,
    SimResult,
    simulate_weights,
)
from tradesim.errors import AgentDecisionError, ConfigError, EngineError, LedgerInvariantError
from tradesim.rewards.step import log_growth


def run_fast(*, data: Any, weights: pd.DataFrame | np.ndarray, config: Any,
             name: str | None = None, save_to: str | None = None) -> Any:
    """Backtest precomputed ``weights`` (rows = decision bar ends, NaN = hold) on ``data``.

    Same inputs and the same :class:`RunResult` as ``run_backtest`` with an agent deciding those
    weights: the clock, universe and costs come from ``config`` (a ``BacktestConfig``). A frame is
    aligned to the run's clock by stamp (stamps it lacks hold); an array must have one row per
    clock bar. Decision errors raise ``AgentDecisionError`` with the step (partial record attached)
    or hold, per ``config.on_agent_error``.
    """
    from tradesim.engine.backtest import universe_and_clock
    from tradesim.engine.feed import AlignedBars, closes_on

    universe, clock = universe_and_clock(config=config, data=data)
    w = _weights_matrix(weights, clock, universe)
    started = _time.perf_counter()
    rows = AlignedBars(data, universe, clock)
    elapsed = np.r_[0.0, np.diff(clock.astype(np.int64)).astype(np.float64)]
    sim = cast(SimResult, simulate_weights(  # one weights matrix: one result
        open=rows.open, close=rows.close, volume=rows.volume, weights=w, account=config,
        elapsed_ns=elapsed, hold_on_error=config.on_agent_error == "hold"))
    bench = closes_on(data, config.benchmark, clock) if config.benchmark else None
    meta: dict[str, Any] = {"agent": name or config.agent, "bars": int(len(clock)),
                            "partial": False, "engine": "fastpath"}
    error = _failure(sim, w, universe, clock, config, rows)
    if error is not None:
        meta.update(partial=True, error=f"{type(error).__name__}: {error}")
    elif sim.status == ERR_OK and any(sim.events["kind"] == EV_RUIN):
        meta["stopped"] = "ruin: equity fell to zero or below"
    result = _result(sim, w, universe, clock, config, data, bench, meta, started)
    if save_to is not None:
        result.save(save_to)
    if error is not None:
        error.partial_result = result
        raise error
    return result


def _weights_matrix(weights: pd.DataFrame | np.ndarray, clock: np.ndarray,
                    universe: tuple[str, ...]) -> np.ndarray:
    """(T, N) float weights on ``clock`` x ``universe``; stamps a frame lacks become NaN (hold)."""
    if isinstance(weights, pd.DataFrame):
        unknown = [str(c) for c in weights.columns if c not in universe]
        if unknown:
            raise ConfigError(f"weights for unknown symbol(s) {', '.join(unknown)}; the universe "
                              f"is {', '.join(universe)} (drop those columns or add the symbols)")
        index = pd.DatetimeIndex(weights.index)
        if index.tz is not None:
            index = index.tz_convert("UTC").tz_localize(None)
        if not index.is_unique:
            raise ConfigError("weights index has duplicate stamps; one row per bar end")
        frame = pd.DataFrame(weights.to_numpy(dtype=np.float64), index=index.as_unit("ns"),
                             columns=list(weights.columns))
        aligned = frame.reindex(index=pd.DatetimeIndex(clock), columns=list(universe))
        return np.ascontiguousarray(aligned.to_numpy(dtype=np.float64))
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1 and len(universe) == 1:
        w = w[:, None]
    if w.shape != (len(clock), len(universe)):
        raise ConfigError(f"weights array has shape {w.shape} but the run has {len(clock)} bars x "
                          f"{len(universe)} symbols ({', '.join(universe)}); pass a DataFrame "
                          "indexed by bar end to align by stamp")
    return np.ascontiguousarray(w)


def _decision_message(code: int, row: np.ndarray, universe: tuple[str, ...], sim: SimResult,
                      step: int, max_leverage: float) -> str:
    """Why a weights row was rejected, in the event loop's words."""
    given = ~np.isnan(row)
    names = lambda mask: ", ".join(s for s, m in zip(universe, mask) if m)
    if code == ERR_NONFINITE:
        bad = given & ~np.isfinite(np.where(given, row, 0.0))
        return f"weight for {names(bad)} is not finite; it must be a finite number"
    if code == ERR_NEG:
        return (f"negative weight for {names(given & (row < 0))} but shorting is off; set "
                "allow_short = true in the config or return weights >= 0")
    if code == ERR_NO_PRICE:
        seen = np.zeros(len(universe), dtype=bool) if step < 0 else ~np.isnan(sim.marks[step])
        return (f"weight for {names(given & (row != 0) & ~seen)} before its first bar; there is "
                "no price to size the order from yet")
    gross = float(np.abs(row[given]).sum())
    return (f"weights sum to gross leverage {gross:.6g}, beyond max_leverage {max_leverage:g}; "
            "scale them down or raise max_leverage")


def _failure(sim: SimResult, w: np.ndarray, universe: tuple[str, ...], clock: np.ndarray,
             config: Any, rows: Any) -> EngineError | None:
    """The exception the event loop would raise for this run (None when it ran through)."""
    from tradesim.data.bars import iso_time
    from tradesim.engine.broker import check_in_bar

    f = sim.fills
    price, step, col = f["price"], f["step"], f["col"]
    hi, lo = rows.high[step, col], rows.low[step, col]
    tol = 1e-9 * np.maximum(np.maximum(np.abs(hi), np.abs(lo)), 1.0)
    outside = np.flatnonzero(~((lo - tol <= price) & (price <= hi + tol)))
    if outside.size:
        k = int(outside[0])
        try:
            check_in_bar(float(price[k]), float(hi[k]), float(lo[k]), symbol=universe[col[k]],
                         time=clock[step[k]], step=int(step[k]))
        except LedgerInvariantError as exc:
            return exc
    i = sim.fail_step
    if sim.status in (ERR_NEG, ERR_NO_PRICE, ERR_NONFINITE, ERR_GROSS):
        message = _decision_message(sim.status, w[i], universe, sim, i, config.max_leverage)
        return AgentDecisionError(f"agent {config.agent!r}: invalid decision: {message}",
                                  step=i, time=iso_time(clock[i]))
    if sim.status == ERR_LEVERAGE:
        return LedgerInvariantError("leverage cap broken by the orders the broker sized",
                                    step=i, time=clock[i])
    if sim.status == ERR_NEG_EQUITY:
        return LedgerInvariantError("equity is negative without a liquidation event (margin "
                                    "checks failed to act)", step=i, time=clock[i])
    return None


def _result(sim: SimResult, w: np.ndarray, universe: tuple[str, ...], clock: np.ndarray,
            config: Any, data: Any, bench: np.ndarray | None, meta: dict[str, Any],
            started: float) -> Any:
    """The RunResult the event loop's recorder would build from this run."""
    from tradesim.engine.broker import MARKET
    from tradesim.engine.record import Recorder, json_rows

    n = sim.steps
    rec = Recorder(clock=clock, symbols=universe)
    equity = sim.equity[:n]
    scale = np.where(equity > 0, 1.0 / np.where(equity > 0, equity, 1.0), 0.0)
    rewards = np.full(n, np.nan)
    rewards[1:n] = log_growth(sim.equity_pre[:n])  # the loop's reward, from the rewards module
    rec.rows_from_arrays(equity=equity, cash=sim.cash[:n], gross=sim.gross[:n] * scale,
                         net=sim.net[:n] * scale, costs=sim.costs[:n],
                         held=sim.position[:n] * sim.marks[:n] * scale[:, None], rewards=rewards)
    o, f = sim.orders, sim.fills
    # journal: one row per step that ordered, held an invalid decision, or failed the run
    fallback, error = {}, {}
    for i in np.flatnonzero(sim.errors[:n]):
        fallback[int(i)] = "hold"
        error[int(i)] = "invalid decision: " + _decision_message(
            int(sim.errors[i]), w[i], universe, sim, int(i), config.max_leverage)
    steps = np.unique(np.r_[o["step"], np.fromiter(error, np.int64, len(error))])
    if meta.get("partial") and sim.fail_step >= 0 and sim.fail_step not in steps:
        error[sim.fail_step] = meta["error"]
        steps = np.union1d(steps, [sim.fail_step])
    status = o["status"].copy()
    if not meta["partial"]:
        status[status == ORDER_OPEN] = ORDER_CANCELLED  # end of data: open orders are cancelled
    orders = {"id": np.arange(1, len(status) + 1), "step": o["step"], "col": o["col"],
              "quantity": o["quantity"], "kind": MARKET, "level": math.nan, "reason": "rebalance",
              "status": pd.Categorical.from_codes(status, ORDER_STATUS), "filled": o["filled"],
              "fill_step": o["fill_step"]}
    fills = {"step": f["step"], "order_id": f["order"] + 1, "col": f["col"],
             "quantity": f["quantity"], "price": f["price"], "commission": f["commission"],
             "spread_cost": f["spread_cost"], "slippage_cost": f["slippage_cost"],
             "reason": pd.Categorical.from_codes(f["reason"], ("rebalance", "liquidation"))}
    decisions = {"step": steps, "weights": json_rows(weights=w[steps], symbols=universe),
                 "stop_loss": "{}", "take_profit": "{}", "confidence": math.nan,
                 "rationale": "precomputed weights (fast path)", "llm_calls": "[]", "expense": 0.0,
                 "fallback": [fallback.get(i, "") for i in steps.tolist()] if fallback else "",
                 "error": [error.get(i, "") for i in steps.tolist()] if error else ""}
    e = sim.events
    for k in range(len(e["step"])):
        at = int(e["step"][k])
        if e["kind"][k] == EV_LIQUIDATION:
            rec.event(step=at, time=clock[at], kind="liquidation",
                      phase="close" if e["phase"][k] else "open", equity=float(e["equity"][k]),
                      gross_exposure=float(e["gross"][k]),
                      maintenance_margin=float(config.maintenance_margin))
        elif e["kind"][k] == EV_SHRUNK:  # equity column holds the quantity asked for
            rec.event(step=at, time=clock[at], kind="order_shrunk",
                      symbol=universe[int(e["col"][k])], requested=float(e["equity"][k]),
                      filled=float(e["filled"][k]), price=float(e["price"][k]),
                      max_leverage=float(config.max_leverage))
        else:
            rec.event(step=at, time=clock[at], kind="ruin", equity=float(e["equity"][k]))
    # capped targets still working when the run ended (the loop cancels them then)
    last = sim.fail_step if sim.fail_step >= 0 else max(n - 1, 0)
    for k in np.flatnonzero(o["working"] & o["capped"]).tolist():
        j = int(o["col"][k])
        rec.event(step=last, time=clock[last], kind="target_unreached", symbol=universe[j],
                  target=float(o["target"][k]), held=float(sim.position[last, j]),
                  remaining=float(o["quantity"][k] - o["filled"][k]))
    meta["seconds"] = round(_time.perf_counter() - started, 6)
    from tradesim.rewards.metrics import compute_metrics

    return rec.build_from_arrays(
        config=config.model_dump(mode="json"), fingerprints=data.fingerprints(),
        fill_mode=config.fill, orders=orders, fills=fills, decisions=decisions, benchmark=bench,
        initial_cash=config.initial_cash, meta=meta, metrics_fn=compute_metrics)
