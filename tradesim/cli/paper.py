"""``tradesim paper``: start, watch, steer, stop and report paper-trading sessions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer

from tradesim.cli._common import console, user_errors

HOME_ENV = "TRADESIM_PAPER_HOME"
HomeOpt = Annotated[Path | None, typer.Option(
    "--home", help=f"folder of session folders (default ${HOME_ENV} or ~/.tradesim/paper)")]
SessionArg = Annotated[str, typer.Argument(help="session name, or its SESSION.toml")]


def _home(home: Path | None) -> Path:
    return Path(home or os.environ.get(HOME_ENV) or Path.home() / ".tradesim" / "paper")


def _folder(session: str, home: Path | None) -> Path:
    from tradesim.live.config import PaperConfig
    from tradesim.live.errors import PaperSessionError

    name = PaperConfig.from_toml(session).name if session.endswith(".toml") else session
    folder = _home(home) / name
    if not (folder / "session.db").is_file():
        raise PaperSessionError(f"no paper session {name!r} under {_home(home)}; start it with "
                                "tradesim paper start SESSION.toml (or pass --home)")
    return folder


def start(session_file: Annotated[Path, typer.Argument(help="the session TOML")],
          detach: Annotated[bool, typer.Option(help="run in the background")] = False,
          home: HomeOpt = None) -> None:
    """Start (or resume) a paper session in the foreground, or detached."""
    import logging

    from tradesim.live.config import PaperConfig
    from tradesim.live.daemon import PaperDaemon, lock_holder

    with user_errors():
        config = PaperConfig.from_toml(session_file)
        root = _home(home)
        folder = root / config.name
        folder.mkdir(parents=True, exist_ok=True)
        if detach:
            with open(folder / "daemon.log", "ab") as logf:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "tradesim.cli", "paper", "start", str(session_file),
                     "--home", str(root)], stdout=logf, stderr=logf, stdin=subprocess.DEVNULL,
                    start_new_session=True)
            for _ in range(100):
                if lock_holder(folder) == proc.pid or proc.poll() is not None:
                    break
                time.sleep(0.1)
            if proc.poll() is not None and proc.returncode:
                tail = (folder / "daemon.log").read_text()[-2000:]
                console().print(f"[red]the daemon exited with {proc.returncode}:[/red]\n{tail}")
                raise typer.Exit(proc.returncode)
            console().print(f"session {config.name} running detached, pid {proc.pid}; log "
                            f"{folder / 'daemon.log'}")
            return
        handler = logging.FileHandler(folder / "daemon.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        stream = logging.StreamHandler()
        stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger = logging.getLogger("tradesim.live")
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        logger.addHandler(stream)
        try:
            outcome = PaperDaemon(config, home=root).run()
        finally:
            for h in (handler, stream):
                logger.removeHandler(h)
            handler.close()
    console().print(f"session {config.name}: {outcome}")


def _health(folder: Path) -> dict[str, Any] | None:
    try:
        where = json.loads((folder / "health.json").read_text())
        token = (folder / "token").read_text().strip()
    except (OSError, ValueError):
        return None
    req = urllib.request.Request(f"http://{where['host']}:{where['port']}/health",
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:  # 503 = degraded, still a body
        return dict(json.loads(exc.read() or b"{}"))
    except OSError:
        return None


def _summary(folder: Path) -> dict[str, Any]:
    import numpy as np

    from tradesim.data.bars import iso_time
    from tradesim.live.daemon import lock_holder
    from tradesim.live.store import SessionStore

    store = SessionStore(folder / "session.db", readonly=True)
    try:
        meta, last = store.meta(), store.last_tick()
        switches = store.table("switch_log")
    finally:
        store.close()
    pid = lock_holder(folder)
    out: dict[str, Any] = {
        "session": folder.name, "running": pid is not None, "pid": pid,
        "finished": meta.get("finished"), "steps": 0 if last is None else last["step"] + 1,
        "equity": None if last is None else last["equity"],
        "last_tick": None if last is None else iso_time(np.datetime64(int(last["time"]), "ns")),
        "state": last["switch"] if last else "ACTIVE",
        "halted_symbols": json.loads(last["halted"]) if last else [],
        "last_switch": switches[-1] if switches else None}
    if pid is not None:
        out["health"] = _health(folder)
    return out


def status(session: SessionArg, home: HomeOpt = None,
           as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Where a session stands: running or not, last tick, equity, kill-switch state, health."""
    with user_errors():
        info = _summary(_folder(session, home))
    if as_json:
        typer.echo(json.dumps(info, default=str, indent=2))
        return
    for k, v in info.items():
        console().print(f"{k:>15}: {v}")


def stop(session: SessionArg, home: HomeOpt = None,
         wait: Annotated[float, typer.Option(help="seconds to wait for the exit")] = 60.0) -> None:
    """Ask a running daemon to finish its tick and exit (SIGTERM)."""
    from tradesim.live.daemon import lock_holder

    with user_errors():
        folder = _folder(session, home)
    pid = lock_holder(folder)
    if pid is None or pid <= 0:
        console().print(f"session {folder.name} is not running")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + wait
    while time.time() < deadline and lock_holder(folder) is not None:
        time.sleep(0.1)
    if lock_holder(folder) is not None:
        console().print(f"[red]pid {pid} still holds session {folder.name} after {wait:g}s[/red]")
        raise typer.Exit(1)
    console().print(f"session {folder.name} stopped")


def switch(session: SessionArg,
           state: Annotated[str, typer.Argument(help="active | reducing (exits only) | halted")],
           home: HomeOpt = None) -> None:
    """Set the kill switch; the daemon applies it at its next tick (or its next start)."""
    from tradesim.live.switch import request_switch

    with user_errors():
        path = request_switch(_folder(session, home), state)
    console().print(f"requested {state.upper()} ({path})")


def report(session: SessionArg, home: HomeOpt = None,
           out: Annotated[Path | None, typer.Option(
               help="run folder to write (default: SESSION_FOLDER/report)")] = None) -> None:
    """Rebuild the session's RunResult from its log and write the run folder + HTML tear sheet."""
    from tradesim.live.result import rebuild_result
    from tradesim.live.store import SessionStore
    from tradesim.report.run import write_run_report

    with user_errors():
        folder = _folder(session, home)
        store = SessionStore(folder / "session.db", readonly=True)
        try:
            result = rebuild_result(store)
        finally:
            store.close()
        target = out or folder / "report"
        result.save(target)
        if len(result.equity):
            page = write_run_report(result, target)
            console().print(f"report: {page}")
        else:
            console().print(f"session {folder.name} has no committed tick yet; wrote {target}")


def list_sessions(home: HomeOpt = None) -> None:
    """Every session under the home folder, one line each."""
    root = _home(home)
    folders = sorted(p.parent for p in root.glob("*/session.db")) if root.is_dir() else []
    if not folders:
        console().print(f"no paper sessions under {root}")
        return
    for folder in folders:
        try:
            info = _summary(folder)
        except Exception as exc:  # one broken folder must not hide the rest
            console().print(f"{folder.name:<24} unreadable: {exc}")
            continue
        where = ("running pid " + str(info["pid"]) if info["running"]
                 else f"finished ({info['finished']})" if info["finished"] else "stopped")
        eq = "-" if info["equity"] is None else f"{info['equity']:.2f}"
        console().print(f"{folder.name:<24} {where:<22} steps {info['steps']:<7} equity {eq:<14} "
                        f"{info['state']}")


def register(app: typer.Typer) -> None:
    """Add the ``paper`` group to ``app``."""
    group = typer.Typer(help="Paper trading: the backtest's session loop on a live clock.",
                        no_args_is_help=True)
    group.command("start")(start)
    group.command("status")(status)
    group.command("stop")(stop)
    group.command("switch")(switch)
    group.command("report")(report)
    group.command("list")(list_sessions)
    app.add_typer(group, name="paper")
