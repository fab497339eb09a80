"""The exceptions tradesim raises; each message names the input at fault and how to fix it."""

from __future__ import annotations


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
