"""What every command shares: the one flag vocabulary, its parsing, the console, error exits.

Every command names the same things the same way (``--symbols``, ``--data``, ``--start``,
``--end``, ``--interval``, ``--quality``, ``--allow``, ``--param``, ``--exchange``, ``--news``,
``--out``), so the option types and their parsers live here once.
"""

from __future__ import annotations

import inspect
import json
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tradesim.errors import (
    ConfigError,
    DataQualityWarning,
    EngineError,
    FatalAgentError,
    RateLimitedError,
    SourceOfflineError,
    TradesimError,
)
from tradesim.evaluate.executor import EXECUTOR_HELP

if TYPE_CHECKING:
    from rich.console import Console

    from tradesim.data.view import MarketData

DATA_HELP = ("where the bars come from: sample | synthetic | yfinance, module:Class or an "
             "installed source plug-in, or the PATH of a bar file or a folder of them")

# --- the flag vocabulary (defaults are set per command) ---------------------------------------

SymbolsOpt = Annotated[list[str] | None, typer.Option(
    "--symbols", help="symbols, comma-separated (A,B) or the flag repeated")]
DataOpt = Annotated[str, typer.Option("--data", help=DATA_HELP)]
StartOpt = Annotated[str | None, typer.Option("--start", help="first date, e.g. 2015-01-01")]
EndOpt = Annotated[str | None, typer.Option("--end", help="last date, inclusive")]
IntervalOpt = Annotated[str, typer.Option("--interval", help="1m 2m 5m 15m 30m 1h 1d")]
QualityOpt = Annotated[str, typer.Option(
    "--quality", help="on data-quality findings: raise | warn | repair")]
AllowOpt = Annotated[list[str] | None, typer.Option(
    "--allow", help="a quality check to skip, e.g. zero_volume (repeatable)")]
ParamOpt = Annotated[list[str] | None, typer.Option(
    "--param", help="agent parameter NAME=VALUE, VALUE as JSON (repeatable); a dotted NAME "
                    "or a JSON object merges into the spec's table, e.g. "
                    "--param gateway='{\"temperature\": 0.2}'")]
ExchangeOpt = Annotated[str | None, typer.Option(
    "--exchange", help="trading calendar, e.g. XNYS, XLON or 24/7 (default: the source's)")]
NewsOpt = Annotated[Path | None, typer.Option(
    "--news", help="a news file (CSV or Parquet) loaded with the market")]
ExecutorOpt = Annotated[str, typer.Option("--executor", help=EXECUTOR_HELP)]

# --- console and errors -------------------------------------------------------------------------


def console() -> Console:
    """A rich console on stdout; piped output gets room for wide tables instead of 80 columns."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160)


def exit_code(exc: TradesimError) -> int:
    """2 for bad input or config, 1 for a run that failed once started."""
    if isinstance(exc, ConfigError):
        return 2
    if isinstance(exc, EngineError | FatalAgentError | RateLimitedError | SourceOfflineError):
        return 1
    return 2


def fail(exc: TradesimError) -> typer.Exit:
    """Print ``exc`` as one red message on stderr (no traceback) and return the exit to raise."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(str(exc))}")
    return typer.Exit(code=exit_code(exc))


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a TradesimError (or a flag-built settings model's ValidationError) raised inside
    into one message and its exit code."""
    from pydantic import ValidationError

    try:
        yield
    except TradesimError as exc:
        raise fail(exc) from None
    except ValidationError as exc:  # a settings model built from flags (train, oos)
        lines = [f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}"
                 for e in exc.errors()]
        raise fail(ConfigError(f"invalid {exc.title}:\n  " + "\n  ".join(lines))) from None


@contextmanager
def quality_warnings() -> Iterator[None]:
    """Show data-quality findings let through (``--quality warn``) as yellow lines on stderr
    (stdout may carry JSON)."""
    from rich.console import Console
    from rich.markup import escape

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataQualityWarning)
        try:
            yield
        finally:
            shown = Console(stderr=True, soft_wrap=True)
            for w in caught:
                if issubclass(w.category, DataQualityWarning):
                    shown.print(f"[yellow]data quality:[/yellow] {escape(str(w.message))}")
                else:  # not ours to swallow
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def given(ctx: typer.Context, name: str) -> bool:
    """Whether parameter ``name`` was typed on the command line (not left at its default)."""
    source = ctx.get_parameter_source(name)  # typer may ship its own click: compare by name
    return getattr(source, "name", None) == "COMMANDLINE"


# --- parsing --------------------------------------------------------------------------------


def parse_symbols(values: Sequence[str] | None) -> list[str] | None:
    """``--symbols A,B --symbols C`` (or positional words) to ``[A, B, C]``; None when none."""
    out: list[str] = []
    for value in values or ():
        for symbol in value.replace(",", " ").split():
            if symbol not in out:
                out.append(symbol)
    return out or None


def parse_params(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``NAME=VALUE`` pairs to a dict; VALUE is JSON (plain text when it is not JSON).

    ``a.b=1`` sets key ``b`` of table ``a``; tables merge key by key with earlier pairs, as
    the registry merges them into the spec's own tables.
    """
    from tradesim.agents.registry import merge_params

    params: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--param {pair!r}: use NAME=VALUE, e.g. --param fast=20 or "
                              "--param gateway.temperature=0.2")
        try:
            value: Any = json.loads(text)
        except json.JSONDecodeError:
            value = text.strip()
        for part in reversed(key.split(".")[1:]):
            value = {part: value}
        params = merge_params(params, {key.split(".")[0]: value})
    return params


def resolve_data(spec: str) -> tuple[str, dict[str, Any]]:
    """``--data`` to (source name, source options): a source name, or a path for ``files``."""
    from tradesim.data.load import SOURCES
    from tradesim.plugins import installed

    names = [s for s in SOURCES if s != "files"]
    if spec == "files":
        raise ConfigError("--data files needs the path itself: --data PATH (a bar file or a "
                          "folder of bar files)")
    if spec in (*names, "yahoo") or spec in installed("source"):
        return spec, {}
    path = Path(spec).expanduser()
    if path.exists():
        return "files", {"root": str(path)}
    if ":" in spec and not spec.startswith((".", "/", "~")):
        return spec, {}  # module:Class; open_source names what fails
    raise ConfigError(f"--data {spec!r} is neither a data source ({', '.join(names)}, "
                      "module:Class or an installed plug-in) nor an existing file or folder; "
                      "check the spelling or the path")


def check_interval(interval: str | None) -> None:
    """Refuse an unknown ``--interval`` before any data is read."""
    from tradesim.data.bars import INTERVALS

    if interval is not None and interval not in INTERVALS:
        raise ConfigError(f"--interval {interval!r} is not a bar interval; use one of "
                          f"{', '.join(INTERVALS)}")


def check_quality(quality: str) -> None:
    """Refuse an unknown ``--quality`` before any data is read."""
    from tradesim.data.quality import POLICIES

    if quality not in POLICIES:
        raise ConfigError(f"--quality {quality!r} is unknown; use one of {', '.join(POLICIES)}")


def check_news(news: Path | None) -> None:
    """Refuse a ``--news`` path that is not a file."""
    if news is not None and not news.is_file():
        raise ConfigError(f"--news {news}: no such file; pass a CSV or Parquet file of dated "
                          "headlines")


def load_kwargs(*, exchange: str | None = None, news: Path | None = None) -> dict[str, Any]:
    """``exchange=`` and ``news=`` for :func:`load_market`, each only where it accepts it."""
    from tradesim.data.load import load_market

    accepted = inspect.signature(load_market).parameters
    out: dict[str, Any] = {}
    if exchange is not None:
        if "exchange" not in accepted:
            raise ConfigError("--exchange is not supported by this version of the data layer")
        out["exchange"] = exchange
    if news is not None:
        if "news" not in accepted:
            raise ConfigError("--news is not supported by this version of the data layer")
        out["news"] = str(news)
    return out


def load(*, data: str, symbols: Sequence[str] | None, start: str | None = None,
         end: str | None = None, interval: str = "1d", quality: str = "raise",
         allow: Sequence[str] = (), exchange: str | None = None, news: Path | None | bool = None,
         options: dict[str, Any] | None = None) -> MarketData:
    """The market ``--data`` and the other data flags name; quality warnings shown in yellow.

    ``data`` is a source name as :func:`resolve_data` returns it, with ``options`` for it.
    """
    from tradesim.data.load import load_market

    check_interval(interval)
    check_quality(quality)
    extra = load_kwargs(exchange=exchange, news=news if isinstance(news, Path) else None)
    if isinstance(news, bool):
        extra["news"] = news
    with quality_warnings():
        market = load_market(symbols=list(symbols) if symbols else None, source=data,
                             start=start, end=end, interval=interval, quality=quality,
                             allow=tuple(allow), source_options=options or None, **extra)
    return market
