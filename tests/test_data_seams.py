"""Adjustment seams, spikes and jumps are found and stated; repairs are recorded or refused."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradesim.data import calendars
from tradesim.data.files import FileSource, read_bars
from tradesim.data.load import load_market, verify_source
from tradesim.data.quality import (
    REPAIR_COLUMNS,
    RepairRefusedError,
    check_bars,
    enforce,
    render_repairs,
)
from tradesim.errors import DataQualityError, DataQualityWarning

YAHOO = "Date,Open,High,Low,Close,Adj Close,Volume\n"


def _walk(n: int = 120, seed: int = 0, start: str = "2021-01-04") -> pd.DataFrame:
    """``n`` consistent daily rows on consecutive XNYS sessions, Adj Close equal to Close."""
    days = calendars.sessions(start, pd.Timestamp(start) + pd.Timedelta(days=3 * n))[:n]
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]] * np.exp(rng.normal(0, 0.002, n))
    spread = np.abs(rng.normal(0, 0.005, n)) + 0.001
    return pd.DataFrame({"Date": days.strftime("%Y-%m-%d"), "Open": open_,
                         "High": np.maximum(open_, close) * (1 + spread),
                         "Low": np.minimum(open_, close) * (1 - spread), "Close": close,
                         "Adj Close": close.copy(),
                         "Volume": rng.integers(10**6, 2 * 10**6, n).astype(float)})


def _write(tmp_path: Path, frame: pd.DataFrame, name: str = "test.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _by_check(findings: list, check: str) -> list[tuple[str, str]]:
    return [(str(f.time), f.message) for f in findings if f.check == check]


# --- adjustment-factor seams ---------------------------------------------------------------


def test_factor_step_without_dividend_is_found_with_date_and_size(tmp_path: Path) -> None:
    frame = _walk()
    frame.loc[:59, "Adj Close"] *= 1.10  # the first download adjusted 10% less: a -9.1% seam
    bars = read_bars(_write(tmp_path, frame))
    (finding,) = check_bars(bars)
    assert (finding.check, str(finding.time)) == ("adjustment_step", frame.Date[60])
    assert "x0.9091" in finding.message and "TEST" in str(finding)
    assert "--quality repair" in finding.fix


@pytest.mark.parametrize("move", [6.33, 0.58])  # the +533% and -42% adjusted days of the issue
def test_adjusted_move_with_no_raw_move_is_an_adjustment_step(tmp_path: Path,
                                                              move: float) -> None:
    frame = _walk()
    frame.loc[60:, "Adj Close"] *= move
    findings = check_bars(read_bars(_write(tmp_path, frame)))
    assert [(f.check, str(f.time)) for f in findings] == [("adjustment_step", frame.Date[60])]


def test_dividends_and_raw_splits_explain_factor_steps(tmp_path: Path) -> None:
    frame = _walk()
    for i in (20, 40, 80):                          # ordinary 1% dividends
        frame.loc[:i - 1, "Adj Close"] *= 0.99
    frame.loc[:99, "Adj Close"] *= 0.9              # a 10% special dividend: Close fell 10%
    frame.loc[100:, ["Open", "High", "Low", "Close"]] *= 0.9
    frame.loc[100:, "Adj Close"] *= 0.9
    frame.loc[:49, ["Open", "High", "Low", "Close"]] *= 2  # Close not split-adjusted (2:1 at 50)
    assert check_bars(read_bars(_write(tmp_path, frame))) == []


def test_repair_back_adjusts_at_the_seam_and_records_it(tmp_path: Path) -> None:
    frame = _walk()
    truth = read_bars(_write(tmp_path, frame, "truth.csv"))
    frame.loc[:59, "Adj Close"] *= 1.10
    fixed = enforce(read_bars(_write(tmp_path, frame)), policy="repair")
    assert check_bars(fixed) == []
    np.testing.assert_allclose(fixed.close, truth.close, rtol=1e-5)
    np.testing.assert_allclose(fixed.open, truth.open, rtol=1e-5)
    (row,) = fixed.meta["repairs"]
    assert set(row) == set(REPAIR_COLUMNS)
    assert (row["symbol"], row["time"], row["check"]) == ("TEST", frame.Date[60],
                                                          "adjustment_step")
    assert "x0.909" in row["after"] and "60 earlier bar(s)" in row["after"]


def test_spliced_yahoo_downloads_are_found_by_verify_and_repaired(shared_data: Path,
                                                                  tmp_path: Path) -> None:
    """Two real AAPL downloads: one taken 2015-12-31 (Adj Close normalised to Close then), one
    taken 2024 (the shared file), spliced after 2015-06-30, as a user would stitch them."""
    src = pd.read_csv(shared_data / "yahoo" / "aapl.csv")
    day = pd.to_datetime(src.Date)
    at_e = src[day == "2015-12-31"].iloc[0]
    early = src[day <= "2015-06-30"].copy()
    early["Adj Close"] *= at_e["Close"] / at_e["Adj Close"]
    spliced = pd.concat([early, src[day > "2015-06-30"]])
    path = _write(tmp_path, spliced, "aapl.csv")
    findings = verify_source("files", root=path, allow=("zero_volume", "missing_session"))
    (step,) = _by_check(findings, "adjustment_step")
    assert step[0] == "2015-07-01"
    size = at_e["Adj Close"] / at_e["Close"]        # the dividends of 2015-07 .. 2015-12
    assert f"x{size:.4f}" in step[1]
    assert {f.check for f in findings} == {"adjustment_step"}
    market = load_market(symbols=["AAPL"], source="files", quality="repair", news=False,
                         allow=("zero_volume", "missing_session"),
                         source_options={"root": path})
    fixed = market.full("AAPL")
    good = FileSource(shared_data / "yahoo", allow=("zero_volume",)).load("AAPL")
    np.testing.assert_allclose(fixed.close, good.close, rtol=1e-6)  # the one-download series
    assert market.repairs[["symbol", "time", "check"]].values.tolist() == [
        ["AAPL", "2015-07-01", "adjustment_step"]]
    from typer.testing import CliRunner

    from tradesim.cli import app

    shown = CliRunner().invoke(app, ["data", "verify", str(path), "--allow", "zero_volume",
                                     "--allow", "missing_session"])
    assert shown.exit_code == 1  # findings under --quality raise
    assert "adjustment_step" in shown.output and "2015-07-01" in shown.output


def test_goog_file_splice_is_verified_and_repaired_on_its_own(shared_data: Path) -> None:
    findings = verify_source("files", root=shared_data / "fnspid", exchange="XNYS")
    assert [(f.check, str(f.time)) for f in findings
            if f.check in ("splice", "adjustment_step", "spike", "jump")] == [
        ("splice", "2020-07-06")]
    market = load_market(symbols=["GOOG"], source="files", quality="repair", news=False,
                         source_options={"root": shared_data / "fnspid"})
    (row,) = market.repairs.itertuples(index=False)
    assert (row.time, row.check) == ("2020-07-06", "splice")
    assert "x0.0500" in row.before or "x0.05" in row.before


# --- spikes and jumps relative to the series' own volatility -------------------------------


def test_consistent_one_bar_x1000_spike_is_found_and_never_repaired(tmp_path: Path) -> None:
    frame = _walk()
    frame.loc[70, ["Open", "High", "Low", "Close", "Adj Close"]] *= 1000
    bars = read_bars(_write(tmp_path, frame))
    (finding,) = check_bars(bars)
    assert (finding.check, str(finding.time)) == ("spike", frame.Date[70])
    with pytest.raises(RepairRefusedError) as err:
        enforce(bars, policy="repair")
    assert [(f.check, str(f.time)) for f in err.value.findings] == [("spike", frame.Date[70])]
    assert isinstance(err.value, DataQualityError) and "TEST" in str(err.value)


@pytest.mark.parametrize("factor,reverts", [(4.5, False), (0.4, True)])
def test_jumps_far_beyond_own_volatility_are_found(tmp_path: Path, factor: float,
                                                   reverts: bool) -> None:
    frame = _walk()
    end = 75 if reverts else len(frame)              # a bad block for 5 bars, or a lasting shift
    frame.loc[70:end - 1, ["Open", "High", "Low", "Close", "Adj Close"]] *= factor
    findings = check_bars(read_bars(_write(tmp_path, frame)))
    want = [("jump", frame.Date[70])] + ([("jump", frame.Date[75])] if reverts else [])
    assert [(f.check, str(f.time)) for f in findings] == want
    assert ("undone 5 bar(s) later" in findings[0].message) is reverts


def test_ordinary_volatile_moves_are_not_spikes_or_jumps(tmp_path: Path) -> None:
    frame = _walk(n=500, seed=3)
    frame.loc[200:, ["Open", "High", "Low", "Close", "Adj Close"]] *= 0.85  # a -15% day
    assert check_bars(read_bars(_write(tmp_path, frame))) == []


# --- repairs are stated, and never make an absurd bar look valid ---------------------------


def test_fat_finger_close_is_rejected_not_widened(tmp_path: Path) -> None:
    frame = _walk()
    frame.loc[50, ["Close", "Adj Close"]] = 1e12
    bars = read_bars(_write(tmp_path, frame))
    with pytest.raises(RepairRefusedError) as err:
        enforce(bars, policy="repair")
    checks = {(f.check, str(f.time)) for f in err.value.findings}
    assert checks == {("bad_high", frame.Date[50]), ("spike", frame.Date[50])}
    assert "not widened" in str(err.value)


def test_small_bad_high_is_widened_and_recorded_before_and_after(tmp_path: Path) -> None:
    frame = _walk()
    frame.loc[5, "High"] = max(frame.Open[5], frame.Close[5]) * 0.998
    fixed = enforce(read_bars(_write(tmp_path, frame)), policy="repair")
    (row,) = fixed.meta["repairs"]
    assert (row["time"], row["check"]) == (frame.Date[5], "bad_high")
    assert row["before"].startswith("high ") and row["after"] == f"high {fixed.high[5]:.6g}"
    assert render_repairs([row]) == f"TEST {frame.Date[5]} bad_high: {row['before']} -> " \
                                    f"{row['after']}"


def test_market_repairs_table_gathers_every_symbol(tmp_path: Path) -> None:
    a, b = _walk(seed=1), _walk(seed=2)
    a.loc[:59, "Adj Close"] *= 1.1
    b.loc[5, "High"] = max(b.Open[5], b.Close[5]) * 0.998
    _write(tmp_path, a, "aaa.csv")
    _write(tmp_path, b, "bbb.csv")
    market = load_market(symbols=None, source="files", quality="repair", news=False,
                         source_options={"root": tmp_path})
    table = market.repairs
    assert list(table.columns) == list(REPAIR_COLUMNS)
    assert table[["symbol", "check"]].values.tolist() == [["AAA", "adjustment_step"],
                                                          ["BBB", "bad_high"]]
    assert render_repairs(table).splitlines()[0].startswith(f"AAA {a.Date[60]} adjustment_step: ")
    assert load_market(symbols=None, source="files", news=False,
                       source_options={"root": tmp_path}, allow=("adjustment_step",
                                                                 "bad_high")).repairs.empty


def test_warn_sorts_unsorted_bars_and_records_it(tmp_path: Path) -> None:
    frame = _walk()
    frame = frame.iloc[np.r_[0:30, 33, 32, 31, 34:len(frame)]]
    path = _write(tmp_path, frame)
    with pytest.warns(DataQualityWarning):
        market = load_market(symbols=["TEST"], source="files", quality="warn", news=False,
                             source_options={"root": path})
    bars = market.full("TEST")
    assert (np.diff(bars.time.astype(np.int64)) > 0).all() and len(bars) == len(frame)
    assert set(market.repairs.check) == {"unsorted"}


# --- 24/7 data: its own calendar, and repair never drops its weekends -----------------------


def _every_day(n: int = 100) -> pd.DataFrame:
    frame = _walk(n=n)
    frame["Date"] = pd.date_range("2021-01-01", periods=n, freq="D").strftime("%Y-%m-%d")
    return frame


def test_round_the_clock_data_on_a_stock_calendar_is_refused_not_dropped(tmp_path: Path) -> None:
    path = _write(tmp_path, _every_day(), "btc.csv")
    with pytest.raises(RepairRefusedError) as err:
        load_market(symbols=["BTC"], source="files", quality="repair", news=False,
                    allow=("missing_session",), source_options={"root": path})
    (finding,) = err.value.findings
    off = 100 - len(calendars.sessions("2021-01-01", "2021-04-10"))  # weekends and 4 holidays
    assert off == 33
    assert finding.check == "non_session" and "33 of 100 bars (33%)" in finding.message
    assert "--exchange" in finding.fix and "24/7" in finding.fix


def test_round_the_clock_data_loads_whole_on_the_24_7_calendar(tmp_path: Path) -> None:
    path = _write(tmp_path, _every_day(), "btc.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        market = load_market(symbols=["BTC"], source="files", quality="repair", news=False,
                             exchange="24/7", source_options={"root": path})
    bars = market.full("BTC")
    assert len(bars) == 100 and market.repairs.empty
    assert bars.time[0] == np.datetime64("2021-01-02T00:00", "ns")  # the day's end, UTC
    assert verify_source("files", root=path, exchange="24/7") == []
    off = verify_source("files", root=path, allow=("missing_session",))
    assert {f.check for f in off} == {"non_session"} and str(off[0].time) == "2021-01-01"
