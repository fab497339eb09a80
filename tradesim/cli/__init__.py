"""The ``tradesim`` command: one module per command group, thin over the library.

``data`` (summary, fetch, list, verify), ``backtest``, ``audit``/``evaluate``/``oos``, ``llm``
(models, estimate, probe) and ``train``. Every command speaks the flag vocabulary of
:mod:`tradesim.cli._common`; the logic lives in the library, these modules parse arguments,
show progress and print summaries. Nothing in the library imports this package.
"""

from __future__ import annotations

import typer

from tradesim.cli import backtest, data, evaluate, llm, lookahead, paper, synth, train

app = typer.Typer(help="Backtest, audit, evaluate and train trading agents on one honest engine.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)

for _group in (data, backtest, evaluate, llm, lookahead, train, paper, synth):
    _group.register(app)

__all__ = ["app"]
