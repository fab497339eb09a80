"""``tradesim lookahead-check``: change only the future, and the past decisions must not change."""

from __future__ import annotations

from functools import partial
from typing import Annotated

import typer

from tradesim.cli._common import (
    AllowOpt,
    DataOpt,
    EndOpt,
    ExchangeOpt,
    IntervalOpt,
    ParamOpt,
    QualityOpt,
    StartOpt,
    SymbolsOpt,
    console,
    parse_params,
    user_errors,
)


def lookahead_check(
    agent: Annotated[str, typer.Option(help="built-in name, module:Class, or TOML spec")],
    data: DataOpt = "sample",
    symbols: SymbolsOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    interval: IntervalOpt = "1d",
    exchange: ExchangeOpt = None,
    quality: QualityOpt = "warn",
    allow: AllowOpt = None,
    param: ParamOpt = None,
    twins: Annotated[int, typer.Option(help="twins per cut (alterations alternate)")] = 2,
    seed: Annotated[int, typer.Option(help="seed of the twins' random walks")] = 0,
    isolate: Annotated[bool, typer.Option(help="run the agent in its own (sandboxed) "
                                               "process too")] = False,
) -> None:
    """Run AGENT on the market and on twins whose future is altered; exit 1 on a leak."""
    from rich.table import Table

    from tradesim.agents.registry import load_agent
    from tradesim.cli.evaluate import _market
    from tradesim.engine.backtest import BacktestConfig
    from tradesim.evaluate.lookahead import check_lookahead

    shown = console()
    with user_errors():
        market = _market(data, symbols, start, end, interval, quality, allow, exchange)
        config = BacktestConfig.build(symbols=tuple(market.symbols), start=start, end=end,
                                      interval=interval)
        make = partial(load_agent, agent, **parse_params(param))
        make()  # a bad name or parameter fails here, before any run
        findings = check_lookahead(make_agent=make, data=market, config=config, twins=twins,
                                   seed=seed, isolate=isolate)
    table = Table(title=f"look-ahead check: {agent} on {', '.join(market.symbols)}")
    for col in ("cut", "twin", "route", "first differing step", "time", "real", "twin"):
        table.add_column(col, overflow="fold")
    for f in findings:
        table.add_row(f.cut[:10], str(f.twin), f.route, str(f.step) if f.step >= 0 else "-",
                      f.time[:19], f.real, f.twin_decision)
    if findings:
        shown.print(table)
        shown.print(f"[red]LEAK: {len(findings)} finding(s); {agent} used information from "
                    "after its decision time[/red]")
        raise typer.Exit(code=1)
    shown.print(f"[green]clean: {agent} decided the same on every twin up to each cut[/green]")


def register(app: typer.Typer) -> None:
    """Add ``lookahead-check`` to ``app``."""
    app.command("lookahead-check")(lookahead_check)
