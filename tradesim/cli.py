"""The ``tradesim`` command: data, backtest, audit, evaluate, train, llm, paper.

Each command group lives in its own section below; logic lives in the library, this file only
parses arguments, shows progress and prints summaries.
"""

from __future__ import annotations

import typer

app = typer.Typer(help="Backtest, evaluate and paper-trade trading agents on one honest engine.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)

# --- data commands -------------------------------------------------------------------------

# --- backtest commands ---------------------------------------------------------------------

# --- audit and evaluate commands -----------------------------------------------------------

# --- llm commands --------------------------------------------------------------------------

# --- train commands ------------------------------------------------------------------------


if __name__ == "__main__":
    app()
