"""The paper-trading daemon: the engine's Session on a live clock, durable, reconciled, observable.

``config`` (the session TOML), ``feeds`` (live clock on the exchange calendar, replay and polling
feeds), ``store`` (the SQLite event log), ``broker`` (the broker protocol, simulated default),
``switch`` (kill switch), ``health`` (the 127.0.0.1 endpoint), ``daemon`` (the loop), ``result``
(the RunResult rebuilt from the log). See docs/paper.md.
"""

from tradesim.live.config import PaperConfig
from tradesim.live.daemon import PaperDaemon

__all__ = ["PaperConfig", "PaperDaemon"]
