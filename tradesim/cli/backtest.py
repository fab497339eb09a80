"""``tradesim backtest``: run an agent (or replay a saved run) and write a run folder."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, cast

import typer

from tradesim.cli._common import (
    AllowOpt,
    DataOpt,
    EndOpt,
    ExchangeOpt,
    IntervalOpt,
    NewsOpt,
    ParamOpt,
    QualityOpt,
    SymbolsOpt,
    check_interval,
    check_news,
    check_quality,
    console,
    given,
    parse_params,
    parse_symbols,
    quality_warnings,
    resolve_data,
    user_errors,
)
from tradesim.errors import ConfigError, TradesimError

if TYPE_CHECKING:
    from rich.console import Console

    from tradesim.agents.isolation import Sandbox
    from tradesim.contracts import Agent
    from tradesim.engine.backtest import BacktestConfig
    from tradesim.engine.record import RunResult

_DEFAULT_BENCHMARK = "MKT"  # the embedded sample's index-like symbol
# config field -> the flag that sets it, where the names differ
_CONFIG_FLAGS = {"agent_params": "param", "initial_cash": "cash", "source": "data",
                 "source_options": "data"}
# flags that change what a run does: refused next to --replay, which reruns the saved config
_RUN_FLAGS = ("agent", "symbols", "data", "start", "end", "interval", "exchange", "news",
              "costs", "cash", "fill", "benchmark", "param", "quality", "allow", "allow_short",
              "max_leverage", "fractional", "on_agent_error", "seed", "config", "dry_run")


def backtest(
    ctx: typer.Context,
    agent: Annotated[str, typer.Option(help="built-in name, module:Class, or TOML spec "
                                            "(name or path)")] = "sma_cross",
    symbols: SymbolsOpt = None,
    data: DataOpt = "sample",
    start: Annotated[str | None, typer.Option(
        help="first decision date (earlier bars are warm-up)")] = None,
    end: EndOpt = None,
    interval: IntervalOpt = "1d",
    exchange: ExchangeOpt = None,
    news: NewsOpt = None,
    costs: Annotated[str, typer.Option(help="zero | default | retail, or a TOML file")]
    = "default",
    cash: Annotated[float, typer.Option(help="initial cash")] = 100_000.0,
    fill: Annotated[str, typer.Option(help="next_open (default) or close: same-bar close fills, "
                                           "stamped on the result")] = "next_open",
    benchmark: Annotated[str | None, typer.Option(
        help="benchmark symbol (default MKT on the sample, none elsewhere)")] = None,
    param: ParamOpt = None,
    quality: QualityOpt = "raise",
    allow: AllowOpt = None,
    allow_short: Annotated[bool, typer.Option(help="permit negative weights")] = False,
    max_leverage: Annotated[float, typer.Option(help="cap on gross exposure / equity")] = 1.0,
    fractional: Annotated[bool, typer.Option(
        help="fractional shares instead of whole lots")] = False,
    on_agent_error: Annotated[str, typer.Option(
        help="raise | hold (recorded in the journal)")] = "raise",
    seed: Annotated[int, typer.Option(help="the run's seed, handed to the agent")] = 0,
    config: Annotated[Path | None, typer.Option(
        help="TOML config; flags typed here override it")] = None,
    out: Annotated[Path | None, typer.Option(
        help="run folder (default runs/<time>-<agent>; with --replay: not saved)")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="print the steps, the resolved config and, for LLM agents, the "
                          "estimated calls, tokens and cost; run nothing")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="with --dry-run: print the estimate and resolved config as JSON")] = False,
    replay: Annotated[Path | None, typer.Option(
        help="rerun a saved run folder exactly (its config.json; an LLM run replays its "
             "cache strictly) and check the final equity")] = None,
    isolate: Annotated[bool, typer.Option(
        "--isolate/--in-process", help="run the agent in its own process that sees only its "
                                       "Observation (sandboxed by bubblewrap where it works); "
                                       "in-process is the fast default for one's own code")
    ] = False,
    sandbox: Annotated[str, typer.Option(
        help="with --isolate: auto (bubblewrap where it works) | bwrap | process")] = "auto",
) -> None:
    """Run an agent through the engine and write a run folder with an HTML tear sheet."""
    from tradesim.engine.backtest import BacktestConfig

    out_console = console()
    with user_errors():
        if sandbox not in ("auto", "bwrap", "process"):
            raise ConfigError(f"--sandbox {sandbox!r}: use auto, bwrap or process")
        if given(ctx, "sandbox") and not isolate:
            raise ConfigError("--sandbox chooses how --isolate isolates; add --isolate")
        iso = _Isolation(isolate, cast("Sandbox", sandbox))
        if replay is not None:
            typed = [f"--{f.replace('_', '-')}" for f in _RUN_FLAGS if given(ctx, f)]
            if typed:
                raise ConfigError(f"--replay reruns the saved config; drop {', '.join(typed)} "
                                  "(only --out may go with it)")
            _replay(replay, out, out_console, iso)
            return
        if as_json and not dry_run:
            raise ConfigError("--json prints the dry run's plan; add --dry-run")
        check_interval(interval)
        check_quality(quality)
        check_news(news)
        source, options = resolve_data(data)
        fields: dict[str, Any] = {
            "agent": agent, "agent_params": parse_params(param), "source": source,
            "source_options": options, "interval": interval, "costs": costs,
            "initial_cash": cash, "fill": fill, "quality": quality, "allow": tuple(allow or ()),
            "allow_short": allow_short, "max_leverage": max_leverage, "fractional": fractional,
            "on_agent_error": on_agent_error, "seed": seed, "start": start, "end": end,
            "exchange": exchange, "news": None if news is None else str(news),
        }
        wanted = parse_symbols(symbols)
        if wanted:
            fields["symbols"] = tuple(wanted)
        if benchmark is not None or (source == "sample" and config is None):
            fields["benchmark"] = benchmark or _DEFAULT_BENCHMARK
        if config is not None:  # the file decides; only flags typed on the command line override
            fields = {key: value for key, value in fields.items()
                      if given(ctx, _CONFIG_FLAGS.get(key, key))}
        cfg = (BacktestConfig.from_toml(config, **fields) if config is not None
               else BacktestConfig.build(**fields))
        if dry_run:
            _dry_run(cfg, as_json, out_console)
            return
        folder = out or Path("runs") / (
            f"{dt.datetime.now():%Y%m%d-%H%M%S}-{cfg.agent.replace(':', '_').replace('/', '_')}")
        result = _run(cfg, None, folder, out_console, iso)
    _print_summary(out_console, result, folder)
    _exit_if_ruined(out_console, result)


def _dry_run(cfg: BacktestConfig, as_json: bool, out: Console) -> None:
    """What the backtest would step through, its resolved config and its model calls' cost."""
    from tradesim.evaluate.backtest import estimate_backtest

    with quality_warnings():
        plan = estimate_backtest(config=cfg)
    if as_json:
        typer.echo(json.dumps(plan, indent=2, sort_keys=True, default=str))
        return
    out.print(f"agent {plan['agent']}: {plan['steps']:,} steps from {plan['first']} to "
              f"{plan['last']} over {', '.join(plan['symbols'])}")
    llm = plan.get("llm")
    out.print(f"LLM estimate: {llm}" if llm is not None else "no model calls (not an LLM agent)")
    out.print("resolved config:")
    out.print_json(json.dumps(plan["config"], sort_keys=True, default=str))


class _Isolation(NamedTuple):
    isolate: bool = False
    sandbox: Sandbox = "auto"


def _run(cfg: BacktestConfig, agent: Agent | None, folder: Path | None,
         out: Console, iso: _Isolation = _Isolation()) -> RunResult:
    """Run with a progress bar; a partial record saved on failure is named before the error."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from tradesim.evaluate.backtest import run_backtest

    try:
        columns = (TextColumn("[bold]backtest[/bold] {task.description}"), BarColumn(),
                   MofNCompleteColumn(), TextColumn("bars"), TimeRemainingColumn())
        with quality_warnings(), Progress(*columns, console=out, transient=True) as progress:
            task = progress.add_task(cfg.agent, total=None)

            def _tick(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            return run_backtest(config=cfg, agent=agent, progress=_tick,
                                save_to=folder, isolate=iso.isolate, sandbox=iso.sandbox)
    except TradesimError as exc:
        if folder is not None and getattr(exc, "partial_result", None) is not None:
            out.print(f"[yellow]partial run record saved to {folder}[/yellow]")
        raise


def _replay(folder: Path, out: Path | None, shown: Console,
            iso: _Isolation = _Isolation()) -> None:
    """Rerun ``folder`` from its config.json (an LLM run in strict replay of its own cache);
    exit 1 unless the final equity equals the saved one."""
    from tradesim.engine.backtest import BacktestConfig
    from tradesim.engine.record import RunResult

    saved = RunResult.load(folder)  # ConfigError when it is not a run folder
    cfg = BacktestConfig.build(**saved.config)
    agent: Agent | None = None
    if saved.meta.get("agent") == "llm_analyst" or (folder / "llm_agent.json").is_file():
        from tradesim.agents.llm_agent import LLMAnalyst

        agent = LLMAnalyst.from_run(folder)
    result = _run(cfg, agent, out, shown, iso)
    before, after = saved.final_equity, result.final_equity
    if after == before:
        shown.print(f"[green]replay matches[/green] {folder}: final equity {after:,.2f} over "
                    f"{len(result.equity):,} bars" + (f"; saved to {out}" if out else ""))
        return
    shown.print(f"[red]replay differs[/red] from {folder}: saved final equity {before!r}, "
                f"replayed {after!r}" + (f"; replay saved to {out}" if out else ""))
    raise typer.Exit(code=1)


def _exit_if_ruined(out: Console, result: RunResult) -> None:
    """A run stopped by ruin (equity at or below zero) says so and exits 1."""
    stopped = str(result.meta.get("stopped", ""))
    if stopped.startswith("ruin"):
        last = result.equity.index[-1]
        out.print(f"[red]ruined:[/red] {stopped.partition(': ')[2] or stopped} at "
                  f"{last:%Y-%m-%d %H:%M}; the run stopped there")
        raise typer.Exit(code=1)


def _print_summary(out: Console, result: RunResult, folder: Path) -> None:
    """One screen: what ran, the headline metrics, and where the report is."""
    from rich.table import Table

    cfg, m = result.config, result.metrics
    head = Table.grid(padding=(0, 2))
    head.add_row("agent", str(cfg["agent"]), "fill", str(result.fill_mode))
    costs = cfg["costs"]
    head.add_row("symbols", ", ".join(map(str, result.weights.columns)),
                 "costs", ", ".join(f"{k} {v}" for k, v in costs.items() if v) or "none")
    if len(result.equity):
        first, last = result.equity.index[0], result.equity.index[-1]
        head.add_row("window", f"{first:%Y-%m-%d} .. {last:%Y-%m-%d}", "bars",
                     f"{len(result.equity):,}")
    isolation = str(result.meta.get("isolation", "in-process"))
    note = result.meta.get("isolation_note")
    head.add_row("isolation", isolation + (f" ({note})" if note else ""))
    out.print(head)
    table = Table(title="metrics (net of costs)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [("total return", "total_return", "{:+.2%}"), ("CAGR", "cagr", "{:+.2%}"),
            ("volatility", "volatility", "{:.2%}"), ("Sharpe", "sharpe", "{:.2f}"),
            ("Sortino", "sortino", "{:.2f}"), ("max drawdown", "max_drawdown", "{:.2%}"),
            ("turnover / yr", "turnover", "{:.1f}"), ("trades", "trades", "{:,.0f}"),
            ("win rate", "win_rate", "{:.1%}"), ("benchmark return", "benchmark_return", "{:+.2%}"),
            ("alpha", "alpha", "{:+.2%}"), ("beta", "beta", "{:.2f}")]
    for label, key, fmt in rows:
        value = m.get(key)
        if value is not None and value == value:  # skip missing and NaN
            table.add_row(label, fmt.format(value))
    out.print(table)
    for warning in result.meta.get("warnings", []):
        out.print(f"[yellow]warning:[/yellow] {warning}")
    out.print(f"run folder: {folder}   report: {folder / 'report.html'}")


def register(app: typer.Typer) -> None:
    """Add ``backtest`` to ``app``."""
    app.command("backtest")(backtest)
