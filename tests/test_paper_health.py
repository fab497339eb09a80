"""Health endpoint (token, 127.0.0.1 only, degraded when overdue) and the paper CLI."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tradesim.cli import app
from tradesim.live.config import PaperConfig
from tradesim.live.daemon import PaperDaemon
from tradesim.live.health import HealthServer


def _get(port: int, token: str | None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/health", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_health_needs_the_token_and_listens_on_loopback_only() -> None:
    server = HealthServer(snapshot=lambda: {"status": "ok", "equity": 1.0}, token="s3cret").start()
    try:
        assert server.server.socket.getsockname()[0] == "127.0.0.1"
        assert _get(server.port, None)[0] == 401
        assert _get(server.port, "wrong")[0] == 401
        assert _get(server.port, "s3cret") == (200, {"status": "ok", "equity": 1.0})
        addrs = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
        for addr in addrs - {"127.0.0.1"}:  # not reachable on the machine's other interfaces
            with pytest.raises(OSError):
                socket.create_connection((addr, server.port), timeout=1).close()
    finally:
        server.close()


def test_snapshot_is_degraded_when_a_tick_is_overdue(tmp_path: Path) -> None:
    cfg = PaperConfig.build({"name": "h", "symbols": ["ALPHA"], "end": "2010-03-01",
                             "health": {"overdue_s": 5}})
    daemon = PaperDaemon(cfg, home=tmp_path, handle_signals=False)
    daemon.run()
    assert daemon.snapshot()["status"] == "ok"
    daemon._last_wall = time.time() - 60
    snap = daemon.snapshot()
    assert snap["status"] == "degraded" and "overdue" in snap["degraded"][0]
    assert snap["lag_s"] >= 60 and snap["equity"] > 0 and snap["last_tick_time"]


def test_cli_start_status_switch_report_list(tmp_path: Path) -> None:
    toml = tmp_path / "demo.toml"
    toml.write_text('agent = "sma_cross"\nsymbols = ["ALPHA", "BRAVO"]\nstart = "2019-01-01"\n'
                    '[risk]\ndaily_loss = 0.5\n')
    home = ["--home", str(tmp_path / "home")]
    runner = CliRunner()
    res = runner.invoke(app, ["paper", "start", str(toml), *home])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["paper", "status", "demo", "--json", *home])
    info = json.loads(res.output)
    assert info["finished"] == "end" and not info["running"] and info["steps"] > 200
    assert runner.invoke(app, ["paper", "switch", "demo", "halted", *home]).exit_code == 0
    assert (tmp_path / "home" / "demo" / "switch").read_text().strip() == "HALTED"
    assert runner.invoke(app, ["paper", "switch", "demo", "sideways", *home]).exit_code == 2
    res = runner.invoke(app, ["paper", "report", str(toml), *home])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "home" / "demo" / "report" / "report.html").stat().st_size > 1000
    res = runner.invoke(app, ["paper", "list", *home])
    assert "demo" in res.output and "finished" in res.output
    assert runner.invoke(app, ["paper", "status", "nope", *home]).exit_code == 2
