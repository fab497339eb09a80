"""``tradesim audit`` and ``tradesim evaluate``: judge agents by running them through the engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

from tradesim.cli._common import (
    AllowOpt,
    DataOpt,
    EndOpt,
    ExchangeOpt,
    ExecutorOpt,
    IntervalOpt,
    QualityOpt,
    StartOpt,
    SymbolsOpt,
    console,
    load,
    parse_symbols,
    resolve_data,
    user_errors,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from tradesim.agents.isolation import Sandbox
    from tradesim.data.view import MarketData

CostsOpt = Annotated[str, typer.Option(help="cost preset (zero, default, retail) or TOML")]
ScoreOpt = Annotated[str, typer.Option(help="score preset (balanced, strict, growth) or TOML")]


def _market(data: str, symbols: list[str] | None, start: str | None, end: str | None,
            interval: str, quality: str, allow: list[str] | None,
            exchange: str | None) -> MarketData:
    """The market an audit or leaderboard runs on (the sample's tradable symbols by default)."""
    source, options = resolve_data(data)
    wanted = parse_symbols(symbols)
    if wanted is None and source == "sample":  # the sample's index is a benchmark, not a trade
        from tradesim.data.synthetic import DEFAULT_SYMBOLS, INDEX_SYMBOL

        wanted = [s for s in DEFAULT_SYMBOLS if s != INDEX_SYMBOL]
    return load(data=source, options=options, symbols=wanted, start=start, end=end,
                interval=interval, quality=quality, allow=tuple(allow or ()), exchange=exchange)


def _progress(out: Console, total: int) -> tuple[Progress, Callable[[str], None]]:
    """A rich progress bar advanced once per agent run; returns (progress, callback)."""
    from rich.progress import Progress

    progress = Progress(console=out, transient=True)
    task = progress.add_task("running", total=total)

    def step(name: str) -> None:
        progress.update(task, advance=1, description=f"running {name}")

    return progress, step


def audit(
    data: DataOpt = "sample",
    symbols: SymbolsOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    interval: IntervalOpt = "1d",
    exchange: ExchangeOpt = None,
    quality: QualityOpt = "warn",
    allow: AllowOpt = None,
    costs: CostsOpt = "default",
    score: ScoreOpt = "balanced",
    noise_seeds: Annotated[int, typer.Option(help="shuffled markets the noise trader runs on")]
    = 5,
    out: Annotated[Path, typer.Option(help="folder for audit.json/csv/html")]
    = Path("runs/audit"),
) -> None:
    """Run the adversarial canaries through the engine; exit 1 if any row misses its goal."""
    from tradesim.evaluate.audit import CANARIES, run_audit

    shown = console()
    with user_errors():
        market = _market(data, symbols, start, end, interval, quality, allow, exchange)
        progress, step = _progress(shown, 2 * len(CANARIES) + 3 * noise_seeds + 2)
        with progress:
            report = run_audit(data=market, costs=costs, score_config=score,
                               noise_seeds=noise_seeds, progress=step)
        folder = report.save(out)
    shown.print(report.table())
    shown.print(f"report: {folder / 'audit.html'}")
    if not report.passed:
        shown.print(f"[red]{len(report.failures())} row(s) miss their goal: "
                    f"{', '.join(r.canary for r in report.failures())}[/red]")
        raise typer.Exit(code=1)
    shown.print("[green]every row meets its goal[/green]")


def evaluate(
    agents: Annotated[str, typer.Option(
        help="comma-separated agents: built-in names, module:Class, specs")]
    = "sma_cross,macd,buy_and_hold",
    seeds: Annotated[int, typer.Option(help="seeds per agent")] = 1,
    data: DataOpt = "sample",
    symbols: SymbolsOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    interval: IntervalOpt = "1d",
    exchange: ExchangeOpt = None,
    quality: QualityOpt = "warn",
    allow: AllowOpt = None,
    costs: CostsOpt = "default",
    score: ScoreOpt = "balanced",
    experiment: Annotated[str, typer.Option(help="experiment name in the trial registry")]
    = "leaderboard",
    registry: Annotated[Path | None, typer.Option(
        help="trial registry (default OUT/trials.sqlite, kept across runs)")] = None,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("runs/leaderboard"),
    isolate: Annotated[bool, typer.Option(
        "--isolate/--in-process", help="run each agent in its own process that sees only its "
                                       "Observation (default; sandboxed by bubblewrap where it "
                                       "works). Agents with an LLM gateway or that do not "
                                       "pickle run in-process, said in the isolation column")
    ] = True,
    sandbox: Annotated[str, typer.Option(
        help="auto (bubblewrap where it works) | bwrap | process")] = "auto",
    lookahead_check: Annotated[bool, typer.Option(
        "--lookahead-check/--no-lookahead-check",
        help="run the counterfactual look-ahead check per agent (one twin per cut; about four "
             "backtests' time each)")] = True,
    windows: Annotated[int, typer.Option(
        help="consecutive test windows the span is split into; each (agent, seed, window) is "
             "its own run starting flat")] = 1,
    executor: ExecutorOpt = "local",
) -> None:
    """Compare agents on identical data and costs: CIs, deflated Sharpe, hardened score,
    isolation and the look-ahead check."""
    from tradesim.errors import ConfigError
    from tradesim.evaluate.executor import check_executor, make_executor
    from tradesim.evaluate.leaderboard import evaluate_agents

    names = [a for a in agents.replace(",", " ").split() if a]
    shown = console()
    with user_errors():
        if sandbox not in ("auto", "bwrap", "process"):
            raise ConfigError(f"--sandbox {sandbox!r}: use auto, bwrap or process")
        check_executor(executor)
        market = _market(data, symbols, start, end, interval, quality, allow, exchange)
        progress, step = _progress(shown, len(names) * (seeds * windows + lookahead_check)
                                   + 2)
        with make_executor(executor) as ex, progress:
            board = evaluate_agents(agents=names, data=market, costs=costs, score_config=score,
                                    seeds=seeds, experiment=experiment, progress=step,
                                    registry=registry or out / "trials.sqlite", isolate=isolate,
                                    sandbox=cast("Sandbox", sandbox),
                                    lookahead=lookahead_check, windows=windows, executor=ex)
        folder = board.save(out)
    shown.print(board.rich_table())
    leaked = [f"{r.agent} ({r.lookahead})" for r in board.table.itertuples(index=False)
              if str(r.lookahead).startswith("LEAK")]
    if leaked:
        shown.print(f"[red]look-ahead check: {', '.join(leaked)} used information from after "
                    "its decision time; its scores are not to be trusted[/red]")
    shown.print(f"leaderboard: {folder / 'leaderboard.html'} (csv: leaderboard.csv)")


def oos(
    split: Annotated[str, typer.Option(help="date: bars before it train, bars from it are "
                                            "held out and backtested")],
    data: DataOpt = "synthetic",
    symbols: SymbolsOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    interval: IntervalOpt = "1d",
    exchange: ExchangeOpt = None,
    quality: QualityOpt = "raise",
    allow: AllowOpt = None,
    seeds: Annotated[int, typer.Option(help="policies trained, one per seed (at least 2)")] = 5,
    iterations: Annotated[int, typer.Option(help="training iterations per seed")] = 60,
    updates: Annotated[int, typer.Option(help="gradient steps per iteration")] = 8,
    n_envs: Annotated[int, typer.Option(help="parallel training episodes")] = 64,
    episode_len: Annotated[int, typer.Option(help="bars per training episode")] = 64,
    hidden: Annotated[int, typer.Option(help="width of the policy network")] = 64,
    eval_every: Annotated[int, typer.Option(help="validate every N iterations")] = 5,
    patience: Annotated[int, typer.Option(help="validations without progress before "
                                               "stopping")] = 4,
    costs: CostsOpt = "default",
    allow_short: Annotated[bool, typer.Option(help="long/short policies")] = True,
    device: Annotated[str, typer.Option(help="auto (cuda > mps > cpu) | cpu | cuda | mps")]
    = "auto",
    threads: Annotated[int, typer.Option(help="torch CPU threads (0: torch's default)")] = 0,
    out: Annotated[Path, typer.Option(help="output folder (checkpoints, csv, report.html)")]
    = Path("runs/qtnet_oos"),
    executor: ExecutorOpt = "sequential",
) -> None:
    """QTNet out of sample: one policy per seed trained before --split, backtested after it.

    Buy-and-hold and Dual Thrust run on the same held-out span; intervals are over seeds.
    --executor local (or ray) trains the seeds in parallel, each with --threads torch threads.
    """
    from rich.progress import Progress

    from tradesim.agents.qtnet.env import EnvConfig
    from tradesim.agents.qtnet.train import TrainConfig
    from tradesim.device import pick_device
    from tradesim.evaluate.executor import check_executor, make_executor
    from tradesim.evaluate.oos import REFERENCES, evaluate_out_of_sample

    shown = console()
    with user_errors():
        import torch

        if threads:
            torch.set_num_threads(threads)
        chosen = pick_device(device)
        check_executor(executor)
        market = _market(data, symbols, start, end, interval, quality, allow, exchange)
        config = TrainConfig(env=EnvConfig(n_envs=n_envs, episode_len=episode_len, costs=costs,
                                           allow_short=allow_short),
                             iterations=iterations, updates=updates, hidden=hidden,
                             eval_every=eval_every, patience=patience)
        with make_executor(executor) as ex, Progress(console=shown, transient=True) as progress:
            task = progress.add_task(f"training {seeds} seeds on {chosen}", total=seeds)

            def step(line: str) -> None:
                shown.print(line)
                progress.advance(task)

            report = evaluate_out_of_sample(market=market, split=split, config=config,
                                            seeds=range(seeds), out_dir=out / "checkpoints",
                                            device=str(chosen), progress=step, executor=ex)
        folder = report.save(out)
    shown.print(report.rich_table())
    for ref in REFERENCES:
        verdict = "beats" if report.beats(ref) else "does not beat"
        shown.print(f"QTNet {verdict} {ref} out of sample (total return: the whole CI of the "
                    "excess above zero)")
    shown.print(f"report: {folder / 'report.html'}")


def register(app: typer.Typer) -> None:
    """Add ``audit``, ``evaluate`` and ``oos`` to ``app``."""
    app.command("audit")(audit)
    app.command("evaluate")(evaluate)
    app.command("oos")(oos)
