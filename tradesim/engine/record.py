"""The record of a run: RunResult (what a run produced) and the recorder the loop fills per step.

A run folder holds ``config.json``, ``meta.json`` (fingerprints, fill mode, metrics, run facts) and
one Parquet file per table; ``RunResult.load`` reads it back exactly. The recorder keeps per-step
numbers in preallocated arrays and raw Python records, and builds DataFrames once at the end;
the fast path hands it NumPy columns instead (``build_from_arrays``). Round trips are matched
FIFO on arrays, per symbol.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradesim.contracts import Decision, Fill
from tradesim.data.quality import REPAIR_COLUMNS
from tradesim.engine.broker import Order
from tradesim.errors import ConfigError

TABLES: tuple[str, ...] = ("equity", "weights", "orders", "fills", "trades", "decisions", "events")

_COLUMNS: dict[str, dict[str, str]] = {
    "orders": {"id": "int64", "time": "datetime64[ns, UTC]", "symbol": "str", "quantity": "float64",
               "kind": "str", "level": "float64", "reason": "str", "status": "str",
               "filled": "float64", "fill_time": "datetime64[ns, UTC]"},
    "fills": {"time": "datetime64[ns, UTC]", "step": "int64", "symbol": "str", "quantity": "float64",
              "price": "float64", "commission": "float64", "spread_cost": "float64",
              "slippage_cost": "float64", "reason": "str", "order_id": "int64"},
    "trades": {"symbol": "str", "entry_time": "datetime64[ns, UTC]",
               "exit_time": "datetime64[ns, UTC]", "quantity": "float64", "entry_price": "float64",
               "exit_price": "float64", "gross_pnl": "float64", "costs": "float64", "pnl": "float64",
               "return": "float64", "bars_held": "int64", "exit_reason": "str"},
    "decisions": {"time": "datetime64[ns, UTC]", "step": "int64", "weights": "str",
                  "stop_loss": "str", "take_profit": "str", "confidence": "float64",
                  "rationale": "str", "llm_calls": "str", "expense": "float64", "fallback": "str",
                  "error": "str"},
    "events": {"time": "datetime64[ns, UTC]", "step": "int64", "kind": "str", "detail": "str"},
}


def _frame(name: str, rows: list[dict]) -> pd.DataFrame:
    """A table with fixed columns and dtypes (also when empty), so saving round-trips exactly."""
    return _columns_frame(name, {c: [r[c] for r in rows] for c in _COLUMNS[name]})


def _columns_frame(name: str, data: Mapping[str, Any], rows: int = 0) -> pd.DataFrame:
    """:func:`_frame` from columns: lists, NumPy arrays, ``pd.Categorical`` (a few repeated
    strings, expanded by Arrow rather than per row) or a scalar repeated over ``rows``.

    Columns are built as arrays, not Series, so the frame does not align indexes per column.
    """
    out: dict[str, Any] = {}
    for c, dt in _COLUMNS[name].items():
        v = data[c]
        if dt == "str":
            out[c] = (_take_str([v], np.zeros(rows, np.int8)) if isinstance(v, str)
                      else _take_str(v.categories, v.codes) if isinstance(v, pd.Categorical)
                      else pd.array(v, dtype="str"))
        elif dt.startswith("datetime"):
            out[c] = pd.DatetimeIndex(np.asarray(v, "datetime64[ns]")).tz_localize("UTC")
        else:
            out[c] = np.full(rows, v, dtype=dt) if isinstance(v, (int, float)) else np.asarray(
                v, dtype=dt)
    return pd.DataFrame(out)


def _take_str(names: Sequence[Any], codes: np.ndarray) -> Any:
    """A ``str`` array of ``names[codes]``, gathered by Arrow (no Python object per row)."""
    import pyarrow as pa

    table = pa.array([str(x) for x in names], type=pa.large_string())
    return pd.array(table.take(pa.array(np.asarray(codes))), dtype="str")


def _utc_index(stamps: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(stamps.astype("datetime64[ns]"), name="time").tz_localize("UTC")


@dataclass(frozen=True)
class RunResult:
    """Everything a run produced, with the exact config and data it ran on."""

    config: dict[str, Any]  # frozen snapshot (BacktestConfig.model_dump(mode="json"))
    fingerprints: dict[str, str]
    fill_mode: str  # "next_open" | "close", stamped on every result
    equity: pd.DataFrame  # time (UTC) x equity, cash, gross/net exposure, costs, benchmark
    weights: pd.DataFrame  # time x symbol: held weights at each close
    orders: pd.DataFrame
    fills: pd.DataFrame
    trades: pd.DataFrame  # closed round trips (FIFO lots)
    decisions: pd.DataFrame  # journal: one row per decide call, incl. fallbacks and errors
    events: pd.DataFrame  # liquidations, ruin, shrunk orders, targets left unreached
    rewards: pd.Series  # per-step reward, stamped when the outcome became known
    metrics: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # partial, error, stopped, agent, timings
    repairs: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        {c: pd.array([], dtype="str") for c in REPAIR_COLUMNS}))  # data repaired on load

    @property
    def partial(self) -> bool:
        """True when the run stopped early on an error (this is the record up to that point)."""
        return bool(self.meta.get("partial", False))

    @property
    def final_equity(self) -> float:
        return float(self.equity["equity"].iloc[-1]) if len(self.equity) else math.nan

    def save(self, path: str | Path) -> Path:
        """Write the run folder (Parquet + JSON); the HTML report is written by the report room.

        Every file is written to a temporary name and renamed into place, and ``meta.json`` goes
        last: a save killed midway leaves no ``meta.json`` claiming a complete run, so ``load``
        refuses the folder by name instead of reading half a record.
        """
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "meta.json").unlink(missing_ok=True)
        for name in TABLES:
            _atomic(folder / f"{name}.parquet", getattr(self, name).to_parquet)
        _atomic(folder / "rewards.parquet", self.rewards.to_frame().to_parquet)
        _atomic(folder / "repairs.parquet", self.repairs.astype("str").to_parquet)
        _atomic(folder / "config.json", lambda p: Path(p).write_text(
            json.dumps(self.config, indent=2, sort_keys=True)))
        _atomic(folder / "meta.json", lambda p: Path(p).write_text(json.dumps(
            {"fingerprints": self.fingerprints, "fill_mode": self.fill_mode,
             "metrics": self.metrics, "meta": self.meta}, indent=2, sort_keys=True, default=str)))
        return folder

    @classmethod
    def load(cls, path: str | Path) -> RunResult:
        """Read a run folder written by :meth:`save`."""
        folder = Path(path)
        if not (folder / "meta.json").is_file():
            raise ConfigError(f"{folder} is not a run folder (no meta.json); "
                              "pass the folder a backtest saved")
        head = json.loads((folder / "meta.json").read_text())
        tables = {n: pd.read_parquet(folder / f"{n}.parquet") for n in TABLES}
        rewards = pd.read_parquet(folder / "rewards.parquet").iloc[:, 0]
        if (folder / "repairs.parquet").is_file():
            tables["repairs"] = pd.read_parquet(folder / "repairs.parquet")
        return cls(config=json.loads((folder / "config.json").read_text()),
                   fingerprints=head["fingerprints"], fill_mode=head["fill_mode"],
                   rewards=rewards, metrics=head["metrics"], meta=head["meta"], **tables)


def _atomic(path: Path, write: Any) -> None:
    """``write(tmp)`` then rename onto ``path``: readers see the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


_BOOK = ("step", "equity", "cash", "gross", "net", "costs", "reward")


class Recorder:
    """Appends a run's steps, journal, fills, orders and events as the session produces them.

    Rows are buffered in flat Python lists (a per-step NumPy write costs more than the rest of a
    step) and packed into columnar chunks every ``chunk`` steps; with ``spool`` (a folder) each
    packed chunk goes to a Parquet part file there, so memory stays bounded however long the
    run. ``build`` assembles the RunResult from the chunks (also for a partial run). ``clock``
    maps steps to times for :meth:`build_from_arrays` (the fast path).
    """

    def __init__(self, *, symbols: tuple[str, ...], clock: np.ndarray | None = None,
                 spool: str | Path | None = None, chunk: int = 65_536) -> None:
        self.clock = clock if clock is not None else np.zeros(0, "datetime64[ns]")
        self.symbols = tuple(symbols)
        self.chunk = int(chunk)
        self.spool = None if spool is None else Path(spool)
        if self.spool is not None:
            self.spool.mkdir(parents=True, exist_ok=True)
        self.steps = 0  # steps recorded so far
        self._costs_total = 0.0
        self._at: list[int] = []  # buffered rows: steps, times, 6 numbers each, positions + marks
        self._times: list[np.datetime64] = []
        self._flat: list[float] = []
        self._book: list[float] = []
        # the journal in parallel columns, so no tracked object per step outlives it (a tuple
        # holding a Decision would: full garbage collections would scan them all, over and over)
        self._j_steps: list[int] = []
        self._j_times: list[np.datetime64] = []
        self._j_decisions: list[Decision | None] = []
        self._j_notes: dict[int, tuple[str, str]] = {}  # row -> (fallback, error), where given
        self._parts: dict[str, list[Any]] = {"book": [], "decisions": []}
        self._fills: list[tuple[int, int, Fill]] = []
        self._orders: list[Order] = []
        self._events: list[dict] = []

    # --- appending ------------------------------------------------------------------------

    def row(self, *, step: int, time: np.datetime64, equity: float, cash: float, gross: float,
            net: float, costs_total: float, positions: Sequence[float], marks: Sequence[float],
            reward: float = math.nan) -> None:
        """The book at the end of ``step`` (exposures in currency; stored as fractions of equity)
        and the step's reward (stamped when its outcome became known)."""
        self._at.append(step)
        self._times.append(time)
        self._flat.extend((equity, cash, gross, net, costs_total, reward))
        self._book.extend(positions)
        self._book.extend(marks)
        self.steps = step + 1
        if len(self._at) >= self.chunk:
            self._pack_rows()

    def decision(self, *, step: int, time: np.datetime64, decision: Decision | None,
                 fallback: str = "", error: str = "") -> None:
        """Journal one decide call (raw; serialised when its chunk is packed)."""
        steps = self._j_steps
        if fallback or error:
            self._j_notes[len(steps)] = (fallback, error)
        steps.append(step)
        self._j_times.append(time)
        self._j_decisions.append(decision)
        if len(steps) >= self.chunk:
            self._pack_journal()

    def take(self, fills: list[tuple[int, int, Fill]], orders: list[Order],
             events: list[dict]) -> None:
        """What the account produced in a step: fills, closed orders, events."""
        self._fills.extend(fills)
        self._orders.extend(orders)
        for e in events:
            self.event(**e)

    def event(self, *, step: int, time: np.datetime64, kind: str, **detail: Any) -> None:
        self._events.append({"time": time, "step": step, "kind": kind,
                             "detail": json.dumps(detail, sort_keys=True, default=float)})

    # --- packing ----------------------------------------------------------------------------

    def _pack_rows(self) -> None:
        """Buffered rows -> one columnar chunk (the same arithmetic, vectorised)."""
        if not self._at:
            return
        at = np.array(self._at, dtype=np.int64)
        flat = np.array(self._flat, dtype=np.float64).reshape(len(at), 6)
        book = np.array(self._book, dtype=np.float64).reshape(len(at), 2, len(self.symbols))
        times = np.array(self._times, dtype="datetime64[ns]")
        self._at, self._times, self._flat, self._book = [], [], [], []
        equity, totals = flat[:, 0], flat[:, 4]
        scale = np.zeros(len(at))
        np.divide(1.0, equity, out=scale, where=equity > 0)
        held = book[:, 0] * book[:, 1] * scale[:, None]  # NaN marks of flat symbols zeroed later
        chunk = pd.DataFrame({"step": at, "time": times, "equity": equity, "cash": flat[:, 1],
                              "gross": flat[:, 2] * scale, "net": flat[:, 3] * scale,
                              "costs": totals - np.r_[self._costs_total, totals[:-1]],
                              "reward": flat[:, 5]})
        self._costs_total = float(totals[-1])
        chunk = pd.concat([chunk, pd.DataFrame(held, columns=[f"w{j}" for j in
                                                              range(len(self.symbols))])],
                          axis=1)
        self._keep("book", chunk)

    def _pack_journal(self) -> None:
        """Buffered journal rows -> one decisions chunk."""
        if self._j_steps:
            self._keep("decisions", _journal_frame(self._j_steps, self._j_times,
                                                   self._j_decisions, self._j_notes))
            self._j_steps, self._j_times, self._j_decisions, self._j_notes = [], [], [], {}

    def _keep(self, table: str, frame: pd.DataFrame) -> None:
        """Hold a packed chunk, or write it to the spool folder when there is one."""
        parts = self._parts[table]
        if self.spool is None:
            parts.append(frame)
        else:
            path = self.spool / f"{table}-{len(parts):05d}.parquet"
            frame.to_parquet(path)
            parts.append(path)

    def _table(self, table: str) -> pd.DataFrame | None:
        parts = [p if isinstance(p, pd.DataFrame) else pd.read_parquet(p)
                 for p in self._parts[table]]
        return pd.concat(parts, ignore_index=True) if parts else None

    def rows_from_arrays(self, *, equity: np.ndarray, cash: np.ndarray, gross: np.ndarray,
                         net: np.ndarray, costs: np.ndarray, held: np.ndarray,
                         rewards: np.ndarray) -> None:
        """Steps 0..n-1 at once from arrays (the fast path): exposures and ``held`` already as
        fractions of equity, ``costs`` per step; times come from ``clock``."""
        n = len(equity)
        chunk = pd.DataFrame({"step": np.arange(n), "time": self.clock[:n], "equity": equity,
                              "cash": cash, "gross": gross, "net": net, "costs": costs,
                              "reward": rewards})
        chunk = pd.concat([chunk, pd.DataFrame(held, columns=[f"w{j}" for j in
                                                              range(len(self.symbols))])],
                          axis=1)
        self._keep("book", chunk)
        self.steps = n

    # --- building ---------------------------------------------------------------------------

    def build(self, *, config: dict, fingerprints: dict[str, str], fill_mode: str,
              benchmark: np.ndarray | None, initial_cash: float, meta: dict[str, Any],
              metrics_fn: Any = None) -> RunResult:
        """Assemble the RunResult from what the session recorded (also for a partial run)."""
        fills, orders = self._fills, sorted(self._orders, key=lambda o: o.id)
        self._pack_journal()
        decisions = self._table("decisions")
        col = {s: j for j, s in enumerate(self.symbols)}
        fill_cols: dict[str, list] = {c: [getattr(f, c) for _, _, f in fills]
                                      for c in _COLUMNS["fills"] if c not in ("step", "order_id")}
        fill_cols["step"] = [step for step, _, _ in fills]
        fill_cols["order_id"] = [oid for _, oid, _ in fills]
        fill_cols["col"] = [col[s] for s in fill_cols["symbol"]]
        orders_frame = _columns_frame("orders", {c: [getattr(o, c) for o in orders]
                                                 for c in _COLUMNS["orders"]})
        return self._assemble(config=config, fingerprints=fingerprints, fill_mode=fill_mode,
                              orders=orders_frame, fills=fill_cols,
                              decisions=decisions if decisions is not None
                              else _journal_frame([], [], [], {}), benchmark=benchmark,
                              initial_cash=initial_cash, meta=meta, metrics_fn=metrics_fn)

    def build_from_arrays(self, *, config: dict, fingerprints: dict[str, str], fill_mode: str,
                          orders: Mapping[str, Any], fills: Mapping[str, Any],
                          decisions: Mapping[str, Any], benchmark: np.ndarray | None,
                          initial_cash: float, meta: dict[str, Any],
                          metrics_fn: Any = None) -> RunResult:
        """:meth:`build` from columns (NumPy arrays; no object per order, fill or decision).

        Steps index the clock and ``col`` the symbols. ``orders``: id, step, col, quantity, kind,
        level, reason, status, filled, fill_step (-1: never filled); ``fills``: step, order_id,
        col, quantity, price, commission, spread_cost, slippage_cost, reason; ``decisions``: step,
        weights, stop_loss, take_profit (JSON text, see :func:`json_rows`), confidence,
        rationale, llm_calls, fallback, error. String columns may be ``pd.Categorical`` and any
        column a scalar that holds for every row.
        """
        o, d = dict(orders), dict(decisions)
        names = pd.Categorical.from_codes(np.asarray(o["col"], np.int64), list(self.symbols))
        fill_step = np.asarray(o["fill_step"], np.int64)
        o.update(time=self.clock[np.asarray(o["step"], np.int64)], symbol=names,
                 fill_time=np.where(fill_step >= 0, self.clock[np.maximum(fill_step, 0)],
                                    np.datetime64("NaT", "ns")))
        d_steps = np.asarray(d["step"], np.int64)
        d["time"] = self.clock[d_steps]
        return self._assemble(
            config=config, fingerprints=fingerprints, fill_mode=fill_mode,
            orders=_columns_frame("orders", o, len(names)), fills=fills,
            decisions=_columns_frame("decisions", d, len(d_steps)), benchmark=benchmark,
            initial_cash=initial_cash, meta=meta, metrics_fn=metrics_fn)

    def _assemble(self, *, config: dict, fingerprints: dict[str, str], fill_mode: str,
                  orders: pd.DataFrame, fills: Mapping[str, Any], decisions: pd.DataFrame,
                  benchmark: np.ndarray | None, initial_cash: float, meta: dict[str, Any],
                  metrics_fn: Any) -> RunResult:
        """The RunResult around built orders/decisions tables and fill columns."""
        self._pack_rows()
        book = self._table("book")
        n = self.steps
        if book is None:  # no step recorded (a run that failed before its first bar closed)
            book = pd.DataFrame({c: np.zeros(0) for c in (
                *_BOOK, *(f"w{j}" for j in range(len(self.symbols))))}).assign(
                time=np.zeros(0, "datetime64[ns]"))
        index = _utc_index(book["time"].to_numpy("datetime64[ns]"))
        bench = np.full(n, np.nan)
        if benchmark is not None and n:
            b = benchmark[:n]
            first = np.flatnonzero(np.isfinite(b))
            if first.size:
                bench = initial_cash * b / b[first[0]]
        equity = pd.DataFrame({"equity": book["equity"].to_numpy(),
                               "cash": book["cash"].to_numpy(),
                               "gross_exposure": book["gross"].to_numpy(),
                               "net_exposure": book["net"].to_numpy(),
                               "costs": book["costs"].to_numpy(), "benchmark": bench}, index=index)
        held = book[[f"w{j}" for j in range(len(self.symbols))]].to_numpy(dtype=np.float64)
        weights = pd.DataFrame(np.where(np.isnan(held), 0.0, held), index=index,
                               columns=list(self.symbols))
        rewards = pd.Series(book["reward"].to_numpy(), index=index, name="reward")
        fills_frame, trades = self._fill_tables(fills)
        # targets the participation cap held back that the run ended before reaching, and
        # orders cut at the fill to the cash and leverage the account had
        kinds = [e["kind"] for e in self._events]
        meta = {**meta, "targets_unreached": kinds.count("target_unreached"),
                "orders_shrunk": kinds.count("order_shrunk")}
        result = RunResult(
            config=config, fingerprints=dict(fingerprints), fill_mode=fill_mode, equity=equity,
            weights=weights, orders=orders, fills=fills_frame, trades=trades, decisions=decisions,
            events=_frame("events", self._events), rewards=rewards, metrics={}, meta=dict(meta))
        if metrics_fn is not None and n >= 2:
            try:
                metrics = metrics_fn(equity=equity["equity"], weights=weights, trades=trades,
                                     benchmark=equity["benchmark"] if np.isfinite(bench).any()
                                     else None)
            except ValueError as exc:  # e.g. a ruined run (equity <= 0): recorded, not hidden
                result.meta["metrics_error"] = f"{type(exc).__name__}: {exc}"
            else:
                result.metrics.update({k: float(v) for k, v in metrics.items()})
        return result

    def _fill_tables(self, fills: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The fills table and the round trips (FIFO) from fill columns (``time`` defaults to the
        clock at each fill's step)."""
        step = np.asarray(fills["step"], np.int64)
        col = np.asarray(fills["col"], np.int64)
        num = {k: np.asarray(fills[k], np.float64)
               for k in ("quantity", "price", "commission", "spread_cost", "slippage_cost")}
        time = (np.asarray(fills["time"], "datetime64[ns]") if "time" in fills
                else self.clock[step])
        symbol = pd.Categorical.from_codes(col, list(self.symbols))
        reason = fills["reason"]
        if not isinstance(reason, pd.Categorical):
            reason = pd.Categorical([reason] * len(step) if isinstance(reason, str) else reason)
        table = _columns_frame("fills", {**num, "time": time, "step": step, "symbol": symbol,
                                         "reason": reason, "order_id": fills["order_id"]},
                               len(step))
        entry, exit_, qty = round_trips(col=col, quantity=num["quantity"])
        price = num["price"]
        per_share = np.zeros(len(step))
        np.divide(num["commission"] + num["spread_cost"] + num["slippage_cost"],
                  np.abs(num["quantity"]), out=per_share, where=num["quantity"] != 0)
        closed = np.abs(qty)
        gross = qty * (price[exit_] - price[entry])
        costs = closed * (per_share[entry] + per_share[exit_])
        trades = _columns_frame("trades", {
            "symbol": symbol[exit_], "entry_time": time[entry], "exit_time": time[exit_],
            "quantity": qty, "entry_price": price[entry], "exit_price": price[exit_],
            "gross_pnl": gross, "costs": costs, "pnl": gross - costs,
            "return": (gross - costs) / (closed * price[entry]),
            "bars_held": step[exit_] - step[entry], "exit_reason": reason[exit_]}, len(qty))
        return table, trades


_KEYS: dict[str, str] = {}  # JSON encodings of mapping keys (symbols), reused across rows


def _json(mapping: Any) -> str:
    """``json.dumps`` of a symbol -> number mapping with sorted keys, without the encoder's
    per-call overhead (the journal holds one per decision)."""
    if not mapping:
        return "{}"
    items = {str(k): float(v) if isinstance(v, (int, float)) else str(v)
             for k, v in dict(mapping).items()}
    parts = []
    for k in sorted(items):
        key = _KEYS.get(k)
        if key is None:
            key = _KEYS[k] = json.dumps(k)
        v = items[k]
        text = float.__repr__(v) if type(v) is float and math.isfinite(v) else json.dumps(v)
        parts.append(f"{key}: {text}")
    return "{" + ", ".join(parts) + "}"


def _journal_frame(steps: list[int], times: list[np.datetime64],
                   decisions: list[Decision | None],
                   notes: Mapping[int, tuple[str, str]]) -> pd.DataFrame:
    """The decisions table from raw journal columns (``notes``: row -> (fallback, error), the
    rest empty). Each distinct Decision object is serialised once: most entries of a long run
    are the shared ``Decision.hold()`` instances."""
    fallbacks, errors = [""] * len(steps), [""] * len(steps)
    for row, (fallback, error) in notes.items():
        fallbacks[row], errors[row] = fallback, error
    fields: dict[int, tuple] = {}
    for d in decisions:
        if id(d) not in fields:
            fields[id(d)] = _decision_fields(d)
    rows = [fields[id(d)] for d in decisions]
    # one column at a time: zip(*rows) would hold a tracked iterator per row at once, enough to
    # push the garbage collector into full collections
    cols = [list(map(itemgetter(k), rows)) for k in range(7)]
    return _columns_frame("decisions", {
        "time": np.array(times, dtype="datetime64[ns]"), "step": steps, "weights": cols[0],
        "stop_loss": cols[1], "take_profit": cols[2], "confidence": cols[3],
        "rationale": cols[4], "llm_calls": cols[5], "expense": cols[6],
        "fallback": fallbacks, "error": errors})


def _decision_fields(d: Decision | None) -> tuple:
    """One journal row's decision columns (a row without a Decision: the agent raised)."""
    if d is None:
        return "{}", "{}", "{}", math.nan, "", "[]", 0.0
    conf, expense = d.confidence, d.expense
    return (_json(d.weights) if d.weights else "{}",
            _json(d.stop_loss) if d.stop_loss else "{}",
            _json(d.take_profit) if d.take_profit else "{}",
            float(conf) if isinstance(conf, (int, float)) else math.nan, str(d.rationale),
            json.dumps([str(x) for x in d.llm_calls]) if d.llm_calls else "[]",
            float(expense) if isinstance(expense, (int, float)) else math.nan)


def json_rows(*, weights: np.ndarray, symbols: Sequence[str]) -> list[str]:
    """Per row of ``weights`` (T, N; NaN = absent) the JSON object :func:`_json` writes for the
    mapping symbol -> weight: one %-template per pattern of given symbols, filled per row."""
    w = np.asarray(weights, dtype=np.float64)
    names = sorted(str(s) for s in symbols)
    w = w[:, sorted(range(len(symbols)), key=lambda j: str(symbols[j]))]
    keys = [json.dumps(s).replace("%", "%%") + ": %r" for s in names]
    given = ~np.isnan(w)
    out = [""] * len(w)
    if not len(w):
        return out
    patterns, which = np.unique(given, axis=0, return_inverse=True)
    which = which.ravel()
    for p, pattern in enumerate(patterns):
        at = np.flatnonzero(which == p)
        template = "{" + ", ".join(k for k, g in zip(keys, pattern) if g) + "}"
        for i, text in zip(at.tolist(), map(template.__mod__,
                                             map(tuple, w[np.ix_(at, pattern)].tolist()))):
            out[i] = text
    for i in np.flatnonzero(np.isinf(w).any(axis=1)).tolist():  # JSON spells them Infinity
        out[i] = _json({s: v for s, v, g in zip(names, w[i].tolist(), given[i]) if g})
    return out


_FLAT = 1e-12  # shares: smaller remainders are rounding, not positions (as the ledger's lots)


def round_trips(*, col: np.ndarray, quantity: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray]:
    """Closed round trips of fills matched first-in first-out per symbol (``col``).

    Returns (entry fill index, exit fill index, signed quantity closed), one row per lot piece
    closed, in the order the pieces closed (by exit fill, then lot). Vectorised per symbol: lots
    and closing pieces are intervals on cumulative opened and closed quantity, and each
    overlap of a lot with a closing piece is one trade.
    """
    col = np.asarray(col, dtype=np.int64)
    q = np.asarray(quantity, dtype=np.float64)
    by_symbol = np.argsort(col, kind="stable")
    bounds = np.flatnonzero(np.diff(col[by_symbol])) + 1
    entry, exit_, size = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
    for idx in np.split(by_symbol, bounds):
        idx = idx[q[idx] != 0]
        if idx.size:
            e, x, z = _fifo(q[idx])
            entry.append(idx[e])
            exit_.append(idx[x])
            size.append(z)
    entry_all, exit_all, size_all = (np.concatenate(a) for a in (entry, exit_, size))
    order = np.argsort(exit_all, kind="stable")
    return entry_all[order], exit_all[order], size_all[order]


def _fifo(q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`round_trips` of one symbol's (nonzero) fills, in closing order."""
    pos = np.cumsum(q)
    pos[np.abs(pos) <= _FLAT * np.maximum(1.0, np.abs(q))] = 0.0
    prev = np.r_[0.0, pos[:-1]]
    side, prev_side = np.sign(pos), np.sign(prev)
    same = (side == prev_side) & (side != 0)
    grows = same & (np.abs(pos) > np.abs(prev))
    size = np.abs(q)
    opened = np.where(same, np.where(grows, size, 0.0), np.abs(pos))
    closed = np.where(same, np.where(grows, 0.0, size), np.abs(prev))
    episode = np.cumsum((side != 0) & (side != prev_side))  # a new side opens: flat -> in, flips
    prev_episode = np.r_[0, episode[:-1]]
    lots, exits = np.flatnonzero(opened > 0), np.flatnonzero(closed > 0)
    lot_ep, exit_ep = episode[lots], prev_episode[exits]
    ends = np.r_[_running(opened[lots], lot_ep), _running(closed[exits], exit_ep)]
    ep = np.r_[lot_ep, exit_ep]
    is_lot = np.r_[np.ones(lots.size, bool), np.zeros(exits.size, bool)]
    at = np.lexsort((ends, ep))
    ends, ep, is_lot = ends[at], ep[at], is_lot[at]
    # each interval between consecutive breakpoints of one episode is one (lot, exit) overlap
    lot_k = np.cumsum(is_lot) - is_lot
    exit_k = np.cumsum(~is_lot) - ~is_lot
    starts = np.r_[0.0, ends[:-1]]
    starts[np.r_[True, ep[1:] != ep[:-1]]] = 0.0
    width = ends - starts
    ok = (lot_k < lots.size) & (exit_k < exits.size) & (width > _FLAT * np.maximum(1.0, ends))
    lot_k, exit_k, width, ep = lot_k[ok], exit_k[ok], width[ok], ep[ok]
    ok = (lot_ep[lot_k] == ep) & (exit_ep[exit_k] == ep)
    lot_i, exit_i = lots[lot_k[ok]], exits[exit_k[ok]]
    return lot_i, exit_i, side[lot_i] * width[ok]


def _running(amount: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Cumulative sums of ``amount`` restarting at each new value of (sorted) ``group``."""
    total = np.cumsum(amount)
    first = np.r_[True, group[1:] != group[:-1]] if group.size else np.zeros(0, bool)
    before = (total - amount)[np.maximum.accumulate(np.where(first, np.arange(group.size), 0))]
    return total - before
