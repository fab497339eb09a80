"""Every route around the point-in-time view: blocked by isolation, caught in-process.

Routes: the view's private ``_bars``, ``gc.get_objects()``, the caller's frames
(``sys._getframe``, ``inspect.stack``), ``Bars.meta['path']``, a long window's ``.base`` /
a raw pointer, a book edit through a frame, a shared-array write, a source-file read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tradesim.agents.isolation import IsolatedAgent, bwrap_status
from tradesim.data.load import load_market
from tradesim.data.view import MarketData
from tradesim.engine.backtest import BacktestConfig, simulate
from tradesim.evaluate import canaries as cn
from tradesim.errors import EngineError, LedgerInvariantError
from tradesim.evaluate.lookahead import books_mismatch, check_lookahead

CONFIG = BacktestConfig.build(symbols=("ALPHA", "BRAVO"), start="2018-03-01", end="2018-06-29")
NEEDS_BWRAP = pytest.mark.skipif(not bwrap_status()[0], reason="bubblewrap unavailable here: "
                                 f"{bwrap_status()[1]}")


@pytest.fixture(scope="module")
def market() -> MarketData:
    return load_market(symbols=["ALPHA", "BRAVO"], source="sample", end="2018-08-31")


@pytest.fixture(scope="module")
def files(market: MarketData, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MarketData]:
    """The same market written to CSV files and read back (its bars carry meta['path'])."""
    root = tmp_path_factory.mktemp("prices")
    for s in market.symbols:
        frame = market.full(s).frame()
        frame.index = frame.index.strftime("%Y-%m-%d")
        frame.rename_axis("Date").rename(columns=str.capitalize).to_csv(root / f"{s}.csv")
    data = load_market(symbols=["ALPHA", "BRAVO"], source="files", quality="warn",
                       source_options={"root": str(root)}, end="2018-08-31")
    return root, data


def _leaks(agent: cn._Canary) -> int:
    return sum(agent.leaks.values())


def _isolated_leaks(agent: cn._Canary, data: MarketData, sandbox: str = "process") -> int:
    wrapped = IsolatedAgent(agent, sandbox=sandbox)  # type: ignore[arg-type]
    simulate(config=CONFIG, agent=wrapped, data=data)
    assert sum(wrapped.final_state["attempts"].values()) > 0  # the route was tried
    return sum(wrapped.final_state["leaks"].values())


def _inspect_peeker() -> cn.FramePeeker:
    return cn.FramePeeker(via="inspect")


@pytest.mark.parametrize("make", [cn.PrivatePeeker, cn.GcPeeker, cn.FramePeeker,
                                  _inspect_peeker])
def test_memory_routes_leak_in_process_and_the_check_catches_them(make, market) -> None:
    agent = make()
    simulate(config=CONFIG, agent=agent, data=market)
    assert _leaks(agent) > 0  # the route is real in one process...
    found = check_lookahead(make_agent=make, data=market, config=CONFIG, twins=1)
    assert found and found[0].route == "decision"  # ...and the twins catch it


@pytest.mark.parametrize("make", [cn.PrivatePeeker, cn.GcPeeker, cn.FramePeeker,
                                  _inspect_peeker])
def test_memory_routes_are_blocked_by_isolation(make, market) -> None:
    assert _isolated_leaks(make(), market) == 0


def test_long_window_base_and_pointer_are_caught_and_blocked(market) -> None:
    config = CONFIG.model_copy(update={"start": "2018-06-01"})  # >= 2048 rows: zero-copy views
    assert market.as_of(np.datetime64("2018-06-01")).count("ALPHA") >= 2048
    agent = cn.BasePeeker()
    simulate(config=config, agent=agent, data=market)
    assert _leaks(agent) > 0
    found = check_lookahead(make_agent=cn.BasePeeker, data=market, config=config, twins=1)
    assert found and found[0].route == "decision"
    assert _isolated_leaks(cn.BasePeeker(), market) == 0


def test_meta_path_is_stripped_from_what_agents_see(files) -> None:
    root, data = files
    assert "path" in data.full("ALPHA").meta  # the engine keeps its provenance
    agent = cn.MetaPathPeeker()
    simulate(config=CONFIG, agent=agent, data=data)
    assert sum(agent.attempts.values()) > 0 and _leaks(agent) == 0
    view = data.as_of(np.datetime64("2018-05-01"))
    assert all(str(root) not in str(v) for v in view.bars("ALPHA").meta.values())


def test_source_file_read_is_caught_in_process(files) -> None:
    root, data = files
    agent = cn.SourceReader(root=str(root))
    simulate(config=CONFIG, agent=agent, data=data)
    assert _leaks(agent) > 0
    found = check_lookahead(make_agent=lambda: cn.SourceReader(root=str(root)), data=data,
                            config=CONFIG, twins=1)
    assert any(f.route == "file" for f in found)


@NEEDS_BWRAP
def test_source_file_read_is_blocked_by_bubblewrap(files) -> None:
    root, data = files
    assert _isolated_leaks(cn.SourceReader(root=str(root)), data, sandbox="bwrap") == 0


def test_book_edit_is_caught_by_the_ledger(market) -> None:
    agent = cn.BookEditor()
    try:
        result, error = simulate(config=CONFIG, agent=agent, data=market), None
    except EngineError as exc:
        result, error = exc.partial_result, exc
    assert _leaks(agent) == 1  # the edit went through in one process...
    # ...and the ledger's invariants or the replay of its fills name it
    assert isinstance(error, LedgerInvariantError) or books_mismatch(result, 100_000.0)
    found = check_lookahead(make_agent=cn.BookEditor, data=market, config=CONFIG, twins=1,
                            processes=False)
    assert any(f.route == "books" for f in found)
    assert _isolated_leaks(cn.BookEditor(), market) == 0


def _private_copy(market: MarketData) -> MarketData:
    return MarketData({s: market.full(s).with_arrays(open=market.full(s).open.copy())
                       for s in market.symbols})


def test_shared_array_write_is_refused_and_a_raw_write_is_fingerprinted(market) -> None:
    data = _private_copy(market)  # this test writes into it
    before = data.fingerprints(fresh=True)
    agent = cn.ArrayWriter()
    simulate(config=CONFIG, agent=agent, data=data)
    assert agent.leaks.get("flags.writeable = True", 0) == 0
    assert agent.leaks.get("ctypes write into the history", 0) == 1
    assert data.fingerprints(fresh=True) != before


def test_shared_array_write_is_blocked_by_isolation(market) -> None:
    data = _private_copy(market)
    before = data.fingerprints(fresh=True)
    assert _isolated_leaks(cn.ArrayWriter(), data) == 0
    assert data.fingerprints(fresh=True) == before


@pytest.mark.parametrize("lookback", [None, 5])
def test_every_array_of_an_observation_is_read_only_for_good(market, lookback) -> None:
    view = market.as_of(np.datetime64("2018-05-01"))
    bars, news = view.bars("ALPHA", lookback=lookback), view.news()
    arrays = [getattr(bars, c) for c in ("time", "open", "high", "low", "close", "volume")]
    arrays += [getattr(news, c) for c in ("published_at", "available_at", "symbol", "title")]
    for arr in arrays:
        with pytest.raises(ValueError):
            arr.flags.writeable = True
    with pytest.raises(ValueError):
        market.full("ALPHA").close.flags.writeable = True  # the source itself, owner or not
