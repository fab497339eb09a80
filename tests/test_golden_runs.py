"""Every built-in agent's equity and fills on the embedded sample, held to digests recorded
before the session-loop refactor (tests/golden_runs.py): reshaping the loop changes no result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from golden_runs import AGENTS, GOLDEN, digest, run_agent

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", AGENTS)
def test_built_in_agent_reproduces_its_golden_run(name: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADESIM_GOLDEN_KEY", "sk-golden")
    expected = json.loads(GOLDEN.read_text())[name]
    got = digest(run_agent(name, tmp_path))
    assert got["final_equity"] == expected["final_equity"]
    assert got == expected
