"""``tradesim train``: train learning agents (QTNet deep RL) with a live progress line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tradesim.cli._common import (
    AllowOpt,
    DataOpt,
    EndOpt,
    IntervalOpt,
    QualityOpt,
    SymbolsOpt,
    console,
    load,
    parse_symbols,
    resolve_data,
    user_errors,
)


def qtnet(
    split: Annotated[str, typer.Option(
        help="date: bars before it train, bars from it validate")],
    data: DataOpt = "synthetic",
    symbols: SymbolsOpt = None,
    start: Annotated[str | None, typer.Option(help="first date of the history")] = None,
    end: EndOpt = None,
    interval: IntervalOpt = "1d",
    quality: QualityOpt = "raise",
    allow: AllowOpt = None,
    separate: Annotated[bool, typer.Option(
        "--separate/--joint", help="one single-asset series per symbol, or one joint policy "
                                   "over all symbols")] = True,
    device: Annotated[str, typer.Option(help="auto (cuda > mps > cpu) | cpu | cuda | mps")]
    = "auto",
    threads: Annotated[int, typer.Option(help="torch CPU threads (0: torch's default)")] = 0,
    seed: Annotated[int, typer.Option(help="seed of the policy and the episodes")] = 0,
    iterations: Annotated[int, typer.Option(help="training iterations")] = 50,
    updates: Annotated[int, typer.Option(help="gradient steps per iteration")] = 8,
    n_envs: Annotated[int, typer.Option(help="parallel training episodes")] = 64,
    episode_len: Annotated[int, typer.Option(help="bars per training episode")] = 64,
    hidden: Annotated[int, typer.Option(help="width of the policy network")] = 64,
    costs: Annotated[str, typer.Option(help="zero | default | retail | path.toml")]
    = "default",
    allow_short: Annotated[bool, typer.Option(
        help="train a long/short policy (backtest it with --allow-short)")] = True,
    max_leverage: Annotated[float, typer.Option(help="cap on gross exposure / equity")] = 1.0,
    bc_weight: Annotated[float, typer.Option(
        help="initial Q-filtered behaviour-cloning weight")] = 1.0,
    hindsight_teacher: Annotated[bool, typer.Option(
        help="TRAINING ONLY: add a look-ahead teacher")] = False,
    eval_every: Annotated[int, typer.Option(help="validate every N iterations")] = 5,
    patience: Annotated[int, typer.Option(
        help="validations without progress before stopping")] = 4,
    out: Annotated[Path, typer.Option(help="checkpoints and log.csv")] = Path("runs/qtnet"),
) -> None:
    """Train the QTNet agent; best.pt plugs into backtests as ``--agent qtnet``."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from tradesim.agents.qtnet.env import EnvConfig, EnvData
    from tradesim.agents.qtnet.train import TrainConfig, split_market, train
    from tradesim.device import pick_device

    shown = console()
    with user_errors():
        import torch

        if threads:
            torch.set_num_threads(threads)
        chosen = pick_device(device)
        source, options = resolve_data(data)
        market = load(data=source, options=options, symbols=parse_symbols(symbols), start=start,
                      end=end, interval=interval, quality=quality, allow=tuple(allow or ()),
                      news=False)
        fit, held = split_market(market, split=split)
        env = EnvConfig(n_envs=n_envs, episode_len=episode_len, costs=costs,
                        allow_short=allow_short, max_leverage=max_leverage, seed=seed)
        config = TrainConfig(env=env, iterations=iterations, updates=updates, hidden=hidden,
                             bc_weight=bc_weight, hindsight_teacher=hindsight_teacher,
                             eval_every=eval_every, patience=patience, seed=seed)
        train_data = EnvData.from_market(fit, separate=separate, allow_short=allow_short,
                                         hindsight_teacher=hindsight_teacher)
        val_data = EnvData.from_market(held, separate=separate, allow_short=allow_short)
        shown.print(f"device {chosen}; {len(market.symbols)} symbol(s); train "
                    f"{int(train_data.lengths.sum()):,} bars, validate "
                    f"{int(val_data.lengths.sum()):,}")
        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                      console=shown) as progress:
            task = progress.add_task("training", total=iterations, info="")

            def show(done: int, total: int, row: dict) -> None:
                val = row["val_log_growth"]
                progress.update(task, completed=done, info=(
                    f"critic {row['critic_loss']:.3g}  bc {row['bc_weight']:.2f}  "
                    f"val {val:.4f}" if val != "" else f"critic {row['critic_loss']:.3g}"))

            best = train(config=config, train_data=train_data, val_data=val_data, device=chosen,
                         out_dir=out, progress=show)
    shown.print(f"best validation log growth {best['val_log_growth']:.4f} at iteration "
                f"{best['iteration']}; checkpoint {out / 'best.pt'}, log {out / 'log.csv'}")
    shown.print(f"backtest it: tradesim backtest --agent qtnet --param checkpoint={out / 'best.pt'}"
                + (" --allow-short" if allow_short else "")
                + f" --symbols {','.join(market.symbols)}")


def register(app: typer.Typer) -> None:
    """Add the ``train`` group to ``app``."""
    group = typer.Typer(help="Train learning agents (QTNet deep RL).", no_args_is_help=True)
    group.command("qtnet")(qtnet)
    app.add_typer(group, name="train")
