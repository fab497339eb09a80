"""The Portfolio class runs convert to: vectorbt's own, with a benchmark that leaves out the
charges column (its close is a running sum of fees, not a price anyone could buy).

Imported by :mod:`tradesim.interop.vectorbt` only once vectorbt has imported.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import vectorbt as vbt
from vectorbt.portfolio.nb import benchmark_value_grouped_nb

from tradesim.interop.vectorbt import CHARGES


class RunPortfolio(vbt.Portfolio):
    """``vectorbt.Portfolio`` built from a tradesim run; only the grouped benchmark differs."""

    def benchmark_value(self, group_by: Any = None, wrap_kwargs: dict | None = None,
                        engine: str | None = None) -> Any:
        """Buy-and-hold of the symbols with the initial cash split evenly, as vectorbt's, but
        without :data:`CHARGES`."""
        columns = list(self.wrapper.columns)
        if CHARGES not in columns or not self.wrapper.grouper.is_grouped(group_by=group_by):
            return super().benchmark_value(group_by=group_by, wrap_kwargs=wrap_kwargs,
                                           engine=engine)
        c = columns.index(CHARGES)
        close = self.get_filled_close() if self.fillna_close else self.close
        close = np.delete(np.asarray(close, dtype=np.float64).reshape(len(close), -1), c, axis=1)
        lens = np.array(self.wrapper.grouper.get_group_lens(group_by=group_by), dtype=np.int64)
        g = int(np.searchsorted(np.cumsum(lens), c, side="right"))
        lens[g] -= 1
        init = np.asarray(self.get_init_cash(group_by=group_by), dtype=np.float64).reshape(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = benchmark_value_grouped_nb(np.ascontiguousarray(close), lens, init)
        if lens[g] == 0:  # only charges in that group: the benchmark holds the cash
            out[:, g] = init[g]
        return self.wrapper.wrap(out, group_by=group_by, **(wrap_kwargs or {}))
