"""``tradesim data``: summarise a market, fetch into the cache, list the cache, verify data."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tradesim.cli._common import (
    AllowOpt,
    DataOpt,
    EndOpt,
    ExchangeOpt,
    IntervalOpt,
    NewsOpt,
    QualityOpt,
    StartOpt,
    SymbolsOpt,
    check_interval,
    check_news,
    check_quality,
    console,
    load,
    load_kwargs,
    parse_symbols,
    resolve_data,
    user_errors,
)
from tradesim.errors import ConfigError, TradesimError

if TYPE_CHECKING:
    from rich.table import Table

CacheOpt = Annotated[Path | None, typer.Option(
    "--cache", help="cache folder (default $TRADESIM_CACHE)")]


def summary(
    ctx: typer.Context,
    data: DataOpt = "sample",
    symbols: SymbolsOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    interval: IntervalOpt = "1d",
    exchange: ExchangeOpt = None,
    news: NewsOpt = None,
) -> None:
    """Summarise a market (default: the embedded sample): symbols, dates, bars, fingerprints."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    with user_errors():
        check_news(news)
        source, options = resolve_data(data)
        market = load(data=source, options=options, symbols=parse_symbols(symbols), start=start,
                      end=end, interval=interval, quality="warn", exchange=exchange,
                      news=news if news is not None else True)
    prints = market.fingerprints()
    title = ("Embedded sample (offline default): synthetic, seeded, adjusted daily bars"
             if data == "sample" else f"{data}: {interval} bars")
    table = Table(title=title)
    for col in ("symbol", "first bar (UTC)", "last bar (UTC)", "bars", "fingerprint"):
        table.add_column(col, justify="right" if col == "bars" else "left")
    total = 0
    for symbol in market.symbols:
        bars = market.full(symbol)
        total += len(bars)
        first, last = ((str(bars.time[0])[:16].replace("T", " "),
                        str(bars.time[-1])[:16].replace("T", " ")) if len(bars) else ("-", "-"))
        table.add_row(symbol, first, last, f"{len(bars):,}", prints[symbol])
    out = console()
    out.print(table)
    out.print(f"{len(market.symbols)} symbols, {total:,} bars, {len(market.news):,} news "
              f"items (fingerprint {prints.get('news', '-')})")


def fetch(
    names: Annotated[list[str] | None, typer.Argument(
        help="tickers, e.g. AAPL MSFT ^GSPC (or --symbols)", show_default=False)] = None,
    symbols: SymbolsOpt = None,
    data: DataOpt = "yfinance",
    start: Annotated[str | None, typer.Option(
        help="first date (default: the whole history)")] = None,
    end: Annotated[str | None, typer.Option(help="last date, inclusive (default: now)")] = None,
    interval: IntervalOpt = "1d",
    raw: Annotated[bool, typer.Option("--raw", help="unadjusted prices (yfinance)")] = False,
    refresh: Annotated[bool, typer.Option(help="fetch the cached window again")] = False,
    cache: CacheOpt = None,
) -> None:
    """Fetch bars into the local cache (only the missing ranges), one status line per symbol."""
    from rich.markup import escape
    from rich.progress import Progress

    from tradesim.data.load import open_source
    from tradesim.data.store import Store

    out = console()
    with user_errors():
        wanted = parse_symbols([*(names or ()), *(symbols or ())])
        if not wanted:
            raise ConfigError("name the symbols to fetch: tradesim data fetch AAPL MSFT (or "
                              "--symbols AAPL,MSFT)")
        check_interval(interval)
        source, options = resolve_data(data)
        if source in ("yfinance", "yahoo"):
            options["auto_adjust"] = not raw
        src = open_source(source, **options)
        store = Store(cache)
    failed = 0
    with Progress(console=out, transient=True) as progress:
        task = progress.add_task(f"fetching from {src.name}", total=len(wanted))
        for symbol in wanted:
            progress.update(task, description=f"{symbol} from {src.name}")
            try:
                bars = store.get(src, symbol, interval=interval, start=start, end=end,
                                 refresh=refresh)
            except TradesimError as exc:
                failed += 1
                out.print(f"[red]{escape(symbol)}: {escape(str(exc))}[/red]")
            else:
                span = (f"{str(bars.time[0])[:10]} .. {str(bars.time[-1])[:10]}" if len(bars)
                        else "no bars in this window")
                out.print(f"[green]{escape(symbol)}[/green]: {len(bars):,} {interval} bars, "
                          f"{span}, fingerprint {bars.fingerprint()}")
            progress.advance(task)
    out.print(f"cache: {store.root}")
    if failed:
        raise typer.Exit(code=2)


def list_cache(cache: CacheOpt = None) -> None:
    """Table of what the local cache holds."""
    from rich.table import Table

    from tradesim.data.store import Store

    with user_errors():
        store = Store(cache)
        entries = store.entries()
    out = console()
    if not entries:
        out.print(f"the cache at {store.root} is empty; fill it with: tradesim data fetch AAPL")
        return
    table = Table(title=f"cache {store.root}")
    table.add_column("source", overflow="fold")
    for col in ("symbol", "interval", "adj", "rows", "first", "last", "fingerprint", "fetched"):
        table.add_column(col, justify="right" if col == "rows" else "left", no_wrap=True)
    for e in entries:
        table.add_row(e.source, e.symbol, e.interval, "yes" if e.adjusted else "no",
                      f"{e.rows:,}", str(e.first)[:10], str(e.last)[:10], e.fingerprint,
                      e.fetched_at[:10])
    out.print(table)


def verify(
    path: Annotated[Path | None, typer.Argument(
        help="a bar file or a folder of them (default: the cache)", show_default=False)] = None,
    data: Annotated[str | None, typer.Option(
        "--data", help="check a source instead: sample | synthetic | yfinance, module:Class "
                       "or a plug-in name")] = None,
    symbols: SymbolsOpt = None,
    interval: Annotated[str | None, typer.Option(
        help="bar interval (default: the source's)")] = None,
    quality: QualityOpt = "raise",
    allow: AllowOpt = None,
    exchange: ExchangeOpt = None,
    news: NewsOpt = None,
    cache: CacheOpt = None,
) -> None:
    """Run the data-quality checks over PATH (or --data, or the cache) and print every finding.

    --quality raise exits 1 when anything is found; warn and repair only report.
    """
    from tradesim.data.load import verify_source
    from tradesim.data.store import Store

    out = console()
    with user_errors():
        check_quality(quality)
        check_interval(interval)
        check_news(news)
        if path is not None and data is not None:
            raise ConfigError(f"give PATH or --data, not both (PATH {path} already names the "
                              "data)")
        skip = tuple(allow or ())
        if path is None and data is None:
            store = Store(cache)
            findings = store.verify(allow=skip, **({"exchange": exchange} if exchange else {}))
            what = f"cache {store.root} ({len(store.entries())} entries)"
        else:
            if path is not None and not path.exists():
                raise ConfigError(f"{path}: no such file or folder; pass a bar file or a folder "
                                  "of bar files (or --data for a named source)")
            source, options = (("files", {"root": str(path)}) if path is not None
                               else resolve_data(str(data)))
            extra: dict[str, Any] = {"exchange": exchange} if exchange else {}
            findings = verify_source(source, symbols=parse_symbols(symbols), interval=interval,
                                     allow=skip, **extra, **options)
            what = f"{path}" if path is not None else f"source {data}"
        if news is not None:
            _verify_news(news, exchange, out)
    if not findings:
        out.print(f"[green]no findings[/green] in {what}")
        return
    out.print(_findings_table(findings, f"{len(findings)} finding(s) in {what}"))
    if quality == "raise":
        raise typer.Exit(code=1)


def _verify_news(news: Path, exchange: str | None, out: Any) -> None:
    """Read the news file as a load would (a bad row is a DataFormatError naming it)."""
    from tradesim.data.news import read_news

    load_kwargs(news=news)  # refuses where the data layer takes no news file
    items = read_news(news, exchange=exchange) if exchange else read_news(news)
    out.print(f"news {news}: {len(items):,} items read")


def _findings_table(findings: list, title: str) -> Table:
    """Findings as a table: symbol, date, check, problem, fix."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("symbol", "date", "check", "problem", "fix"):
        table.add_column(col, overflow="fold")
    for f in findings:
        day = "" if f.time is None else str(f.time)[:10]
        table.add_row(f.symbol, day, f.check, f.message, f.fix)
    return table


def register(app: typer.Typer) -> None:
    """Add the ``data`` group to ``app``."""
    group = typer.Typer(help="Market data: summarise a source, fetch into the cache, list, verify.",
                        invoke_without_command=True)
    group.callback()(summary)
    group.command("fetch")(fetch)
    group.command("list")(list_cache)
    group.command("verify")(verify)
    app.add_typer(group, name="data")
