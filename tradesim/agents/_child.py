"""The isolated agent's process: reads framed requests on stdin, answers JSON on its own fd.

Started by :class:`tradesim.agents.isolation.IsolatedAgent`; it holds only the rows it was
sent (bars visible at each decision, news available by then) and rebuilds the usual
Observation from them. The agent's prints go to stderr so they cannot corrupt the protocol.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import traceback
from typing import Any, BinaryIO

import numpy as np

from tradesim.agents.isolation import _HEADER
from tradesim.contracts import Decision, Observation, Portfolio, RunContext
from tradesim.data.bars import NEWS_COLUMNS, Bars, News
from tradesim.data.view import MarketData
from tradesim.errors import FatalAgentError

_COLUMNS = ("time", "open", "high", "low", "close", "volume")


class _Rows:
    """One symbol's visible rows, grown by appending (capacity doubles)."""

    def __init__(self, symbol: str, interval: str, adjusted: bool, source: str,
                 meta: dict) -> None:
        self.symbol, self.interval, self.adjusted, self.source = symbol, interval, adjusted, source
        self.meta, self.n = dict(meta), 0
        self.cols: dict[str, np.ndarray] = {}

    def append(self, arrays: tuple[np.ndarray, ...]) -> None:
        k = arrays[0].shape[0]
        if not self.cols:
            self.cols = {c: _blank(max(64, 2 * k), a.dtype)
                         for c, a in zip(_COLUMNS, arrays, strict=True)}
        if self.n + k > self.cols["time"].shape[0]:
            size = max(2 * self.cols["time"].shape[0], self.n + k)
            for c, arr in self.cols.items():
                grown = _blank(size, arr.dtype)
                grown[: self.n] = arr[: self.n]
                self.cols[c] = grown
        for c, a in zip(_COLUMNS, arrays, strict=True):
            self.cols[c][self.n: self.n + k] = a
        self.n += k

    def bars(self) -> Bars:
        n = self.n
        c = self.cols
        return Bars(self.symbol, self.interval, self.adjusted, self.source, c["time"][:n],
                    c["open"][:n], c["high"][:n], c["low"][:n], c["close"][:n],
                    c["volume"][:n], self.meta)


class _Child:
    def __init__(self) -> None:
        self.agent: Any = None
        self.rows: dict[str, _Rows] = {}
        self.news: dict[str, np.ndarray] | None = None

    def start(self, blob: bytes, ctx: dict) -> None:
        self.agent = pickle.loads(blob)
        self.rows, self.news = {}, None
        self.agent.start(RunContext(**ctx))

    def decide(self, msg: dict) -> dict:
        for s, (interval, adjusted, source, meta, *arrays) in msg["bars"].items():
            if s not in self.rows:
                self.rows[s] = _Rows(s, interval, adjusted, source, meta)
            self.rows[s].append(tuple(arrays))
        if msg["news"] is not None:
            self.news = (msg["news"] if self.news is None else
                         {c: np.concatenate([self.news[c], msg["news"][c]]) for c in NEWS_COLUMNS})
        bars = {s: self.rows[s].bars() if s in self.rows else _empty(s, msg["interval"])
                for s in msg["symbols"]}
        news = News(*(self.news[c] for c in NEWS_COLUMNS)) if self.news else None
        cash, positions, prices, equity = msg["portfolio"]
        obs = Observation(time=msg["time"], step=msg["step"], universe=msg["universe"],
                          market=MarketData(bars, news).as_of(msg["time"]),
                          portfolio=Portfolio(cash=cash, positions=positions, prices=prices,
                                              equity=equity), interval=msg["interval"])
        return _encode(self.agent.decide(obs))

    def call(self, op: str, args: tuple) -> Any:
        if op == "start":
            return self.start(*args)
        if op == "decide":
            return self.decide(*args)
        if op == "update":
            return self.agent.update(*args)
        if op == "state":
            return self.agent.state()
        if op == "load_state":
            return self.agent.load_state(*args)
        if op == "stop":
            error = None if args[0] is None else RuntimeError(args[0])
            return self.agent.stop(error=error)
        raise ValueError(f"unknown request {op!r}")


def _blank(size: int, dtype: np.dtype) -> np.ndarray:
    """Room for rows not sent yet: NaN / NaT, so nothing past the visible rows looks like data."""
    return np.full(size, np.datetime64("NaT") if dtype.kind == "M" else np.nan, dtype=dtype)


def _empty(symbol: str, interval: str) -> Bars:
    return Bars.from_arrays(symbol=symbol, interval=interval, adjusted=False, source="",
                            time=np.zeros(0, "datetime64[ns]"), open=[], high=[], low=[],
                            close=[], volume=[])


def _encode(decision: object) -> dict:
    if not isinstance(decision, Decision):
        return {"type": type(decision).__name__}
    return {"type": "Decision", **decision.as_dict()}


def _reply(out: BinaryIO, value: dict) -> None:
    body = json.dumps(value, default=_plain, allow_nan=True).encode()
    out.write(_HEADER.pack(len(body)) + body)
    out.flush()


def _plain(x: object) -> object:
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    return str(x)


def main() -> None:
    """Serve requests until stdin closes."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # the agent's prints go to stderr
    inp = sys.stdin.buffer
    child = _Child()
    while True:
        head = inp.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return
        (size,) = _HEADER.unpack(head)
        op, args = pickle.loads(inp.read(size))
        try:
            value = child.call(op, args)
        except Exception as exc:
            traceback.print_exc()
            _reply(out, {"ok": False, "type": type(exc).__name__, "message": str(exc),
                         "fatal": isinstance(exc, FatalAgentError)})
            continue
        _reply(out, {"ok": True, "value": value})


if __name__ == "__main__":
    main()
