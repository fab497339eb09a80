"""Agent isolation: the real agent runs in its own process and sees only its Observation.

:class:`IsolatedAgent` is an :class:`~tradesim.contracts.Agent` the session drives like any
other; it forwards each lifecycle call to a child process (``python -m
tradesim.agents._child``). Per decision the child receives only what the point-in-time view
allows, as plain arrays: the bar rows that became visible since the last decision, news items
with ``available_at <= t``, the portfolio, time, universe and interval. It rebuilds a
:class:`~tradesim.data.view.MarketData` of those rows and hands the agent the usual
``Observation``. The engine, the ledger and the full data never live in the child, and nothing
sent carries a path to the source. Where ``bwrap`` (bubblewrap) works the child also runs in a
sandbox that binds only the Python install, the venv and the agent's code, read-only, with no
network, so it cannot read the data files, the cache or run folders; elsewhere it is a plain
process, and the run's meta says which (``isolation``). The child answers in JSON only, so a
hostile agent cannot make the engine's process unpickle code. See ``docs/isolation.md``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tradesim.contracts import Decision, Feedback, Observation, RunContext
from tradesim.errors import ConfigError, FatalAgentError, IsolationError

Sandbox = Literal["auto", "bwrap", "process"]
_HEADER = struct.Struct("<Q")
_MAX_REPLY = 64 * 1024 * 1024  # bytes: a reply larger than this is a broken or hostile child


class IsolatedAgent:
    """``agent`` run in a child process (sandboxed by bubblewrap where it works).

    ``agent`` is pickled into the child at :meth:`start` (an agent handed data through its
    constructor takes that data along: isolation guards the run, not the constructor).
    ``final_state`` holds the child's last ``state()``, read just before ``stop``.
    """

    def __init__(self, agent: Any, *, sandbox: Sandbox = "auto") -> None:
        if sandbox not in ("auto", "bwrap", "process"):
            raise ConfigError(f"sandbox={sandbox!r}: use 'auto', 'bwrap' or 'process'")
        self.name = str(getattr(agent, "name", type(agent).__name__))
        self.lookback = int(getattr(agent, "lookback", 0) or 0)
        try:
            self._blob = pickle.dumps(agent)
        except Exception as exc:
            raise ConfigError(f"agent {self.name!r} cannot be isolated: it does not pickle "
                              f"({type(exc).__name__}: {exc}); keep unpicklable handles (clients, "
                              "open files) out of __init__ or run it in-process") from None
        self._module_file = _module_file(type(agent))
        usable, why = bwrap_status()
        if sandbox == "bwrap" and not usable:
            raise ConfigError(f"sandbox='bwrap' but bubblewrap is not usable here ({why}); "
                              "install it (apt-get install bubblewrap) or use sandbox='auto'")
        self.isolation = "bwrap" if usable and sandbox != "process" else "process"
        self.isolation_note = "" if self.isolation == "bwrap" else (
            "plain process (sandbox='process')" if sandbox == "process" else why)
        self.final_state: dict[str, Any] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: Any = None
        self._sent: dict[str, int] = {}
        self._last: dict[str, np.datetime64] = {}  # the last bar stamp sent per symbol
        self._news_sent = 0

    # --- the Agent contract ---------------------------------------------------------------

    def start(self, context: RunContext) -> None:
        """Launch a fresh child, hand it the agent and the run's context (no run folder)."""
        self._close()
        self._launch()
        self._sent, self._last, self._news_sent = {}, {}, 0
        ctx = {"universe": tuple(context.universe), "interval": context.interval,
               "clock": context.clock, "seed": context.seed, "start": context.start,
               "end": context.end}
        self._call("start", self._blob, ctx)

    def decide(self, obs: Observation) -> Decision:
        reply = self._call("decide", self._encode(obs))
        return _decision(reply, self.name)

    def update(self, feedback: Feedback) -> None:
        self._call("update", feedback)

    def state(self) -> dict[str, Any]:
        out = self._call("state")
        return out if isinstance(out, dict) else {}

    def load_state(self, state: dict[str, Any]) -> None:
        self._call("load_state", json.loads(json.dumps(state)))

    def stop(self, *, error: BaseException | None = None) -> None:
        """Read the child's final state, stop the agent, and end the process."""
        if self._proc is None:
            return
        try:
            if self._proc.poll() is None:
                state = self._call("state")
                self.final_state = state if isinstance(state, dict) else {}
                self._call("stop", None if error is None else f"{type(error).__name__}: {error}")
        except IsolationError:
            pass  # a dead child has nothing left to stop
        finally:
            self._close()

    def run_meta(self, *, start: np.datetime64, end: np.datetime64) -> dict[str, Any]:
        """How the agent was isolated (recorded in every run's meta)."""
        out: dict[str, Any] = {"isolation": self.isolation}
        if self.isolation_note:
            out["isolation_note"] = self.isolation_note
        return out

    def save_artifacts(self, folder: Path) -> list[Path]:
        """The child cannot write the run folder; its own artifacts stay in the child."""
        return []

    # --- protocol -------------------------------------------------------------------------

    def _encode(self, obs: Observation) -> dict[str, Any]:
        """The rows that became visible since the last decision, news by ``time``, the book."""
        view, bars = obs.market, {}
        for s in view:
            n, sent, last = view.count(s), self._sent.get(s, 0), self._last.get(s)
            if not n:
                continue
            k = n if last is None else min(n, max(n - sent, 0) + 1)
            b = view.bars(s, lookback=k)
            # a live feed's view is a sliding window, not a growing prefix: reach back to the
            # last row sent, so that exactly the rows after it go (none twice, none missed)
            while last is not None and b.time[0] > last and k < n:
                k = min(n, 2 * k)
                b = view.bars(s, lookback=k)
            new = 0 if last is None else int(np.searchsorted(b.time, last, "right"))
            self._sent[s] = n
            if new < len(b):
                bars[s] = (b.interval, b.adjusted, _public_source(b.source), b.meta,
                           *(np.asarray(getattr(b, c))[new:] for c in
                             ("time", "open", "high", "low", "close", "volume")))
                self._last[s] = b.time[-1]
        news = None
        n_news = view.news_count()
        if n_news > self._news_sent:
            items = view.news(lookback=n_news - self._news_sent)
            news = {c: np.asarray(getattr(items, c)) for c in
                    ("published_at", "available_at", "symbol", "title", "body", "source")}
            self._news_sent = n_news
        p = obs.portfolio
        return {"time": obs.time, "step": obs.step, "universe": tuple(obs.universe),
                "interval": obs.interval, "bars": bars, "news": news, "symbols": tuple(view),
                "portfolio": (float(p.cash), dict(p.positions), dict(p.prices),
                              float(p.equity))}

    def _launch(self) -> None:
        argv = [sys.executable, "-m", "tradesim.agents._child"]
        env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONHASHSEED": "0",
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PYTHONDONTWRITEBYTECODE": "1"}
        extra = [str(Path(self._module_file).parent)] if self._module_file else []
        for key in ("TRADESIM_GOLDEN_KEY",):  # nothing else of the parent's environment
            if key in os.environ:
                env[key] = os.environ[key]
        if extra:
            env["PYTHONPATH"] = os.pathsep.join(extra)
        if self.isolation == "bwrap":
            argv = _bwrap_argv(self._module_file) + argv
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      env=env, cwd="/tmp" if self.isolation == "bwrap" else None)
        self._out = self._proc.stdout

    def _call(self, op: str, *args: Any) -> Any:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise IsolationError(f"agent {self.name!r}: isolated process not started; the "
                                 "session calls start() first")
        payload = pickle.dumps((op, args), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            proc.stdin.write(_HEADER.pack(len(payload)) + payload)
            proc.stdin.flush()
            head = self._out.read(_HEADER.size)
            if len(head) < _HEADER.size:
                raise EOFError
            (size,) = _HEADER.unpack(head)
            if size > _MAX_REPLY:
                raise IsolationError(f"agent {self.name!r}: reply of {size} bytes to {op!r} "
                                     "exceeds the protocol's limit")
            reply = json.loads(self._out.read(size))
        except (BrokenPipeError, EOFError, OSError, ValueError) as exc:
            code = proc.poll()
            raise IsolationError(f"agent {self.name!r}: isolated process died during {op!r} "
                                 f"(exit code {code}; {type(exc).__name__}); see its stderr "
                                 "above") from None
        if not isinstance(reply, dict) or "ok" not in reply:
            raise IsolationError(f"agent {self.name!r}: malformed reply to {op!r}")
        if not reply["ok"]:
            kind, message = str(reply.get("type", "Error")), str(reply.get("message", ""))
            if reply.get("fatal"):
                raise FatalAgentError(f"{kind}: {message}")
            raise AgentProcessError(kind, message)
        return reply.get("value")

    def _close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __del__(self) -> None:  # a run abandoned without stop() must not leave a process behind
        with contextlib.suppress(Exception):
            self._close()


class AgentProcessError(Exception):
    """An exception the isolated agent raised, by its type name and message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def isolate_agent(agent: Any, *, sandbox: Sandbox = "auto") -> IsolatedAgent:
    """``agent`` wrapped to run in its own process (already isolated agents pass through)."""
    return agent if isinstance(agent, IsolatedAgent) else IsolatedAgent(agent, sandbox=sandbox)


@lru_cache(maxsize=1)
def bwrap_status() -> tuple[bool, str]:
    """(usable, why not): bubblewrap installed and able to create its namespaces here."""
    exe = shutil.which("bwrap")
    if exe is None:
        return False, "bwrap not installed (Debian: apt-get install bubblewrap); plain process"
    try:
        done = subprocess.run([exe, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent",
                               "true"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bwrap failed to start ({exc}); plain process"
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        return False, f"bwrap cannot sandbox here ({why[-1] if why else done.returncode}); " \
                      "plain process"
    return True, ""


def _bwrap_argv(module_file: str | None) -> list[str]:
    """bubblewrap: system libraries, the Python install, the venv and the agent's code,
    read-only; a private /tmp; no network or other namespaces shared; dies with the parent."""
    import tradesim

    argv = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--die-with-parent",
            "--new-session", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for root in ("/usr", "/etc/alternatives", "/etc/ld.so.cache"):
        if os.path.exists(root):
            argv += ["--ro-bind", root, root]
    for link in ("bin", "lib", "lib64", "sbin"):
        path = f"/{link}"
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    package = str(Path(tradesim.__file__).resolve().parent)
    binds = {sys.base_prefix, sys.prefix, package,
             *(p for p in sys.path if p and "site-packages" in p)}
    if module_file:
        binds.add(module_file)  # the agent's own file only, not the folder around it
    for path in sorted(binds):
        if os.path.exists(path):
            argv += ["--ro-bind", path, path]
    return argv


def _module_file(cls: type) -> str | None:
    """The file of a class defined outside tradesim (a user's agent), to bind into the sandbox."""
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    if not path or cls.__module__.startswith("tradesim."):
        return None
    return str(Path(path).resolve())


def _public_source(source: str) -> str:
    """A source label without a path in it."""
    return "files" if "/" in source or "\\" in source else source


def _decision(reply: Any, name: str) -> Decision:
    """A Decision from the child's JSON (types checked; the session validates the values)."""
    if not isinstance(reply, dict):
        raise IsolationError(f"agent {name!r}: decide returned {type(reply).__name__}")
    if reply.get("type") != "Decision":
        raise AgentProcessError("TypeError", f"decide returned {reply.get('type')}, expected a "
                                "Decision")

    def mapping(key: str) -> dict[str, float]:
        raw = reply.get(key) or {}
        if not isinstance(raw, dict):
            raise IsolationError(f"agent {name!r}: Decision.{key} is not a mapping")
        return {str(k): v for k, v in raw.items()}

    if not (reply.get("weights") or reply.get("stop_loss") or reply.get("take_profit")
            or reply.get("rebalance_missing") or reply.get("confidence") is not None
            or reply.get("llm_calls") or reply.get("expense")):
        return Decision.hold(str(reply.get("rationale", "hold")))
    confidence = reply.get("confidence")
    return Decision(weights=mapping("weights"), stop_loss=mapping("stop_loss"),
                    take_profit=mapping("take_profit"),
                    confidence=None if confidence is None else float(confidence),
                    rationale=str(reply.get("rationale", "")),
                    llm_calls=tuple(str(c) for c in reply.get("llm_calls") or ()),
                    rebalance_missing=bool(reply.get("rebalance_missing", False)),
                    expense=reply.get("expense", 0.0))  # the session validates its value
