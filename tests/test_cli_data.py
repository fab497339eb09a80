"""The ``tradesim data`` commands, through typer's CliRunner and one real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tradesim.cli import app
from tradesim.data.load import load_market
from tradesim.data.store import Store


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private TRADESIM_CACHE for the test."""
    root = tmp_path / "cache"
    monkeypatch.setenv("TRADESIM_CACHE", str(root))
    return root


def _run(*args: str) -> object:
    return CliRunner().invoke(app, list(args))


def test_bare_data_summarises_the_embedded_sample(cache: Path) -> None:
    result = _run("data")
    assert result.exit_code == 0, result.output
    market = load_market(symbols=None, source="sample")
    for symbol, fingerprint in market.fingerprints().items():
        assert fingerprint in result.output
        assert symbol in result.output or symbol == "news"
    assert f"{len(market.news):,} news items" in result.output


def test_fetch_fills_the_cache_then_list_and_verify_show_it(cache: Path) -> None:
    result = _run("data", "fetch", "ALPHA", "MKT", "--data", "synthetic",
                  "--start", "2015-01-01", "--end", "2015-12-31")
    assert result.exit_code == 0, result.output
    assert "ALPHA: 252 1d bars, 2015-01-02 .. 2015-12-31" in result.output
    entries = Store(cache).entries()
    assert [(e.symbol, e.rows) for e in entries] == [("ALPHA", 252), ("MKT", 252)]
    listed = _run("data", "list")
    assert listed.exit_code == 0 and entries[0].fingerprint in listed.output
    verified = _run("data", "verify")
    assert verified.exit_code == 0 and "no findings" in verified.output


def test_fetch_reports_an_unknown_symbol_per_symbol_and_exits_2(cache: Path) -> None:
    result = _run("data", "fetch", "ALPHA", "NOPE", "--data", "synthetic",
                  "--start", "2015-01-01", "--end", "2015-01-31")
    assert result.exit_code == 2
    assert "NOPE" in result.output and "Traceback" not in result.output
    assert [e.symbol for e in Store(cache).entries()] == ["ALPHA"]


def test_library_errors_are_one_line_with_exit_code_2(cache: Path) -> None:
    result = _run("data", "fetch", "AAPL", "--data", "nosuch")
    assert result.exit_code == 2
    assert "--data 'nosuch'" in result.output and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_verify_a_file_with_findings_exits_1_unless_warn(tmp_path: Path, cache: Path) -> None:
    bad = tmp_path / "acme.us.txt"
    bad.write_text("Date,Open,High,Low,Close,Volume,OpenInt\n"
                   "2010-04-22,10,11,9,10.5,1000,0\n"
                   "2010-04-23,10.5,11,10,10.8,1200,0\n"
                   "2010-04-26,10.8,11.2,10.6,11,0,0\n"
                   "2010-04-27,11,11.5,10.9,11.2,900,0\n")
    result = _run("data", "verify", str(bad))
    assert result.exit_code == 1, result.output
    assert "ACME" in result.output and "2010-04-26" in result.output
    assert "zero_volume" in result.output
    assert _run("data", "verify", str(bad), "--quality", "warn").exit_code == 0
    assert _run("data", "verify", str(bad), "--allow", "zero_volume").exit_code == 0


def test_real_subprocess_fetch(tmp_path: Path) -> None:
    env = {**os.environ, "TRADESIM_CACHE": str(tmp_path / "cache")}
    fetch = subprocess.run([sys.executable, "-m", "tradesim.cli", "data", "fetch", "BRAVO",
                            "--data", "sample", "--start", "2019-01-01", "--end", "2019-12-31"],
                           capture_output=True, text=True, env=env, timeout=120, check=False)
    assert fetch.returncode == 0, fetch.stderr
    assert "BRAVO: 252 1d bars" in fetch.stdout
    assert [(e.symbol, e.rows) for e in Store(tmp_path / "cache").entries()] == [("BRAVO", 252)]


def _bad_folder(root: Path) -> Path:
    """A folder of two bar files, one with a zero-volume day."""
    root.mkdir()
    head = "Date,Open,High,Low,Close,Volume,OpenInt\n"
    good = ("2010-04-22,10,11,9,10.5,1000,0\n2010-04-23,10.5,11,10,10.8,1200,0\n"
            "2010-04-26,10.8,11.2,10.6,11,1100,0\n")
    (root / "good.us.txt").write_text(head + good)
    (root / "acme.us.txt").write_text(head + good.replace(",1100,", ",0,"))
    return root


def test_verify_takes_a_folder_as_typed(tmp_path: Path, cache: Path) -> None:
    folder = _bad_folder(tmp_path / "prices")
    result = _run("data", "verify", str(folder))
    assert result.exit_code == 1, result.output
    assert "ACME" in result.output and "GOOD" not in result.output
    assert _run("data", "verify", str(folder), "--symbols", "GOOD").exit_code == 0


def test_verify_names_a_missing_path_or_a_doubled_source(tmp_path: Path, cache: Path) -> None:
    missing = _run("data", "verify", str(tmp_path / "nope"))
    assert missing.exit_code == 2 and "nope" in missing.output
    both = _run("data", "verify", str(tmp_path), "--data", "sample")
    assert both.exit_code == 2 and "--data" in both.output
    assert _run("data", "verify", "--data", "sample", "--symbols", "ALPHA").exit_code == 0


def test_verify_reads_a_news_file_and_names_a_bad_one(tmp_path: Path, cache: Path) -> None:
    news = tmp_path / "news.csv"
    news.write_text("published_at,symbol,title\n2019-01-02T15:00:00Z,ALPHA,ALPHA beats\n")
    ok = _run("data", "verify", "--data", "sample", "--symbols", "ALPHA", "--news", str(news))
    assert ok.exit_code == 0, ok.output
    news.write_text("published_at,symbol,title\nnot a date,ALPHA,ALPHA beats\n")
    bad = _run("data", "verify", "--data", "sample", "--symbols", "ALPHA", "--news", str(news))
    assert bad.exit_code == 2 and str(news) in bad.output and "Traceback" not in bad.output


def test_bare_data_summarises_any_source_with_the_shared_flags(cache: Path) -> None:
    result = _run("data", "--data", "synthetic", "--symbols", "ALPHA", "--symbols", "BRAVO",
                  "--start", "2015-01-01", "--end", "2015-12-31")
    assert result.exit_code == 0, result.output
    market = load_market(symbols=["ALPHA", "BRAVO"], source="synthetic", start="2015-01-01",
                         end="2015-12-31")
    for fingerprint in market.fingerprints().values():
        assert fingerprint in result.output


def test_fetch_takes_symbols_as_words_or_as_the_flag(cache: Path) -> None:
    result = _run("data", "fetch", "ALPHA", "--symbols", "BRAVO,MKT", "--data", "sample",
                  "--start", "2019-01-01", "--end", "2019-03-31")
    assert result.exit_code == 0, result.output
    assert [e.symbol for e in Store(cache).entries()] == ["ALPHA", "BRAVO", "MKT"]
    assert _run("data", "fetch", "--data", "sample").exit_code == 2  # no symbol named
