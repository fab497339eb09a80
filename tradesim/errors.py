"""The exceptions tradesim raises; each message names the input at fault and how to fix it."""

from __future__ import annotations

from typing import Any


class TradesimError(Exception):
    """Base class of every error tradesim raises on purpose."""


class DataFormatError(TradesimError, ValueError):
    """A data file could not be parsed; names the file, the row and the column."""

    def __init__(self, message: str, *, path: str | None = None, row: int | None = None,
                 column: str | None = None) -> None:
        where = ", ".join(p for p in (
            f"file {path}" if path else "",
            f"row {row}" if row is not None else "",
            f"column {column!r}" if column else "",
        ) if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.path, self.row, self.column = path, row, column


class DataQualityError(TradesimError, ValueError):
    """Loaded data failed quality checks; carries every finding (symbol, date, problem, fix)."""

    def __init__(self, findings: list) -> None:  # list[quality.Finding]
        self.findings = list(findings)
        head = "\n".join(f"  - {f}" for f in self.findings[:20])
        more = f"\n  ... and {len(self.findings) - 20} more" if len(self.findings) > 20 else ""
        super().__init__(f"{len(self.findings)} data-quality finding(s):\n{head}{more}\n"
                         "Fix the data, or pass quality='warn' (--quality warn) to continue, "
                         "or quality='repair' (--quality repair) to apply the suggested fixes.")


class LookAheadError(TradesimError, LookupError):
    """Something asked for data later than the current decision time."""


class DataSourceError(TradesimError):
    """A data source could not deliver; subclasses say why."""


class UnknownSymbolError(DataSourceError, KeyError):
    """The source has no data for this symbol (delisted, misspelt, or not in the folder)."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


class RateLimitedError(DataSourceError):
    """The remote source refused because of too many requests; retry later or slow down."""


class SourceOfflineError(DataSourceError):
    """The remote source could not be reached (no network, DNS or connection failure)."""


class ConfigError(TradesimError, ValueError):
    """A configuration value or spec is invalid; names the key and the accepted values."""


class FatalAgentError(TradesimError):
    """The agent cannot go on (a spent budget, a replay miss, an unusable model): the session
    stops the run even when ``on_agent_error='hold'`` would hold through an agent's mistake."""


class LLMError(FatalAgentError):
    """An LLM gateway call could not be served; subclasses say why."""


class MissingAPIKeyError(LLMError, ConfigError):
    """The chosen LLM provider needs a key from an environment variable that is not set."""


class ReplayMissError(LLMError, LookupError):
    """Strict replay was asked for a call that is not in the cache; names the call."""


class BudgetExceededError(LLMError):
    """The run's LLM budget (tokens or dollars) is spent; the run stops cleanly."""


class LLMProviderError(LLMError):
    """The provider refused or failed the call (after retries where retrying can help)."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status, self.retryable = status, retryable


class LLMTimeoutError(LLMProviderError):
    """The provider did not answer within the configured timeout (after retries)."""


class EngineError(TradesimError):
    """The backtest engine stopped; carries the step, its time and the partial run record."""

    def __init__(self, message: str, *, step: int | None = None, time: object | None = None) -> None:
        where = ", ".join(p for p in (f"step {step}" if step is not None else "",
                                      f"time {time}" if time is not None else "") if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.step, self.time = step, time
        self.partial_result: Any = None  # the RunResult up to the failure (set by the runner)


class LedgerInvariantError(EngineError, AssertionError):
    """A ledger invariant broke (cash conservation, equity identity, leverage, negative equity)."""

    def __init__(self, message: str, *, step: int | None = None, time: object | None = None,
                 numbers: dict | None = None, orders: list | None = None) -> None:
        detail = "".join(f"\n  {k} = {v!r}" for k, v in (numbers or {}).items())
        detail += "".join(f"\n  order {o}" for o in (orders or []))
        super().__init__(message + detail, step=step, time=time)
        self.numbers, self.orders = dict(numbers or {}), list(orders or [])


class AgentDecisionError(EngineError, ValueError):
    """An agent raised or returned an invalid Decision (NaN, over-leveraged, unknown symbol)."""


class DataTamperedError(EngineError):
    """The market data changed while an agent ran (its fresh fingerprint differs): that run fails
    by name, and later agents must not trade on the altered data."""


class IsolationError(EngineError):
    """An isolated agent's process failed, died or broke the protocol (the message says which)."""


class DataQualityWarning(UserWarning):
    """Quality findings let through by ``quality='warn'`` (or left after a repair); carries them."""

    def __init__(self, findings: list) -> None:  # list[quality.Finding]
        self.findings = list(findings)
        head = "\n".join(f"  - {f}" for f in self.findings[:20])
        more = f"\n  ... and {len(self.findings) - 20} more" if len(self.findings) > 20 else ""
        super().__init__(f"{len(self.findings)} data-quality finding(s) let through:\n{head}{more}")
