"""The errors the paper daemon raises; each names the session and says how to fix it."""

from __future__ import annotations

from tradesim.errors import ConfigError, TradesimError


class PaperSessionError(TradesimError):
    """A paper session cannot run as asked (names the session and the fix)."""


class SessionLockedError(PaperSessionError):
    """Another daemon holds the session's lock."""


class ReconciliationError(PaperSessionError):
    """The session's log, its checkpoint and the broker disagree: the daemon refuses to start."""


class SchemaError(PaperSessionError):
    """The session database has a schema this version cannot read or migrate."""


class PaperConfigError(ConfigError):
    """A session TOML is invalid (names the key)."""
