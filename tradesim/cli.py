"""The ``tradesim`` command: data, backtest, audit, evaluate, llm, train.

Each command group lives in its own section below; logic lives in the library, this file only
parses arguments, shows progress and prints summaries.
"""

from __future__ import annotations

import typer

app = typer.Typer(help="Backtest, audit, evaluate and train trading agents on one honest engine.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)

# --- data commands -------------------------------------------------------------------------

from pathlib import Path as _DataPath
from typing import Annotated as _Ann

from tradesim.errors import DataQualityWarning
from tradesim.errors import TradesimError as _DataError

data_app = typer.Typer(help="Market data: the embedded sample, fetch into the cache, list, verify.",
                       invoke_without_command=True)
app.add_typer(data_app, name="data")

_SOURCE_HELP = "sample | synthetic | files | yfinance (or module:Class)"


def _data_fail(exc: Exception) -> typer.Exit:
    """Print a tradesim error as one red line and give exit code 2."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}")
    return typer.Exit(code=2)


def _data_source(source: str, path: _DataPath | None, raw: bool, quality: str | None = None):
    """Open the named source with the options its CLI flags map to."""
    from tradesim.data.load import open_source

    options: dict[str, object] = {}
    if source == "files":
        if path is None:
            raise typer.BadParameter("--source files needs --path FOLDER_OR_FILE")
        options["root"] = path
        if quality is not None:
            options["quality"] = quality
    if source in ("yfinance", "yahoo"):
        options["auto_adjust"] = not raw
    return open_source(source, **options)


def _data_console():
    """A rich console; piped output gets room for the wide tables instead of 80 columns."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160)


def _findings_table(findings: list, title: str):
    from rich.table import Table

    table = Table(title=title)
    for col in ("symbol", "date", "check", "problem", "fix"):
        table.add_column(col, overflow="fold")
    for f in findings:
        day = "" if f.time is None else str(f.time)[:10]
        table.add_row(f.symbol, day, f.check, f.message, f.fix)
    return table


@data_app.callback()
def data_summary(ctx: typer.Context) -> None:
    """Summarise the embedded default market (symbols, dates, bars, news, fingerprints)."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from tradesim.data.load import load_market

    try:
        market = load_market(symbols=None, source="sample")
    except _DataError as exc:
        raise _data_fail(exc) from None
    prints = market.fingerprints()
    table = Table(title="Embedded sample (offline default): synthetic, seeded, adjusted daily bars")
    for col, justify in (("symbol", "left"), ("first bar (UTC)", "left"),
                         ("last bar (UTC)", "left"), ("bars", "right"), ("fingerprint", "left")):
        table.add_column(col, justify=justify)
    total = 0
    for symbol in market.symbols:
        bars = market.full(symbol)
        total += len(bars)
        table.add_row(symbol, str(bars.time[0])[:16].replace("T", " "),
                      str(bars.time[-1])[:16].replace("T", " "), f"{len(bars):,}", prints[symbol])
    console = _data_console()
    console.print(table)
    console.print(f"{len(market.symbols)} symbols, {total:,} bars, {len(market.news):,} news "
                  f"items (fingerprint {prints.get('news', '-')})")


@data_app.command("fetch")
def data_fetch(
    symbols: _Ann[list[str], typer.Argument(help="tickers, e.g. AAPL MSFT ^GSPC")],
    source: _Ann[str, typer.Option(help=_SOURCE_HELP)] = "yfinance",
    start: _Ann[str | None, typer.Option(help="first date (default: the whole history)")] = None,
    end: _Ann[str | None, typer.Option(help="last date, inclusive (default: now)")] = None,
    interval: _Ann[str, typer.Option(help="1m 2m 5m 15m 30m 1h 1d")] = "1d",
    path: _Ann[_DataPath | None, typer.Option(help="folder or file, for --source files")] = None,
    raw: _Ann[bool, typer.Option("--raw", help="unadjusted prices (yfinance)")] = False,
    refresh: _Ann[bool, typer.Option(help="fetch the cached window again")] = False,
    cache: _Ann[_DataPath | None,
                typer.Option(help="cache folder (default $TRADESIM_CACHE)")] = None,
) -> None:
    """Fetch bars into the local cache (only the missing ranges), one status line per symbol."""
    from rich.markup import escape
    from rich.progress import Progress

    from tradesim.data.store import Store

    console = _data_console()
    try:
        src = _data_source(source, path, raw)
        store = Store(cache)
    except _DataError as exc:
        raise _data_fail(exc) from None
    failed = 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"fetching from {src.name}", total=len(symbols))
        for symbol in symbols:
            progress.update(task, description=f"{symbol} from {src.name}")
            try:
                bars = store.get(src, symbol, interval=interval, start=start, end=end,
                                 refresh=refresh)
            except _DataError as exc:
                failed += 1
                console.print(f"[red]{escape(symbol)}: {escape(str(exc))}[/red]")
            else:
                span = (f"{str(bars.time[0])[:10]} .. {str(bars.time[-1])[:10]}" if len(bars)
                        else "no bars in this window")
                console.print(f"[green]{escape(symbol)}[/green]: {len(bars):,} {interval} bars, "
                              f"{span}, fingerprint {bars.fingerprint()}")
            progress.advance(task)
    console.print(f"cache: {store.root}")
    if failed:
        raise typer.Exit(code=2)


@data_app.command("list")
def data_list(cache: _Ann[_DataPath | None, typer.Option(help="cache folder")] = None) -> None:
    """Table of what the local cache holds."""
    from rich.table import Table

    from tradesim.data.store import Store

    try:
        store = Store(cache)
        entries = store.entries()
    except _DataError as exc:
        raise _data_fail(exc) from None
    console = _data_console()
    if not entries:
        console.print(f"the cache at {store.root} is empty; fill it with: tradesim data fetch AAPL")
        return
    table = Table(title=f"cache {store.root}")
    table.add_column("source", overflow="fold")
    for col in ("symbol", "interval", "adj", "rows", "first", "last", "fingerprint", "fetched"):
        table.add_column(col, justify="right" if col == "rows" else "left", no_wrap=True)
    for e in entries:
        table.add_row(e.source, e.symbol, e.interval, "yes" if e.adjusted else "no",
                      f"{e.rows:,}", str(e.first)[:10], str(e.last)[:10], e.fingerprint,
                      e.fetched_at[:10])
    console.print(table)


@data_app.command("verify")
def data_verify(
    source: _Ann[str | None, typer.Option(
        help=f"check a source instead of the cache: {_SOURCE_HELP}")] = None,
    path: _Ann[_DataPath | None, typer.Option(help="folder or file, for --source files")] = None,
    symbols: _Ann[list[str] | None, typer.Option("--symbol", help="only these symbols")] = None,
    interval: _Ann[str | None, typer.Option(help="bar interval (default: the source's)")] = None,
    quality: _Ann[str, typer.Option(
        help="raise: exit 1 on findings; warn: report only")] = "raise",
    allow: _Ann[list[str] | None,
                typer.Option("--allow", help="skip a check (repeatable)")] = None,
    cache: _Ann[_DataPath | None, typer.Option(help="cache folder")] = None,
) -> None:
    """Run the data-quality checks over the cache (or a source) and print every finding."""

    from tradesim.data.load import verify_source
    from tradesim.data.store import Store

    if quality not in ("raise", "warn"):
        raise typer.BadParameter("--quality is raise or warn")
    if path is not None and source is None:
        source = "files"
    try:
        if source is None:
            store = Store(cache)
            findings = store.verify(allow=tuple(allow or ()))
            what = f"cache {store.root} ({len(store.entries())} entries)"
        else:
            src = _data_source(source, path, raw=False, quality="warn")
            findings = verify_source(src, symbols=symbols, interval=interval,
                                     allow=tuple(allow or ()))
            what = f"source {src.name}" + (f" {path}" if path else "")
    except _DataError as exc:
        raise _data_fail(exc) from None
    console = _data_console()
    if not findings:
        console.print(f"[green]no findings[/green] in {what}")
        return
    console.print(_findings_table(findings, f"{len(findings)} finding(s) in {what}"))
    if quality == "raise":
        raise typer.Exit(code=1)

# --- backtest commands ---------------------------------------------------------------------

_DEFAULT_BENCHMARK = "MKT"  # the embedded sample's index-like symbol


def _parse_params(pairs: list[str]) -> dict[str, object]:
    """``key=value`` pairs to a dict, values read as TOML scalars (numbers, booleans, strings)."""
    import tomllib

    params: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--param {pair!r}: use key=value, e.g. --param fast=20")
        try:
            params[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            params[key.strip()] = value.strip()
    return params


@app.command("backtest")
def backtest(
    ctx: typer.Context,
    agent: _Ann[str, typer.Option(help="built-in name, module:Class, or TOML spec "
                                       "(tradesim.agents.registry lists them)")] = "sma_cross",
    symbols: _Ann[str | None, typer.Option(help="comma-separated; default: the source's universe "
                                               "less the benchmark")] = None,
    start: _Ann[str | None, typer.Option(help="first decision date (earlier bars are warm-up)")]
    = None,
    end: _Ann[str | None, typer.Option(help="last date, inclusive")] = None,
    source: _Ann[str, typer.Option(help=_SOURCE_HELP)] = "sample",
    path: _Ann[_DataPath | None, typer.Option(help="folder or file, for --source files")] = None,
    interval: _Ann[str, typer.Option(help="1m 2m 5m 15m 30m 1h 1d")] = "1d",
    costs: _Ann[str, typer.Option(help="zero | default | retail, or a TOML file")] = "default",
    cash: _Ann[float, typer.Option(help="initial cash")] = 100_000.0,
    fill: _Ann[str, typer.Option(help="next_open (default) or close: same-bar close fills, "
                                      "stamped on the result")] = "next_open",
    benchmark: _Ann[str | None, typer.Option(help="benchmark symbol (default MKT on the sample, "
                                                  "none elsewhere)")] = None,
    param: _Ann[list[str] | None, typer.Option(help="agent parameter key=value (repeatable)")]
    = None,
    quality: _Ann[str, typer.Option(help="raise | warn | repair on data-quality findings")]
    = "raise",
    allow: _Ann[list[str] | None, typer.Option(help="quality check to skip, e.g. zero_volume "
                                                     "(repeatable)")] = None,
    allow_short: _Ann[bool, typer.Option(help="permit negative weights")] = False,
    max_leverage: _Ann[float, typer.Option(help="cap on gross exposure / equity")] = 1.0,
    fractional: _Ann[bool, typer.Option(help="fractional shares instead of whole lots")] = False,
    on_agent_error: _Ann[str, typer.Option(help="raise | hold (recorded in the journal)")]
    = "raise",
    config: _Ann[_DataPath | None, typer.Option(help="TOML config; flags given here override it")]
    = None,
    out: _Ann[_DataPath | None, typer.Option(help="run folder (default runs/<time>-<agent>)")]
    = None,
    dry_run: _Ann[bool, typer.Option("--dry-run", help="print the steps and, for LLM agents, the "
                                                       "estimated calls, tokens and cost; run "
                                                       "nothing")] = False,
) -> None:
    """Run an agent through the engine and write a run folder with an HTML tear sheet."""
    import datetime as dt

    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn)

    from tradesim.engine.backtest import BacktestConfig, estimate_backtest, run_backtest

    console = _data_console()
    fields: dict[str, object] = {
        "agent": agent, "agent_params": _parse_params(param or []), "source": source,
        "interval": interval, "costs": costs, "initial_cash": cash, "fill": fill,
        "quality": quality, "allow": tuple(allow or ()), "allow_short": allow_short,
        "max_leverage": max_leverage, "fractional": fractional, "on_agent_error": on_agent_error,
        "start": start, "end": end,
    }
    if symbols:
        fields["symbols"] = symbols
    if path is not None:
        fields["source_options"] = {"root": str(path)}
    if benchmark is not None or (source == "sample" and config is None):
        fields["benchmark"] = benchmark or _DEFAULT_BENCHMARK
    if config is not None:  # the file decides; only flags typed on the command line override it
        fields = {key: value for key, value in fields.items()
                  if _given(ctx, _CONFIG_FLAGS.get(key, key))}
    try:
        cfg = (BacktestConfig.from_toml(config, **fields) if config
               else BacktestConfig.build(**fields))
        folder = out or _DataPath("runs") / (
            f"{dt.datetime.now():%Y%m%d-%H%M%S}-{cfg.agent.replace(':', '_').replace('/', '_')}")
        if dry_run:
            _print_estimate(console, estimate_backtest(config=cfg))
            return
        with Progress(TextColumn("[bold]backtest[/bold] {task.description}"), BarColumn(),
                      MofNCompleteColumn(), TextColumn("bars"), TimeRemainingColumn(),
                      console=console, transient=True) as progress:
            task = progress.add_task(cfg.agent, total=None)

            def _tick(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            result = run_backtest(config=cfg, progress=_tick, save_to=folder)
    except _DataError as exc:
        partial = getattr(exc, "partial_result", None)
        if partial is not None:
            console.print(f"[yellow]partial run record saved to {folder}[/yellow]")
        raise _data_fail(exc) from None
    _print_summary(console, result, folder)


# config field -> the backtest flag that sets it, where the names differ
_CONFIG_FLAGS = {"agent_params": "param", "initial_cash": "cash", "source_options": "path"}


def _given(ctx: typer.Context, flag: str) -> bool:
    """Whether ``flag`` was typed on the command line (not left at its default)."""
    source = ctx.get_parameter_source(flag)  # typer may ship its own click: compare by name
    return getattr(source, "name", None) == "COMMANDLINE"


def _print_estimate(console, plan: dict) -> None:
    """The dry run: what the backtest would step through and what its model calls would cost."""
    console.print(f"agent {plan['agent']}: {plan['steps']:,} steps from {plan['first']} to "
                  f"{plan['last']} over {', '.join(plan['symbols'])}")
    llm = plan.get("llm")
    console.print(f"LLM estimate: {llm}" if llm is not None else "no model calls (not an LLM agent)")


def _print_summary(console, result, folder: _DataPath) -> None:
    """One screen: what ran, the headline metrics, and where the report is."""
    from rich.table import Table

    cfg, m = result.config, result.metrics
    head = Table.grid(padding=(0, 2))
    head.add_row("agent", str(cfg["agent"]), "fill", str(result.fill_mode))
    costs = cfg["costs"]
    head.add_row("symbols", ", ".join(map(str, result.weights.columns)),
                 "costs", ", ".join(f"{k} {v}" for k, v in costs.items() if v) or "none")
    first, last = result.equity.index[0], result.equity.index[-1]
    head.add_row("window", f"{first:%Y-%m-%d} .. {last:%Y-%m-%d}", "bars", f"{len(result.equity):,}")
    console.print(head)
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
    console.print(table)
    for warning in result.meta.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(f"run folder: {folder}   report: {folder / 'report.html'}")

# --- audit and evaluate commands -----------------------------------------------------------

from tradesim.errors import TradesimError as _EvalError  # noqa: E402


def _eval_market(source: str, path: _DataPath | None, symbols: str | None, start: str | None,
                 end: str | None, quality: str):
    """Load the market an audit or leaderboard runs on (sample by default)."""
    import warnings

    from tradesim.data.load import load_market

    if source == "files" and path is None:
        raise typer.BadParameter("--source files needs --path FOLDER_OR_FILE")
    wanted = [s for s in (symbols or "").replace(",", " ").split() if s] or None
    if wanted is None and source == "sample":  # the sample's index is a benchmark, not a trade
        from tradesim.data.synthetic import DEFAULT_SYMBOLS, INDEX_SYMBOL

        wanted = [s for s in DEFAULT_SYMBOLS if s != INDEX_SYMBOL]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataQualityWarning)  # quality=warn: let through, shown
        market = load_market(symbols=wanted, source=source, start=start, end=end,
                             quality=quality,
                             source_options={"root": path} if source == "files" else None)
    for w in caught:
        if issubclass(w.category, DataQualityWarning):
            _data_console().print(f"[yellow]data quality:[/yellow] {w.message}")
    return market


def _eval_progress(console, total: int):
    """A rich progress bar advanced once per agent run; returns (progress, callback)."""
    from rich.progress import Progress

    progress = Progress(console=console, transient=True)
    task = progress.add_task("running", total=total)

    def step(name: str) -> None:
        progress.update(task, advance=1, description=f"running {name}")

    return progress, step


@app.command("audit")
def audit_command(
    source: str = typer.Option("sample", help="sample | files | synthetic (or module:Class)"),
    path: _DataPath | None = typer.Option(None, help="file or folder, for --source files "
                                                     "(e.g. ../shared/data/daily/spy.us.txt)"),
    symbols: str | None = typer.Option(None, help="comma-separated symbols (default: all)"),
    start: str | None = typer.Option(None, help="first date, e.g. 2015-01-01"),
    end: str | None = typer.Option(None, help="last date, inclusive"),
    costs: str = typer.Option("default", help="cost preset (zero, default, retail) or TOML"),
    score: str = typer.Option("balanced", help="score preset (balanced, strict, growth) or TOML"),
    noise_seeds: int = typer.Option(5, help="shuffled markets the noise trader runs on"),
    quality: str = typer.Option("warn", help="data quality policy: raise | warn | repair"),
    out: _DataPath = typer.Option(_DataPath("runs/audit"), help="folder for audit.json/csv/html"),
) -> None:
    """Run the adversarial canaries through the engine; exit 1 if any row misses its goal."""
    from tradesim.evaluate.audit import CANARIES, run_audit

    console = _data_console()
    try:
        market = _eval_market(source, path, symbols, start, end, quality)
        progress, step = _eval_progress(console, 2 * len(CANARIES) + 3 * noise_seeds + 2)
        with progress:
            report = run_audit(data=market, costs=costs, score_config=score,
                               noise_seeds=noise_seeds, progress=step)
        folder = report.save(out)
    except _EvalError as exc:
        raise _data_fail(exc) from None
    console.print(report.table())
    console.print(f"report: {folder / 'audit.html'}")
    if not report.passed:
        console.print(f"[red]{len(report.failures())} row(s) miss their goal: "
                      f"{', '.join(r.canary for r in report.failures())}[/red]")
        raise typer.Exit(code=1)
    console.print("[green]every row meets its goal[/green]")


@app.command("evaluate")
def evaluate_command(
    agents: str = typer.Option("sma_cross,macd,buy_and_hold",
                               help="comma-separated agents: built-in names, module:Class, specs"),
    seeds: int = typer.Option(1, help="seeds per agent"),
    source: str = typer.Option("sample", help="sample | files | synthetic (or module:Class)"),
    path: _DataPath | None = typer.Option(None, help="file or folder, for --source files"),
    symbols: str | None = typer.Option(None, help="comma-separated symbols (default: all)"),
    start: str | None = typer.Option(None, help="first date"),
    end: str | None = typer.Option(None, help="last date, inclusive"),
    costs: str = typer.Option("default", help="cost preset (zero, default, retail) or TOML"),
    score: str = typer.Option("balanced", help="score preset (balanced, strict, growth) or TOML"),
    experiment: str = typer.Option("leaderboard", help="experiment name in the trial registry"),
    registry: _DataPath | None = typer.Option(None, help="trial registry (default "
                                                         "OUT/trials.sqlite, kept across runs)"),
    quality: str = typer.Option("warn", help="data quality policy: raise | warn | repair"),
    out: _DataPath = typer.Option(_DataPath("runs/leaderboard"), help="output folder"),
) -> None:
    """Compare agents on identical data and costs: CIs, deflated Sharpe, hardened score."""
    from tradesim.evaluate.leaderboard import evaluate_agents

    names = [a for a in agents.replace(",", " ").split() if a]
    console = _data_console()
    try:
        market = _eval_market(source, path, symbols, start, end, quality)
        progress, step = _eval_progress(console, len(names) * seeds + 2)
        with progress:
            board = evaluate_agents(agents=names, data=market, costs=costs, score_config=score,
                                    seeds=seeds, experiment=experiment, progress=step,
                                    registry=registry or out / "trials.sqlite")
        folder = board.save(out)
    except _EvalError as exc:
        raise _data_fail(exc) from None
    console.print(board.rich_table())
    console.print(f"leaderboard: {folder / 'leaderboard.html'} (csv: leaderboard.csv)")

# --- llm commands --------------------------------------------------------------------------

llm_app = typer.Typer(help="The LLM gateway: models, cost estimates, bias and fragility probe.",
                      no_args_is_help=True)
app.add_typer(llm_app, name="llm")


@llm_app.command("models")
def llm_models() -> None:
    """List known models with knowledge cutoffs and prices (USD per 1M tokens)."""
    from rich.console import Console
    from rich.table import Table

    from tradesim.llm.budget import PriceTable
    from tradesim.llm.leakage import MODELS

    prices, table = PriceTable(), Table("model", "knowledge cutoff", "source", "$/1M in", "$/1M out")
    for name, info in MODELS.items():
        p_in, p_out = (prices.cost(name, 10**6, 0), prices.cost(name, 0, 10**6))
        table.add_row(name, str(info.cutoff), info.source, f"{p_in:.2f}", f"{p_out:.2f}")
    Console().print(table)


@llm_app.command("estimate")
def llm_estimate(model: str = typer.Option("gpt-4o-mini"), calls: int = typer.Option(...),
                 prompt_tokens: int = typer.Option(1000),
                 completion_tokens: int = typer.Option(200)) -> None:
    """Dry-run cost: calls x tokens x price, before a backtest starts."""
    from tradesim.llm.budget import estimate

    typer.echo(str(estimate(model=model, calls=calls, prompt_tokens=prompt_tokens,
                            completion_tokens=completion_tokens)))


@llm_app.command("probe")
def llm_probe(facts: str = typer.Argument(..., help="the decision's facts, e.g. 'AAPL rose 5%...'"),
              provider: str | None = typer.Option(None, help="openai | openai-compatible | "
                                                  "langchain-openai | local (default: env)"),
              model: str | None = typer.Option(None), base_url: str | None = typer.Option(None),
              variants: int = typer.Option(6, min=2, max=6),
              temperature: float = typer.Option(0.0),
              cache: str | None = typer.Option(None, help="SQLite cache file to read/write")) -> None:
    """Send paraphrases of one decision; print action distribution and flip rates."""
    from rich.console import Console
    from rich.table import Table

    from tradesim.llm.gateway import Gateway, GatewayConfig
    from tradesim.llm.probe import run_probe

    overrides = {k: v for k, v in {"provider": provider, "model": model, "base_url": base_url,
                                   "cache_path": cache}.items() if v is not None}
    console = Console()
    with Gateway(config=GatewayConfig.from_env(temperature=temperature, **overrides)) as gw, \
            console.status(f"probing {gw.config.model_name} with {variants} paraphrases"):
        result = run_probe(gateway=gw, facts=facts, variants=variants)
    table = Table("variant", "action", title=f"{gw.config.model_name}: {facts}")
    for text, action in zip(result.variants, result.actions, strict=True):
        table.add_row(text.replace("\n", " ")[:90], action)
    console.print(table)
    dist = ", ".join(f"{a} {p:.0%}" for a, p in result.distribution.items())
    console.print(f"distribution: {dist}; majority {result.majority}; flip rate "
                  f"{result.flip_rate:.0%}; pairwise flip rate {result.pairwise_flip_rate:.0%}; "
                  f"abstained {result.abstained}")

# --- train commands ------------------------------------------------------------------------

train_app = typer.Typer(help="Train learning agents (QTNet deep RL).", no_args_is_help=True)
app.add_typer(train_app, name="train")


@train_app.command("qtnet")
def train_qtnet(
    data: str = typer.Option("synthetic", help="sample | synthetic | a folder or file of bars"),
    symbols: list[str] | None = typer.Option(None, "--symbol", help="symbols (repeatable)"),
    start: str | None = typer.Option(None, help="first date of the history"),
    end: str | None = typer.Option(None, help="last date of the history"),
    split: str = typer.Option(..., help="date: bars before it train, bars from it validate"),
    interval: str = typer.Option("1d", help="bar interval: 1d or 1m 5m ... (minute files)"),
    quality: str = typer.Option("raise", help="raise | warn | repair"),
    separate: bool = typer.Option(True, "--separate/--joint",
                                  help="one single-asset series per symbol, or one joint "
                                       "policy over all symbols"),
    device: str = typer.Option("auto", help="auto (cuda > mps > cpu) | cpu | cuda | mps"),
    threads: int = typer.Option(0, help="torch CPU threads (0: torch's default)"),
    seed: int = typer.Option(0),
    iterations: int = typer.Option(50),
    updates: int = typer.Option(8, help="gradient steps per iteration"),
    n_envs: int = typer.Option(64),
    episode_len: int = typer.Option(64),
    hidden: int = typer.Option(64),
    costs: str = typer.Option("default", help="zero | default | retail | path.toml"),
    allow_short: bool = typer.Option(True, help="train a long/short policy (backtest it with "
                                                 "--allow-short)"),
    max_leverage: float = typer.Option(1.0),
    bc_weight: float = typer.Option(1.0, help="initial Q-filtered behaviour-cloning weight"),
    hindsight_teacher: bool = typer.Option(False, help="TRAINING ONLY: add a look-ahead teacher"),
    eval_every: int = typer.Option(5),
    patience: int = typer.Option(4),
    out: _DataPath = typer.Option("runs/qtnet", help="checkpoints and log.csv"),
) -> None:
    """Train the QTNet agent; best.pt plugs into backtests as tradesim.agents.qtnet:QTNetAgent."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from tradesim.agents.qtnet.device import pick_device
    from tradesim.agents.qtnet.env import EnvConfig, EnvData
    from tradesim.agents.qtnet.train import TrainConfig, split_market, train
    from tradesim.data.load import load_market

    console = Console()
    try:
        import torch

        if threads:
            torch.set_num_threads(threads)
        chosen = pick_device(device)
        source, options = (data, {}) if data in ("sample", "synthetic") else (
            "files", {"root": data})
        market = load_market(symbols=symbols or None, source=source, start=start, end=end,
                             interval=interval, quality=quality, news=False,
                             source_options=options)
        fit, held = split_market(market, split=split)
        env = EnvConfig(n_envs=n_envs, episode_len=episode_len, costs=costs,
                        allow_short=allow_short, max_leverage=max_leverage, seed=seed)
        config = TrainConfig(env=env, iterations=iterations, updates=updates, hidden=hidden,
                             bc_weight=bc_weight, hindsight_teacher=hindsight_teacher,
                             eval_every=eval_every, patience=patience, seed=seed)
        prep = {"separate": separate, "allow_short": allow_short}
        train_data = EnvData.from_market(fit, hindsight_teacher=hindsight_teacher, **prep)
        val_data = EnvData.from_market(held, **prep)
    except (_DataError, ValueError) as exc:
        raise _data_fail(exc) from None
    console.print(f"device {chosen}; {len(market.symbols)} symbol(s); train "
                  f"{int(train_data.lengths.sum()):,} bars, validate {int(val_data.lengths.sum()):,}")
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("training", total=iterations, info="")

        def show(done: int, total: int, row: dict) -> None:
            val = row["val_log_growth"]
            progress.update(task, completed=done, info=(
                f"critic {row['critic_loss']:.3g}  bc {row['bc_weight']:.2f}  "
                f"val {val:.4f}" if val != "" else f"critic {row['critic_loss']:.3g}"))

        best = train(config=config, train_data=train_data, val_data=val_data, device=chosen,
                     out_dir=out, progress=show)
    console.print(f"best validation log growth {best['val_log_growth']:.4f} at iteration "
                  f"{best['iteration']}; checkpoint {out / 'best.pt'}, log {out / 'log.csv'}")
    console.print(f"backtest it: tradesim backtest --agent qtnet --param checkpoint={out / 'best.pt'}"
                  + (" --allow-short" if allow_short else "") + " --symbols ...")



if __name__ == "__main__":
    app()
