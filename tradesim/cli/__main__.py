"""``python -m tradesim.cli``: the same command as the ``tradesim`` console script."""

from tradesim.cli import app

app(prog_name="tradesim")
