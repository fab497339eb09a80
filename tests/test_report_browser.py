"""Every HTML page, generated from real runs, loads in headless Chromium without an error.

Pages come from real code paths: a baseline backtest on the embedded sample, a rules-only
contest, a TradingGroup team, an LLM analyst against the scripted OpenAI-compatible server, the
leaderboard; the audit, out-of-sample and probe pages from their page writers. Each page is
opened in Chromium (the system browser, driven over the DevTools protocol) and must show no
console error or uncaught exception, draw every chart (Plotly's ``.main-svg`` with a nonzero
size), fetch nothing but the file itself (the page works offline), and answer a hover and a
zoom on the run page's equity chart. Skips with a reason when Chromium is not on PATH.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tradesim.data.load import load_market
from tradesim.data.view import MarketData
from tradesim.evaluate.backtest import BacktestConfig, run_backtest

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(b)), None)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    BROWSER is None, reason="no headless Chromium on PATH (make setup-dev installs it with "
                            "apt-get where root)")]
SYMBOLS = ("ALPHA", "BRAVO")
SCREENSHOT = os.environ.get("TRADESIM_REPORT_SCREENSHOT")  # a path: save the run page's PNG

_STATE = """JSON.stringify((() => {
  const charts = Array.from(document.querySelectorAll('div.chart'));
  const drawn = charts.filter(d => { const s = d.querySelector('.main-svg');
    if (!s) return false; const r = s.getBoundingClientRect(); return r.width > 0 && r.height > 0; });
  return {charts: charts.length, drawn: drawn.length, plotly: typeof Plotly !== 'undefined',
          empty: charts.filter(d => !d.data || !d.data.length).map(d => d.id),
          sections: Array.from(document.querySelectorAll('section[id]')).map(s => s.id),
          title: document.title, h1: (document.querySelector('h1') || {}).textContent || ''};
})())"""


@dataclass
class PageCheck:
    """What one page did in the browser."""

    url: str
    state: dict[str, Any]
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    hover: bool | None = None
    zoomed: bool | None = None


class Chromium:
    """Headless Chromium over the DevTools protocol (one browser, a fresh tab per page)."""

    def __init__(self, binary: str, profile: Path) -> None:
        from websockets.sync.client import connect

        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--disable-sync",
             "--disable-background-networking", "--disable-component-update",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and len(port_file.read_text().split()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{binary} did not open its DevTools port")
            time.sleep(0.1)
        port, path = port_file.read_text().split()[:2]
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(f"ws://127.0.0.1:{port}{path}",
                                                    max_size=None, open_timeout=30))
        self.events: list[dict[str, Any]] = []
        self._id = 0

    def send(self, method: str, params: dict[str, Any] | None = None, *,
             session: str | None = None, timeout: float = 60) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, session: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if any(e.get("method") == method and e.get("sessionId") == session
                   for e in self.events):
                return
            self.events.append(json.loads(self.ws.recv(
                timeout=max(0.1, deadline - time.monotonic()))))

    def evaluate(self, expression: str, session: str) -> Any:
        out = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": True}, session=session)
        if "exceptionDetails" in out:
            raise RuntimeError(f"evaluate failed: {out['exceptionDetails']}")
        return out["result"].get("value")

    def check(self, path: Path, *, interact: bool = False,
              screenshot: str | None = None) -> PageCheck:
        """Open ``path``, wait until its charts are drawn, and report what happened."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target,
                                                      "flatten": True})["sessionId"]
        self.events.clear()
        for method in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"):
            self.send(method, session=session)
        self.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 900,
                                                         "deviceScaleFactor": 1,
                                                         "mobile": False}, session=session)
        url = path.resolve().as_uri()
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_event("Page.loadEventFired", session)
        state: dict[str, Any] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = json.loads(self.evaluate(_STATE, session))
            if state["drawn"] == state["charts"]:
                break
            time.sleep(0.2)
        result = PageCheck(url=url, state=state)
        if interact and state["charts"]:
            result.hover, result.zoomed = self._interact(session)
        if screenshot:
            shot = self.send("Page.captureScreenshot", {"format": "png",
                                                        "captureBeyondViewport": False},
                             session=session)
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
        time.sleep(0.3)  # late console messages (a chart that throws after load)
        self.send("Runtime.evaluate", {"expression": "1"}, session=session)
        for e in self.events:
            if e.get("sessionId") != session:
                continue
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                result.errors.append(f"exception: {p['exceptionDetails']}")
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in {"error",
                                                                                 "assert"}:
                result.errors.append(f"console.{p['type']}: {p.get('args')}")
            elif e["method"] == "Log.entryAdded" and p["entry"].get("level") == "error":
                result.errors.append(f"log: {p['entry'].get('text')} {p['entry'].get('url')}")
            elif e["method"] == "Network.requestWillBeSent":
                result.requests.append(p["request"]["url"])
        self.send("Target.closeTarget", {"targetId": target})
        return result

    def _interact(self, session: str) -> tuple[bool, bool]:
        """Hover over, then drag-zoom across, the first chart; True each when it responded."""
        box = json.loads(self.evaluate("""JSON.stringify((() => {
            const el = document.querySelector('div.chart'); el.scrollIntoView();
            const r = el.querySelector('.nsewdrag').getBoundingClientRect();
            return {x: r.x, y: r.y, w: r.width, h: r.height,
                    range: el._fullLayout.xaxis.range.slice()}; })())""", session))
        x, y = box["x"] + box["w"] / 2, box["y"] + box["h"] / 2
        mouse = "Input.dispatchMouseEvent"
        self.send(mouse, {"type": "mouseMoved", "x": x, "y": y}, session=session)
        time.sleep(0.4)
        hover = self.evaluate("document.querySelector('div.chart .hoverlayer')"
                              ".childElementCount > 0", session)
        x0, x1 = box["x"] + box["w"] * 0.3, box["x"] + box["w"] * 0.6
        self.send(mouse, {"type": "mousePressed", "x": x0, "y": y, "button": "left",
                          "clickCount": 1}, session=session)
        for step in range(1, 11):
            self.send(mouse, {"type": "mouseMoved", "x": x0 + (x1 - x0) * step / 10, "y": y,
                              "button": "left", "buttons": 1}, session=session)
        self.send(mouse, {"type": "mouseReleased", "x": x1, "y": y, "button": "left",
                          "clickCount": 1}, session=session)
        time.sleep(0.4)
        after = self.evaluate("document.querySelector('div.chart')._fullLayout.xaxis.range"
                              ".slice()", session)
        return bool(hover), after != box["range"]

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    assert BROWSER is not None
    with tempfile.TemporaryDirectory(prefix="tradesim-chromium-") as profile:
        chrome = Chromium(BROWSER, Path(profile))
        try:
            yield chrome
        finally:
            chrome.close()


@pytest.fixture(scope="module")
def market() -> MarketData:
    return load_market(symbols=list(SYMBOLS), source="sample")


def _assert_clean(check: PageCheck, *, min_charts: int) -> None:
    state = check.state
    assert not check.errors, f"{check.url}: {check.errors}"
    assert state["charts"] >= min_charts, state
    assert state["plotly"] and state["drawn"] == state["charts"], state
    assert not state["empty"], f"charts without data: {state['empty']}"
    fetched = [u for u in check.requests if u != check.url and not u.startswith("data:")]
    assert not fetched, f"fetched more than the page itself: {fetched}"  # data: URIs are inline


def test_baseline_run_page_renders_and_answers_hover_and_zoom(browser: Chromium,
                                                              tmp_path: Path) -> None:
    config = BacktestConfig.build(agent="sma_cross", source="sample", benchmark="MKT")
    run_backtest(config=config, save_to=tmp_path)  # the whole embedded sample, as `make run`
    page = tmp_path / "report.html"
    html = page.read_text(encoding="utf-8")
    assert html.count("Copyright 2012-") == 1  # Plotly inlined once
    assert "cdn" not in html.split("<script>", 1)[0].lower()  # no external link before it
    check = browser.check(page, interact=True, screenshot=SCREENSHOT)
    _assert_clean(check, min_charts=5)
    assert check.hover and check.zoomed
    for anchor in ("run", "equity", "drawdown", "exposure", "costs", "monthly", "monitors",
                   "metrics", "trades", "config"):
        assert anchor in check.state["sections"]
    assert check.state["title"].startswith("sma_cross on sample: ALPHA")
    assert " · 1d · 2010-" in check.state["title"]


def test_contest_run_page_has_per_entrant_sections(browser: Chromium, market: MarketData,
                                                   tmp_path: Path) -> None:
    config = BacktestConfig.build(agent="contest_rules", symbols=SYMBOLS, start="2018-01-01",
                                  end="2018-06-30")
    run_backtest(config=config, data=market, save_to=tmp_path)
    check = browser.check(tmp_path / "report.html")
    _assert_clean(check, min_charts=7)
    for anchor in ("contest-setup", "contest-weights", "contest-scores", "contest-entrants",
                   "contest-costs", "monitors"):
        assert anchor in check.state["sections"]
    own = browser.check(tmp_path / "contest.html")
    _assert_clean(own, min_charts=2)


def test_team_run_page_has_roles_reflections_and_stops(browser: Chromium, market: MarketData,
                                                       tmp_path: Path) -> None:
    config = BacktestConfig.build(agent="tradinggroup", symbols=SYMBOLS, start="2018-03-01",
                                  end="2018-06-30")
    run_backtest(config=config, data=market, save_to=tmp_path)
    check = browser.check(tmp_path / "report.html")
    _assert_clean(check, min_charts=8)
    for anchor in ("team", "team-setup", "team-roles", "team-style", "team-exits",
                   "team-memory"):
        assert anchor in check.state["sections"]
    own = browser.check(tmp_path / "tradinggroup.html")
    _assert_clean(own, min_charts=3)


def test_llm_run_page_shows_tokens_and_dollars_per_role(browser: Chromium, market: MarketData,
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from tradesim.agents.registry import load_agent
    from tradesim.llm.testing import FakeOpenAIServer, Reply

    monkeypatch.setenv("REPORT_TEST_KEY", "sk-test-REPORTBROWSER0123456789")
    answer = json.dumps({"action": "buy", "weight": 0.5, "confidence": 0.6, "rationale": "up"})
    with FakeOpenAIServer(default=Reply(content=answer, prompt_tokens=120,
                                        completion_tokens=15)) as server:
        agent = load_agent("llm_analyst", every=5, gateway={
            "provider": "openai", "base_url": server.base_url, "api_key_env": "REPORT_TEST_KEY",
            "model": "gpt-4o-mini", "mode": "cached", "cache_path": str(tmp_path / "c.sqlite")})
        config = BacktestConfig.build(agent="llm_analyst", symbols=SYMBOLS, start="2019-01-02",
                                      end="2019-03-29")
        try:
            run_backtest(config=config, agent=agent, data=market, save_to=tmp_path / "run")
        finally:
            agent.close()
        sent = len(server.requests)
    page = tmp_path / "run" / "report.html"
    html = page.read_text(encoding="utf-8")
    cost = html.split("<section id=llm-cost>")[1].split("</section>")[0]
    assert f"{sent} calls</b> to gpt-4o-mini" in cost and sent > 0
    assert f"{sent * 120:,} prompt + {sent * 15:,} completion tokens" in cost
    assert 'data-key="llm_cost"' in html
    check = browser.check(page)
    _assert_clean(check, min_charts=6)
    assert "llm-cost" in check.state["sections"]


def test_leaderboard_page_renders(browser: Chromium, tmp_path: Path) -> None:
    from tradesim.evaluate.leaderboard import evaluate_agents

    data = load_market(symbols=list(SYMBOLS), source="sample", start="2018-01-01",
                       end="2018-12-31")
    board = evaluate_agents(agents=["sma_cross", "buy_and_hold"], data=data, n_boot=50,
                            registry=tmp_path / "trials.sqlite", isolate=False, lookahead=False)
    check = browser.check(board.save(tmp_path / "lb") / "leaderboard.html")
    _assert_clean(check, min_charts=2)
    assert {"table", "ci", "equity", "setup"} <= set(check.state["sections"])


def test_audit_oos_and_probe_pages_render(browser: Chromium, tmp_path: Path) -> None:
    from tradesim.report.audit import write_audit_page
    from tradesim.report.oos import write_oos_page
    from tradesim.report.probe import write_probe_report

    rows = [{"canary": c, "hack": "h", "goal": "g", "raw_return": r, "hardened": s,
             "reference": 0.4, "blocked": True, "met": m, "reason": "why", "error": None}
            for c, r, s, m in (("oracle", 3.0, 0.2, True), ("gambler", -0.5, float("nan"),
                                                              False))]
    audit = write_audit_page(tmp_path / "audit.html", rows=rows, references={
        "buy_and_hold": {"raw_return": 0.3, "hardened": 0.4}}, meta={
        "market": "ALPHA 2018", "buy_and_hold_hardened": 0.4})
    index = pd.date_range("2018-01-02", periods=60, freq="B", tz="UTC")
    rng = np.random.default_rng(0)
    equity = pd.DataFrame({k: 1e5 * np.cumprod(1 + rng.normal(0, 0.01, 60))
                           for k in ("qtnet/seed0", "qtnet/seed1", "buy_and_hold")}, index=index)
    runs = pd.DataFrame({"policy": ["qtnet", "qtnet", "buy_and_hold"], "seed": [0, 1, None],
                         "sharpe": [0.5, 0.7, 0.4], "sharpe_low": [-0.5, -0.2, -0.6],
                         "sharpe_high": [1.5, 1.6, 1.4]})
    oos = write_oos_page(tmp_path / "oos.html", runs=runs, summary=pd.DataFrame(
        {"policy": ["qtnet"], "metric": ["sharpe"], "mean": [0.6]}), equity=equity,
        meta={"held_out": "2018", "verdict": {"buy_and_hold": True}, "config": {"seeds": 2}})
    metric = SimpleNamespace(test="order", name="same action in both orders", value=0.7, lo=0.5,
                             hi=0.85, n=20, baseline=0.33, ideal="1.0", note="")
    probe = write_probe_report(tmp_path / "probe.html", SimpleNamespace(
        provider="openai", model="m", endpoint="e", temperature=0.0, items=20, samples=1,
        calls=40, abstained=0, metrics=[metric],
        answers=[{"item": 1, "test": "order", "variant": "a", "answer": "buy"}]))
    for path in (audit, oos, probe):
        _assert_clean(browser.check(path), min_charts=1)


def test_a_100k_bar_page_renders_decimated(browser: Chromium, tmp_path: Path) -> None:
    from tradesim.report.tearsheet import write_tearsheet
    from tradesim.rewards.metrics import compute_metrics

    n = 100_000
    rng = np.random.default_rng(7)
    index = pd.date_range("2019-01-02 14:31", periods=n, freq="min", tz="UTC")
    equity = pd.Series(1e5 * np.cumprod(1 + rng.normal(2e-6, 4e-4, n)), index=index)
    weights = pd.DataFrame({"ALPHA": np.where(np.arange(n) % 700 < 400, 0.5, 0.0),
                            "BRAVO": np.where(np.arange(n) % 900 < 300, -0.3, 0.2)},
                           index=index)
    book = pd.DataFrame({"costs": rng.exponential(0.05, n),
                         "gross_exposure": weights.abs().sum(axis=1),
                         "net_exposure": weights.sum(axis=1)}, index=index)
    page = write_tearsheet(tmp_path / "big.html", title="100k bars", equity=equity,
                           benchmark=None, weights=weights, trades=pd.DataFrame(), book=book,
                           metrics=compute_metrics(equity=equity, weights=weights),
                           meta={"fill_mode": "next_open"})
    check = browser.check(page, interact=True)
    _assert_clean(check, min_charts=4)
    assert check.hover and check.zoomed
