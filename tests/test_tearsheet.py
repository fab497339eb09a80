"""The HTML tear sheet: self-contained, every section present, fill-mode stamp, trade cap."""

from __future__ import annotations

import base64
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradesim.report.tearsheet import write_tearsheet
from tradesim.rewards.metrics import compute_metrics


class _Outline(HTMLParser):
    """Collects section ids, image sources, element ids/classes and text of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.ids: dict[str, str] = {}
        self.rows = 0
        self.text: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id") or "")
        if tag == "img":
            self.images.append(a.get("src") or "")
        if tag in {"script", "link"} or (a.get("src") or "").startswith("http"):
            self.external.append(tag)
        if tag == "tr":
            self.rows += 1
        if a.get("id"):
            self.ids[a["id"]] = a.get("class") or ""

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _run(n_days: int, n_trades: int) -> dict:
    rng = np.random.default_rng(3)
    index = pd.bdate_range("2019-01-01", periods=n_days, tz="UTC") + pd.Timedelta(hours=21)
    equity = pd.Series(1e5 * np.cumprod(1 + rng.normal(3e-4, 0.01, n_days)), index=index)
    bench = pd.Series(300 * np.cumprod(1 + rng.normal(2e-4, 0.011, n_days)), index=index)
    weights = pd.DataFrame({"SPY": np.where(np.arange(n_days) % 60 < 40, 0.6, 0.0),
                            "TLT": 0.3, "GLD": np.where(np.arange(n_days) % 90 < 20, -0.2, 0.1)},
                           index=index)
    trades = pd.DataFrame({
        "symbol": rng.choice(["SPY", "TLT", "GLD"], n_trades),
        "entry_time": index[:n_trades], "exit_time": index[1:n_trades + 1],
        "quantity": rng.integers(1, 100, n_trades).astype(float),
        "entry_price": 100.0, "exit_price": 100 + rng.normal(0, 2, n_trades),
        "pnl": rng.normal(5, 50, n_trades), "return": rng.normal(0.001, 0.02, n_trades),
        "bars_held": rng.integers(1, 20, n_trades)})
    metrics = compute_metrics(equity=equity, benchmark=bench, weights=weights, trades=trades)
    return dict(equity=equity, benchmark=bench, weights=weights, trades=trades, metrics=metrics)


def _parse(path: Path) -> _Outline:
    outline = _Outline()
    outline.feed(path.read_text(encoding="utf-8"))
    return outline


def test_tearsheet_has_every_section_and_inline_plots(tmp_path: Path) -> None:
    run = _run(700, 40)
    meta = {"agent": "sma_cross(fast=10, slow=30)", "symbols": ["SPY", "TLT", "GLD"],
            "start": "2019-01-01", "end": "2021-09-08", "costs": {"commission_bps": 1.0},
            "fill_mode": "next_open", "fingerprints": {"SPY": "ab12cd34ef56ab12"}}
    path = write_tearsheet(tmp_path / "report.html", title="SMA cross <test>", meta=meta, **run)
    page = _parse(path)
    assert page.sections == ["run", "metrics", "equity", "drawdown", "exposure", "monthly",
                             "trades"]
    assert len(page.images) == 4 and not page.external
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    text = " ".join(page.text)
    assert "SMA cross <test>" in text and "ab12cd34ef56ab12" in text and "next_open" in text
    assert "danger" not in page.ids["fill-mode"] and "warnings" not in page.ids
    assert page.rows >= 40 + 1


def test_same_bar_fills_and_leakage_are_flagged_red(tmp_path: Path) -> None:
    run = _run(300, 0)
    meta = {"agent": "llm", "fill_mode": "same_bar_close",
            "leakage": ["model knowledge cutoff 2023-10 is after the window end 2020-06-30"],
            "warnings": ["quality=warn: 2 findings"]}
    path = write_tearsheet(tmp_path / "r.html", title="t", meta=meta, **run)
    page = _parse(path)
    assert "danger" in page.ids["fill-mode"]
    text = " ".join(page.text)
    assert "LLM knowledge-cutoff leakage: model knowledge cutoff 2023-10" in text
    assert "quality=warn: 2 findings" in text and "no closed trades" in text


def test_trades_table_is_capped_and_intraday_has_no_monthly_heatmap(tmp_path: Path) -> None:
    run = _run(300, 250)
    index = pd.date_range("2021-03-01 14:31", periods=300, freq="min", tz="UTC")
    for key in ("equity", "benchmark", "weights"):
        run[key].index = index
    run["metrics"] = compute_metrics(equity=run["equity"], weights=run["weights"])
    path = write_tearsheet(tmp_path / "r.html", title="t", meta={}, max_trades=100, **run)
    page = _parse(path)
    assert "monthly" not in page.sections and "showing the last 100 of 250 trades" in " ".join(
        page.text)
    assert page.rows <= 100 + 1 + len(run["metrics"])


def test_tearsheet_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless Chromium on PATH to render the tear sheet")
    path = write_tearsheet(tmp_path / "r.html", title="t", meta={}, **_run(300, 10))
    shot = tmp_path / "r.png"
    subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox",
                    f"--screenshot={shot}", "--window-size=1200,3000", path.as_uri()],
                   check=True, timeout=60, capture_output=True)
    assert shot.stat().st_size > 10_000


def test_run_report_states_the_cost_model(tmp_path: Path) -> None:
    from tradesim import BacktestConfig, run_backtest

    config = BacktestConfig.build(agent="sma_cross", symbols=("ALPHA",), start="2018-01-01",
                                  end="2018-06-30", costs="retail")
    run_backtest(config=config, save_to=tmp_path / "run")
    page = (tmp_path / "run" / "report.html").read_text()
    line = page[page.index('id="costs"'):].split("</p>", 1)[0]
    assert "sqrt" in line and "commission" in line
