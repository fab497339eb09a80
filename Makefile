# Two entry points for a fresh machine: `make run` (main job, offline) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup run test bench clean

$(BIN)/tradesim: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(BIN)/tradesim

setup: $(BIN)/tradesim

run: setup
	$(BIN)/tradesim backtest --out runs/sma_cross-sample

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache runs
