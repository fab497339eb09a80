"""The paper broker protocol and the default simulated broker (the engine's own fills).

A broker takes orders keyed by a client order id the daemon derives deterministically (session,
tick, symbol, intent), and answers lookups by that id, so after a crash an order already sent
is found instead of sent twice. :class:`SimulatedBroker` wraps the engine's
:class:`~tradesim.engine.account.Account`: its orders are the account's orders, filled by the
same broker model as a backtest at the next bar. A real broker's paper account plugs in as
``[broker] kind = "module:Class"`` implementing :class:`PaperBroker` with ``external = True``
(the daemon then submits after the tick commits and looks pending intents up at start).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tradesim.engine.account import Account
from tradesim.engine.broker import Order


def client_order_id(session: str, step: int, symbol: str, intent: str, n: int = 0) -> str:
    """Deterministic id of the ``n``-th order of ``intent`` for ``symbol`` at tick ``step``."""
    key = f"{session}|{step}|{symbol}|{intent}|{n}"
    return f"ts-{step}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class BrokerOrder:
    """What a broker knows of one order."""

    client_order_id: str
    symbol: str
    quantity: float
    kind: str
    status: str  # open | filled | partial | cancelled
    filled: float


@runtime_checkable
class PaperBroker(Protocol):
    """Where the daemon's orders go; ``external`` brokers live outside the daemon's process."""

    name: str
    external: bool

    def submit(self, *, client_order_id: str, order: Order) -> BrokerOrder: ...

    def lookup(self, client_order_id: str) -> BrokerOrder | None: ...

    def positions(self) -> dict[str, float]: ...

    def cash(self) -> float: ...


class SimulatedBroker:
    """The engine's account as a broker: orders queue in the account, fill at the next bar."""

    name = "simulated"
    external = False

    def __init__(self, account: Account, known: dict[str, int] | None = None) -> None:
        self.account = account
        self._ids: dict[str, int] = dict(known or {})  # client order id -> engine order id
        self._orders: dict[int, Order] = {}

    def submit(self, *, client_order_id: str, order: Order) -> BrokerOrder:
        """Adopt an order the account queued (idempotent: a known id is looked up, not re-queued)."""
        known = self.lookup(client_order_id)
        if known is not None:
            return known
        self._ids[client_order_id] = order.id
        self._orders[order.id] = order
        return _view(client_order_id, order)

    def lookup(self, client_order_id: str) -> BrokerOrder | None:
        oid = self._ids.get(client_order_id)
        if oid is None:
            return None
        order = self._orders.get(oid) or next(
            (o for o in self.account.broker.open_orders if o.id == oid), None)
        if order is None:  # finished before this process started: the log has its status
            return BrokerOrder(client_order_id, "", 0.0, "", "closed", 0.0)
        return _view(client_order_id, order)

    def forget_closed(self) -> None:
        """Drop finished orders from memory (their story is in the log)."""
        self._orders = {i: o for i, o in self._orders.items() if o.status == "open"}

    def positions(self) -> dict[str, float]:
        L = self.account.ledger
        return {s: q for s, q in zip(L.symbols, L.shares) if q}

    def cash(self) -> float:
        return self.account.ledger.cash


def _view(coid: str, order: Order) -> BrokerOrder:
    return BrokerOrder(coid, order.symbol, order.quantity, order.kind, order.status, order.filled)
