"""Shared fixtures: the real data folder beside the project (skips cleanly when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that use it are skipped with a reason when it is missing."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it sits beside the project in CI)")
    return SHARED_DATA


@pytest.fixture
def one_torch_thread():
    """Small nets run fastest on one thread; on a shared 2-core box more threads thrash."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
