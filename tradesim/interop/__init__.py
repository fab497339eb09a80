"""Bridges to other trading libraries; each imports its library lazily, so tradesim does not need it.

``tradesim.interop.vectorbt``: a run as a vectorbt Portfolio built from our fills, and vectorbt
indicators on the point-in-time history an agent sees.
"""

from __future__ import annotations
