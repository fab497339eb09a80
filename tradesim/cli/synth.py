"""``tradesim synth``: TradingGroup run folders -> post-training JSONL (SFT, preference, reward)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tradesim.cli._common import console, user_errors


def synth(
    runs: Annotated[list[Path], typer.Argument(help="run folders of tradinggroup backtests")],
    out: Annotated[Path, typer.Option("--out", help="folder for train/ and test/ JSONL")],
    split: Annotated[str, typer.Option(help="first date of the test split, e.g. 2018-01-01")],
    horizon: Annotated[int, typer.Option(help="bars from a decision to its labelled outcome")]
    = 5,
    purge: Annotated[int, typer.Option(help="bars dropped before the split after each "
                                            "train outcome")] = 5,
    band: Annotated[float, typer.Option(help="|forward return| below which the label is "
                                             "flat (a fixed band, not a quantile)")] = 0.01,
    model: Annotated[str | None, typer.Option(help="model to be trained (knowledge cutoff "
                                                   "check); default: the run's model")] = None,
    anonymize: Annotated[bool, typer.Option("--anonymize", help="hide tickers and dates")]
    = False,
    force: Annotated[bool, typer.Option("--force", help="export despite a knowledge-cutoff "
                                                        "overlap")] = False,
) -> None:
    """Export RUN folders as TRL-ready JSONL, labelled at HORIZON bars, split by time."""
    from tradesim.agents.group.synth import export, validate

    with user_errors():
        manifest = export(runs, out, horizon=horizon, purge=purge, split=split, band=band,
                          model=model, anonymize=anonymize, force=force)
        counts = validate(out)
    shown = console()
    for name, n in counts.items():
        shown.print(f"{name}: {n} rows")
    shown.print(f"wrote {out} (manifest.json: horizon {manifest['horizon']}, purge "
                f"{manifest['purge']}, split {manifest['split']})")


def register(app: typer.Typer) -> None:
    """Add ``synth`` to ``app``."""
    app.command("synth")(synth)
