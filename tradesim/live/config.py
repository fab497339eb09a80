"""A paper session's TOML: the engine's run config plus feed, schedule, broker, risk and health.

Everything the engine needs (agent, agent_params, symbols, costs, fill, initial_cash, data flags
...) is a :class:`~tradesim.engine.backtest.BacktestConfig` field at the top level, so a paper
session and a backtest of the same bars share one config; the daemon's own settings sit in the
``[feed]``, ``[schedule]``, ``[broker]``, ``[risk]`` and ``[health]`` tables. The top-level
``isolate`` (and ``sandbox``) say whether the agent runs in its own process (see
``docs/isolation.md``); by default an agent from outside the package is isolated.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tradesim.engine.backtest import BacktestConfig
from tradesim.live.errors import PaperConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Table(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FeedConfig(_Table):
    """Where bars come from: recorded bars on an accelerated clock, or yfinance polling."""

    kind: Literal["replay", "yfinance"] = "replay"
    pace_s: float = Field(0.0, ge=0, description="replay: wall seconds per bar (0: as fast as it goes)")
    poll_s: float = Field(30.0, gt=0, description="yfinance: seconds between polls for a due bar")
    max_wait_s: float = Field(900.0, gt=0, description="yfinance: give up on a bar after this "
                              "long; symbols still without it are halted for that tick")
    backoff_s: float = Field(2.0, gt=0, description="first retry delay after a feed outage")
    backoff_max_s: float = Field(120.0, gt=0)
    lookback_days: int = Field(30, gt=0, description="yfinance: history fetched per poll")


class ScheduleConfig(_Table):
    """When decisions happen: at each bar close of the exchange calendar, plus a delay."""

    at: Literal["bar_close"] = "bar_close"
    delay_s: float = Field(5.0, ge=0, description="wait after the close before polling the bar")


class BrokerConfig(_Table):
    kind: str = Field("simulated", description="simulated (default) or module:Class of a "
                      "PaperBroker implementation")


class RiskConfig(_Table):
    """Limits that trip the kill switch to HALTED (fractions of equity; None = off)."""

    daily_loss: float | None = Field(None, gt=0, lt=1)
    max_drawdown: float | None = Field(None, gt=0, lt=1)
    llm_usd_per_day: float | None = Field(None, ge=0)


class HealthConfig(_Table):
    port: int = Field(0, ge=0, le=65535, description="0: any free port (written to health.json)")
    overdue_s: float | None = Field(None, gt=0, description="a tick later than this is overdue "
                                    "(default: from the feed's schedule)")
    heartbeat_s: float = Field(60.0, gt=0)


class PaperConfig(_Table):
    """One paper session: its name, the engine config, and the daemon's tables."""

    name: str
    engine: BacktestConfig
    feed: FeedConfig = Field(default_factory=FeedConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    isolate: bool | None = Field(None, description="run the agent in its own process that sees "
                                 "only its Observation; None: yes for an agent from outside the "
                                 "tradesim package (module:Class, a plug-in or a spec naming "
                                 "one), no for built-ins")
    sandbox: Literal["auto", "bwrap", "process"] = Field(
        "auto", description="how an isolated agent is isolated: bubblewrap where it works")

    @classmethod
    def from_toml(cls, path: str | Path) -> PaperConfig:
        """Read a session TOML (the session is named by ``name`` or else the file's stem)."""
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PaperConfigError(f"session file {p}: {exc}") from exc
        return cls.build(raw, default_name=p.stem, where=str(p))

    @classmethod
    def build(cls, raw: dict[str, Any], *, default_name: str = "paper",
              where: str = "session") -> PaperConfig:
        """Validate a session table; errors name the key and the file."""
        raw = dict(raw)
        tables: dict[str, Any] = {k: raw.pop(k) for k in ("feed", "schedule", "broker", "risk",
                                                           "health") if k in raw}
        name = str(raw.pop("name", default_name))
        tables.update({k: raw.pop(k) for k in ("isolate", "sandbox") if k in raw})
        if not _NAME.match(name):
            raise PaperConfigError(f"{where}: name = {name!r} must be letters, digits, '_', '-' "
                                   "or '.', at most 64 characters (it names the state folder)")
        engine = BacktestConfig.build(**raw)
        try:
            return cls.model_validate({"name": name, "engine": engine, **tables})
        except ValidationError as exc:
            lines = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            raise PaperConfigError(f"invalid session file {where}:\n  " + "\n  ".join(lines)
                                   ) from None
