"""The HTML tear sheet: self-contained, summary cards, every section, interactive chart specs,
monitors explained, config as a table, fill-mode stamp, trade cap, downsampling and speed.

That the pages render in a real browser is tests/test_report_browser.py's job.
"""

from __future__ import annotations

import json
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd

from tradesim.report.charts import MAX_POINTS, keep_rows
from tradesim.report.tearsheet import sharpe_ci, write_tearsheet
from tradesim.rewards.metrics import compute_metrics


class _Outline(HTMLParser):
    """Collects sections, images, chart specs, cards, element ids/classes and text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.ids: dict[str, str] = {}
        self.cards: list[str] = []
        self.rows = 0
        self.text: list[str] = []
        self.external: list[str] = []
        self.specs: list[dict] = []
        self.scripts = 0
        self._spec = False
        self._buf: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id") or "")
        if tag == "img":
            self.images.append(a.get("src") or "")
        for key in ("src", "href"):
            if (a.get(key) or "").startswith(("http:", "https:", "//")):
                self.external.append(f"{tag} {a[key]}")
        if tag == "script":
            self.scripts += 1
            self._spec = a.get("class") == "chart-spec"
            self._buf = []
        if tag == "tr":
            self.rows += 1
        if a.get("data-key"):
            self.cards.append(a["data-key"] or "")
        if a.get("id"):
            self.ids[a["id"]] = a.get("class") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._spec:
            self.specs.append(json.loads("".join(self._buf)))
            self._spec = False

    def handle_data(self, data: str) -> None:
        if self._spec:
            self._buf.append(data)
        elif self.lasttag not in {"script", "style"}:
            self.text.append(data)


def _run(n_days: int, n_trades: int, *, freq: str = "B") -> dict:
    rng = np.random.default_rng(3)
    index = pd.date_range("2019-01-01", periods=n_days, tz="UTC", freq=freq)
    if freq == "B":
        index = index + pd.Timedelta(hours=21)
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


def test_tearsheet_has_cards_every_section_and_inline_charts(tmp_path: Path) -> None:
    run = _run(700, 40)
    meta = {"agent": "sma_cross", "fill_mode": "next_open", "isolation": "in-process",
            "fingerprints": {"SPY": "ab12cd34ef56ab12"},
            "monitors": {"turnover": 3.0, "peak_leverage": 0.9, "top1pct_pnl_share": 0.2},
            "config": {"agent": "sma_cross", "symbols": ["SPY", "TLT", "GLD"],
                       "agent_params": {"fast": 10, "slow": 30},
                       "costs": {"commission_bps": 1.0}, "max_leverage": 1.0}}
    path = write_tearsheet(tmp_path / "report.html", title="SMA cross <test>", meta=meta,
                           subtitle="2 symbols", **run)
    page = _parse(path)
    assert page.sections == ["run", "equity", "drawdown", "exposure", "costs", "monthly",
                             "monitors", "metrics", "trades", "config"]
    assert {"final_equity", "total_return", "sharpe", "max_drawdown", "costs", "trades",
            "monitors"} <= set(page.cards)
    assert not page.images and not page.external
    html = path.read_text(encoding="utf-8")
    assert html.count("plotly.js v") == 1  # the chart library inlined once, no CDN
    kinds = [[t["type"] for t in spec["data"]] for spec in page.specs]
    assert len(page.specs) == 4 and kinds[-1] == ["heatmap"]  # equity, drawdown, exposure, month
    equity = page.specs[0]["data"][0]
    assert len(equity["x"]) == 700 and abs(equity["y"][-1] - run["equity"].iloc[-1]) < 1
    text = " ".join(page.text)
    assert "SMA cross <test>" in text and "ab12cd34ef56ab12" in text and "next_open" in text
    config = html.split("<section id=config>")[1].split("</section>")[0]
    assert "<th class=k>fast</th><td class=k>10</td>" in config  # a table, not a dict dump
    assert "{" not in config and "Agent parameters" in config
    assert "danger" not in page.ids["fill-mode"] and "warnings" not in page.ids
    assert page.rows >= 40 + 1


def test_monitors_are_explained_and_flag_when_they_trip(tmp_path: Path) -> None:
    run = _run(300, 5)
    meta = {"monitors": {"turnover": 40.0, "mean_holding_bars": 12.0, "peak_leverage": 1.0,
                         "top1pct_pnl_share": 0.35, "pnl_without_top1pct": 0.1,
                         "long_pnl": float("nan")},
            "config": {"max_leverage": 1.0}}
    html = write_tearsheet(tmp_path / "r.html", title="t", meta=meta, **run).read_text()
    monitors = html.split("<section id=monitors>")[1].split("</section>")[0]
    assert 'data-monitor="turnover" data-state="tripped"' in monitors
    assert 'data-monitor="top1pct_pnl_share" data-state="watch"' in monitors
    assert 'data-monitor="peak_leverage" data-state="ok"' in monitors
    assert 'data-monitor="long_pnl" data-state="n/a"' in monitors and "per-symbol" in monitors
    assert "catches churning" in monitors and "1 monitor(s) tripped" in monitors
    assert '<div class="card bad" data-key="monitors">' in html


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


def test_orders_cut_for_cash_and_unreached_targets_are_flagged(tmp_path: Path) -> None:
    run = _run(300, 5)
    clean = _parse(write_tearsheet(tmp_path / "a.html", title="t", meta={"agent": "x",
                                   "orders_shrunk": 0, "targets_unreached": 0}, **run))
    assert "warnings" not in clean.ids
    path = write_tearsheet(tmp_path / "b.html", title="t", meta={
        "agent": "x", "orders_shrunk": 3, "targets_unreached": 1}, **run)
    text = " ".join(_parse(path).text)
    assert "3 order(s) cut at the fill to the cash and leverage the account had" in text
    assert "1 target(s) the participation cap held back were not reached" in text


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


def test_long_series_are_decimated_keeping_every_extreme() -> None:
    rng = np.random.default_rng(1)
    values = np.cumsum(rng.normal(0, 1, 100_000))
    rows = keep_rows(values)
    assert len(rows) <= MAX_POINTS + 2 and rows[0] == 0 and rows[-1] == len(values) - 1
    assert values.argmin() in rows and values.argmax() in rows
    assert (np.diff(rows) > 0).all()
    frame = np.c_[values, -values, rng.normal(0, 1, 100_000)]
    shared = keep_rows(frame)
    assert all(frame[:, j].argmax() in shared and frame[:, j].argmin() in shared
               for j in range(3))
    assert len(keep_rows(values[:4000])) == 4000  # short series are drawn whole


def test_a_100k_bar_page_is_written_fast_and_stays_small(tmp_path: Path) -> None:
    run = _run(100_000, 3000, freq="min")
    started = time.perf_counter()
    path = write_tearsheet(tmp_path / "r.html", title="t", meta={}, **run)
    took = time.perf_counter() - started
    page = _parse(path)
    assert took < 6.0, f"{took:.1f} s"  # about 1 s here; slack for a shared CI box
    assert path.stat().st_size < 8_000_000
    for spec in page.specs:
        assert all(len(t.get("x", [])) <= MAX_POINTS + 2 for t in spec["data"])
    equity = page.specs[0]["data"][0]
    assert max(equity["y"]) == round(float(run["equity"].max()), 2)
    assert "bars drawn as" in " ".join(page.text)


def test_sharpe_interval_brackets_the_estimate() -> None:
    run = _run(1000, 0)
    low, high, how = sharpe_ci(run["equity"], 252)  # type: ignore[misc]
    assert low < run["metrics"]["sharpe"] < high and "Mertens" in how
    assert sharpe_ci(run["equity"].iloc[:10], 252) is None


def test_run_report_states_the_cost_model_and_names_its_data(tmp_path: Path) -> None:
    from tradesim import BacktestConfig, run_backtest

    config = BacktestConfig.build(agent="sma_cross", symbols=("ALPHA",), start="2018-01-01",
                                  end="2018-06-30", costs="retail")
    result = run_backtest(config=config, save_to=tmp_path / "run")
    page = (tmp_path / "run" / "report.html").read_text()
    line = page[page.index('id="cost-model"'):].split("</p>", 1)[0]
    assert "sqrt" in line and "commission" in line
    title = page.split("<title>")[1].split("</title>")[0]
    assert title == "sma_cross on sample: ALPHA · 1d · 2018-01-02 → 2018-06-29"
    paid = page.split("<table id=costs-paid>")[1].split("</table>")[0]
    total = sum(result.meta.get("costs_paid", {}).values()) or float(
        result.equity["costs"].sum())
    assert f"{total:,.0f}" in page.split('data-key="costs"')[1].split("</div></div>")[0]
    assert "commission" in paid
