"""vectorbt interop: a run as a vectorbt Portfolio built from our own fills, and vectorbt
indicators on the point-in-time history an agent sees.

vectorbt is imported lazily (``pip install vectorbt``); nothing else in tradesim imports this
module, so the engine does not depend on it. Conversion places one order per symbol and bar at our
fill price and quantity, with our commission + spread + slippage as that order's fixed fee, on one
cash-sharing group with the run's initial cash. Cash the fills do not explain (short-borrow fees,
``Decision.expense``) is carried by one extra column, :data:`CHARGES`, so the Portfolio's value
equals our equity at every bar (see ``docs/vectorbt.md``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from tradesim.contracts import AgentParams, BaseAgent, Decision, Observation, RunContext
from tradesim.engine.record import RunResult
from tradesim.errors import ConfigError, TradesimError

if TYPE_CHECKING:
    from tradesim.data.view import MarketData

CHARGES = "_charges"  # the extra column holding cash charges vectorbt does not model
INSTALL_HINT = "pip install vectorbt"
_NET_ZERO = 1e-9  # a bar's net quantity below this fraction of its traded shares counts as zero


class VectorbtInteropError(TradesimError):
    """vectorbt is missing, or a converted Portfolio disagrees with the run it came from."""


def _vbt() -> Any:
    """The vectorbt module, or an error naming the install command."""
    try:
        import vectorbt
    except ImportError as exc:
        raise VectorbtInteropError(
            f"vectorbt is not installed ({exc}); install it with `{INSTALL_HINT}` to convert runs "
            "or use vectorbt indicators (tradesim itself runs without it)") from exc
    return vectorbt


def _portfolio_class() -> Any:
    """:class:`~tradesim.interop._vbt_portfolio.RunPortfolio` (imports vectorbt)."""
    _vbt()
    from tradesim.interop._vbt_portfolio import RunPortfolio

    return RunPortfolio


# --- runs -> Portfolio -------------------------------------------------------------------------


def to_vectorbt(run: RunResult | str | Path, *, close: pd.DataFrame | None = None,
                data: MarketData | None = None, freq: str | pd.Timedelta | None = None,
                method: Literal["auto", "orders", "records"] = "auto",
                check: bool = True, rtol: float = 1e-6) -> Any:
    """A ``vectorbt.Portfolio`` built from ``run``'s fills (a RunResult or a run folder).

    Closes (for marks and plots) come from ``close`` (time x symbol), else from ``data``, else
    from the data the run's config names (checked against its fingerprints). ``method``:
    ``orders`` replays our orders through ``Portfolio.from_orders`` (vectorbt's simulator accepts
    each one against its own cash, or raises); ``records`` writes them as order records (any
    run, leverage and negative cash included); ``auto`` uses ``orders`` and falls back to
    ``records`` where vectorbt cannot hold the book (cash below zero, fees above proceeds).
    ``check`` raises :class:`VectorbtInteropError` when the Portfolio's value differs from our
    equity at any bar by more than ``rtol`` (relative).
    """
    _vbt()
    if not isinstance(run, RunResult):
        run = RunResult.load(run)
    if not len(run.equity):
        raise ConfigError("this run recorded no bar (it failed before its first close); "
                          "there is nothing to convert")
    symbols = [str(s) for s in run.weights.columns]
    prices = run_closes(run, close=close, data=data)
    plan = _plan(run, symbols)
    closes = prices.copy()
    if plan["charges"] is not None:
        closes[CHARGES] = plan["charges_close"]
    freq = freq if freq is not None else _freq(run)
    init_cash = float(run.config.get("initial_cash", 100_000.0))
    pf = None
    if method in ("auto", "orders"):
        if method == "auto" and plan["vbt_cash_min"] < -1e-9 * init_cash:
            pf = None  # vectorbt's simulator refuses negative cash: write records instead
        else:
            try:
                pf = _from_orders(closes, plan, init_cash, freq)
            except Exception as exc:
                if method == "orders":
                    raise VectorbtInteropError(
                        f"vectorbt's simulator refused an order of this run ({exc}); convert "
                        "with method='records' (what vectorbt cannot hold: cash below zero under "
                        "leverage, a fee larger than a sale's proceeds)") from exc
    elif method != "records":
        raise ConfigError(f"method={method!r}: use 'auto', 'orders' or 'records'")
    if pf is None:
        pf = _from_records(closes, plan, init_cash, freq)
    if check:
        gap = value_gap(run, pf)
        if not gap <= rtol:
            raise VectorbtInteropError(
                f"the vectorbt Portfolio's value differs from the run's equity by {gap:.3g} "
                f"(relative; allowed {rtol:g}); the closes passed may not be the run's marks")
    return pf


def value_gap(run: RunResult, pf: Any) -> float:
    """Largest relative difference between ``pf``'s value and ``run``'s equity over all bars."""
    ours = run.equity["equity"].to_numpy(dtype=float)
    theirs = np.asarray(pf.value(), dtype=float).reshape(len(ours), -1).sum(axis=1)
    scale = max(float(run.config.get("initial_cash", 1.0)), float(np.nanmax(np.abs(ours))))
    return float(np.nanmax(np.abs(theirs - ours)) / scale) if len(ours) else 0.0


def run_closes(run: RunResult, *, close: pd.DataFrame | None = None,
               data: MarketData | None = None) -> pd.DataFrame:
    """Closes on ``run``'s clock (time x symbol), carried forward as our marks are, so vectorbt
    values positions as the ledger did; bars before a symbol's first are back-filled (no
    position is held there)."""
    index = run.equity.index
    symbols = [str(s) for s in run.weights.columns]
    if close is None:
        if data is None:
            data = _load_run_data(run, symbols)
        cols = {}
        for s in symbols:
            bars = data.full(s)
            stamps = pd.DatetimeIndex(bars.time).tz_localize("UTC")
            cols[s] = pd.Series(np.asarray(bars.close, dtype=float), index=stamps)
        close = pd.DataFrame(cols)
    missing = [s for s in symbols if s not in close.columns]
    if missing:
        raise ConfigError(f"close has no column for {', '.join(missing)}; pass closes of every "
                          "symbol the run traded")
    frame = close[symbols].astype(float)
    if frame.index.tz is None:
        frame = frame.tz_localize("UTC")
    frame = frame.reindex(frame.index.union(index)).ffill().reindex(index).bfill()
    frame.index.name = "time"
    return frame


def _load_run_data(run: RunResult, symbols: list[str]) -> MarketData:
    """The bars the run's config names, refused when their fingerprints differ from the run's."""
    from tradesim.data.load import load_market

    cfg = run.config
    try:
        data = load_market(symbols=symbols, source=cfg.get("source", "sample"), start=None,
                           end=cfg.get("end"), interval=cfg.get("interval", "1d"),
                           quality=cfg.get("quality", "raise"), allow=cfg.get("allow", ()),
                           source_options=cfg.get("source_options") or {},
                           exchange=cfg.get("exchange"), news=False)
    except TradesimError as exc:
        raise ConfigError(f"could not load the run's data to get its closes ({exc}); pass "
                          "close= (time x symbol) or data=") from exc
    now = data.fingerprints()
    changed = [s for s in symbols if s in run.fingerprints and now.get(s) != run.fingerprints[s]]
    if changed:
        raise ConfigError(f"the data of {', '.join(changed)} changed since the run (fingerprints "
                          "differ); pass the run's own closes as close=")
    return data


def _freq(run: RunResult) -> pd.Timedelta | None:
    """The bar length of the run's interval (vectorbt annualises with it)."""
    from tradesim.data.bars import interval_nanos

    try:
        return pd.Timedelta(interval_nanos(str(run.config.get("interval", "1d"))), "ns")
    except ValueError:
        return None


def _plan(run: RunResult, symbols: list[str]) -> dict[str, Any]:
    """Orders per (bar, symbol) netted from our fills, and the cash charges left over.

    Fills of one symbol in one bar become one order at their volume-weighted price with their
    costs summed; a bar whose fills net to zero shares gives no order and its cash goes to the
    charges. Charges per bar are our cash change minus the orders' cash flow.
    """
    n, m = len(run.equity), len(symbols)
    size, price, fees = np.full((n, m), np.nan), np.full((n, m), np.nan), np.zeros((n, m))
    col_of = {s: j for j, s in enumerate(symbols)}
    f = run.fills
    flow = np.zeros(n)  # cash the emitted orders move per bar
    traded = np.zeros(n)
    if len(f):
        unknown = sorted(set(map(str, f["symbol"])) - set(col_of))
        if unknown:
            raise ConfigError(f"fills name symbols outside the run's universe: {unknown}")
        step = f["step"].to_numpy(np.int64)
        ok = step < n
        q = f["quantity"].to_numpy(float)[ok]
        p = f["price"].to_numpy(float)[ok]
        cost = (f["commission"] + f["spread_cost"] + f["slippage_cost"]).to_numpy(float)[ok]
        g = pd.DataFrame({"step": step[ok], "col": [col_of[str(s)] for s in f["symbol"][ok]],
                          "q": q, "v": q * p, "abs": np.abs(q), "cost": cost})
        net = g.groupby(["step", "col"], sort=True).sum()
        i = net.index.get_level_values(0).to_numpy()
        j = net.index.get_level_values(1).to_numpy()
        keep = np.abs(net["q"].to_numpy()) > _NET_ZERO * net["abs"].to_numpy()
        nq, nv, nc = (net[c].to_numpy() for c in ("q", "v", "cost"))
        size[i[keep], j[keep]] = nq[keep]
        price[i[keep], j[keep]] = nv[keep] / nq[keep]
        fees[i[keep], j[keep]] = nc[keep]
        np.add.at(flow, i[keep], -nv[keep] - nc[keep])
        np.add.at(traded, i, np.abs(nv))
    init = float(run.config.get("initial_cash", 100_000.0))
    cash = np.r_[init, run.equity["cash"].to_numpy(dtype=float)]
    charges = flow - np.diff(cash)  # what left the account besides the orders (>0: a cost)
    noise = 1e-9 * (1.0 + np.abs(cash[:-1]) + traded)
    charges[np.abs(charges) <= noise] = 0.0
    out: dict[str, Any] = {"size": size, "price": price, "fees": fees, "charges": None,
                           "charges_close": None}
    vbt_cash = cash[1:] + np.cumsum(charges)  # vectorbt's cash leaves the charges out
    out["vbt_cash_min"] = float(min(init, vbt_cash.min()))
    hit = np.flatnonzero(charges)
    if hit.size:
        # one unit of "charges" sold short at 1.0 (no fee) at the first charge and marked at
        # 1.0 + the cumulative charges: +1.0 cash, -(1.0 + charges so far) of position value
        cum = np.cumsum(charges)
        k = int(hit[0])
        out["charges"] = (k, 1.0, 0.0)
        out["charges_close"] = np.where(np.arange(n) < k, cum[k], cum) + 1.0
    return out


def _with_charges(plan: dict[str, Any], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Size, price and fixed-fee matrices with the charges column appended when there is one."""
    size, price, fees = plan["size"], plan["price"], plan["fees"]
    if plan["charges"] is None:
        return size, price, fees
    k, sale, fee = plan["charges"]
    extra = [np.full((n, 1), np.nan), np.full((n, 1), np.nan), np.zeros((n, 1))]
    extra[0][k, 0], extra[1][k, 0], extra[2][k, 0] = -1.0, sale, fee
    return (np.hstack([size, extra[0]]), np.hstack([price, extra[1]]),
            np.hstack([fees, extra[2]]))


def _call_seq(size: np.ndarray, price: np.ndarray, fees: np.ndarray) -> np.ndarray:
    """Per bar, orders that bring cash in first (sales, shorts), so cash never dips below the
    bar's closing cash while vectorbt works through the row."""
    flow = np.nan_to_num(-size * price) - fees
    return np.argsort(-flow, axis=1, kind="stable").astype(np.int64)


def _from_orders(closes: pd.DataFrame, plan: dict[str, Any], init_cash: float,
                 freq: Any) -> Any:
    """Replay the planned orders through vectorbt's own simulator; any refusal raises."""
    size, price, fees = _with_charges(plan, len(closes))
    return _portfolio_class().from_orders(
        closes, size=size, size_type="amount", direction="both",
        price=np.nan_to_num(price, nan=1.0), fees=0.0, fixed_fees=fees, slippage=0.0,
        min_size=0.0, max_size=np.inf,
        size_granularity=np.nan, reject_prob=0.0, lock_cash=False, allow_partial=False,
        raise_reject=True, init_cash=init_cash, cash_sharing=True, group_by=True,
        call_seq=_call_seq(size, price, fees), freq=freq)


def _from_records(closes: pd.DataFrame, plan: dict[str, Any], init_cash: float,
                  freq: Any) -> Any:
    """The planned orders written directly as vectorbt order records (no simulator checks)."""
    from vectorbt.base.array_wrapper import ArrayWrapper
    from vectorbt.portfolio.enums import log_dt, order_dt

    size, price, fees = _with_charges(plan, len(closes))
    seq = _call_seq(size, price, fees)
    rows, order = np.nonzero(~np.isnan(np.take_along_axis(size, seq, axis=1)))
    cols = seq[rows, order]
    q = size[rows, cols]
    records = np.zeros(len(q), dtype=order_dt)
    records["id"] = np.arange(len(q))
    records["col"], records["idx"] = cols, rows
    records["size"], records["price"] = np.abs(q), price[rows, cols]
    records["fees"], records["side"] = fees[rows, cols], np.where(q > 0, 0, 1)
    wrapper = ArrayWrapper.from_obj(closes, freq=freq, group_by=True)
    return _portfolio_class()(wrapper, closes, records, np.zeros(0, dtype=log_dt),
                              np.array([init_cash]), True)


def symbols_of(pf: Any) -> list[str]:
    """The Portfolio's symbol columns (without :data:`CHARGES`), e.g. for per-symbol trades."""
    return [str(c) for c in pf.wrapper.columns if c != CHARGES]


# --- indicators inside agents ------------------------------------------------------------------


def bars_frame(obs: Observation, symbol: str, *, lookback: int | None = None) -> pd.DataFrame:
    """The bars of ``symbol`` visible at ``obs.time`` as a frame (open..volume by bar end, UTC);
    copies, so an indicator may write to them."""
    b = obs.bars(symbol, lookback=lookback)
    index = pd.DatetimeIndex(np.array(b.time), name="time").tz_localize("UTC")
    return pd.DataFrame({c: np.array(getattr(b, c), dtype=float)
                         for c in ("open", "high", "low", "close", "volume")}, index=index)


def vbt_indicator(obs: Observation, symbol: str, indicator: str | Any, *,
                  lookback: int | None = None, **params: Any) -> Any:
    """Run a vectorbt indicator (a name such as ``"RSI"``, ``"MA"``, ``"BBANDS"``, ``"ATR"``, or
    an indicator class) on the bars of ``symbol`` visible at ``obs.time`` (the last
    ``lookback``); the indicator's inputs (close, high, ...) are taken from the bars by name.

    Only data up to the decision time reaches the indicator, so its last value is what was
    knowable then. Returns vectorbt's indicator object (e.g. ``.rsi``, ``.ma``, ``.upper``).
    """
    vbt = _vbt()
    cls = getattr(vbt, indicator) if isinstance(indicator, str) else indicator
    frame = bars_frame(obs, symbol, lookback=lookback)
    inputs = {}
    for name in cls.input_names:
        if name not in frame.columns:
            raise ConfigError(f"indicator {getattr(cls, '__name__', cls)} needs input {name!r}; "
                              "bars give open, high, low, close, volume")
        inputs[name] = frame[name]
    return cls.run(**inputs, **params)


def last_value(series: Any) -> float:
    """The last value of an indicator output (NaN while its window is not yet full)."""
    arr = np.asarray(series, dtype=float).reshape(-1)
    return float(arr[-1]) if arr.size else math.nan


class VbtRsiAgent(BaseAgent):
    """Mean reversion on vectorbt's RSI: long 1/N of equity once RSI falls below ``lower``, flat
    (or short, with ``allow_short``) once it rises above ``upper``, holding in between.

    An example of a vectorbt indicator inside an agent; not a built-in (the registry must not
    need vectorbt): run it as ``--agent tradesim.interop.vectorbt:VbtRsiAgent``.
    """

    name = "vbt_rsi"

    class Params(AgentParams):
        window: int = Field(14, ge=2, description="RSI window in bars")
        lower: float = Field(30.0, ge=0, le=100, description="oversold: go long below it")
        upper: float = Field(70.0, ge=0, le=100, description="overbought: exit above it")
        allow_short: bool = Field(False, description="short while overbought instead of flat")

    def __init__(self, **params: Any) -> None:
        p = self._configure(params)
        if not p.lower < p.upper:
            raise ConfigError(f"agent {self.name!r}: lower={p.lower} must be below "
                              f"upper={p.upper}")
        _vbt()  # fail at construction, naming the install command, not at the first bar
        self.window, self.lower, self.upper = p.window, p.lower, p.upper
        self.allow_short = p.allow_short
        self.lookback = p.window + 1  # a simple-average RSI reads exactly window + 1 closes
        self._signals: dict[str, float] = {}

    def start(self, context: RunContext) -> None:
        """A new run: forget the previous run's signals."""
        super().start(context)
        self._signals = {}

    def decide(self, obs: Observation) -> Decision:
        """When some symbol's RSI zone changes, restate the whole book (1/N per long, so gross
        stays within 1); otherwise hold and let positions drift."""
        changed = False
        for symbol in obs.universe:
            if obs.market.count(symbol) < self.lookback:
                continue
            rsi = last_value(vbt_indicator(obs, symbol, "RSI", lookback=self.lookback,
                                           window=self.window, ewm=False).rsi)
            signal = (math.nan if math.isnan(rsi) else 1.0 if rsi < self.lower else
                      (-1.0 if self.allow_short else 0.0) if rsi > self.upper else math.nan)
            if not math.isnan(signal) and self._signals.get(symbol) != signal:
                self._signals[symbol] = signal
                changed = True
        if not changed:
            return Decision.hold(self.name)
        n = len(obs.universe)
        return Decision(weights={s: v / n for s, v in self._signals.items()},
                        rationale=f"{self.name}: RSI zone changed")

    def state(self) -> dict[str, Any]:
        return {"signals": dict(self._signals)}

    def load_state(self, state: dict[str, Any]) -> None:
        self._signals = {str(k): float(v) for k, v in (state.get("signals") or {}).items()}


__all__ = ["CHARGES", "INSTALL_HINT", "VbtRsiAgent", "VectorbtInteropError", "bars_frame",
           "last_value", "run_closes", "symbols_of", "to_vectorbt", "value_gap", "vbt_indicator"]
