# Two commands for a new user: `make demo` (the main job) and `make test` (what CI runs).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
PAPER ?= bimpm

.PHONY: demo test test-all lint bench clean-runs help

help:
	@echo "make demo   create .venv, install, run the $(PAPER) example through data, shapes, overfit, full"
	@echo "make test   the fast test suite (what CI runs); make test-all includes slow tests"
	@echo "make bench  the benchmarks (CLI start-up, BiMPM throughput, GloVe loading)"

# torch first, pinned: an unpinned torch may pull a multi-GB CUDA build; then the project.
$(BIN)/.installed: pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/repro stage overfit --paper $(PAPER)
	$(BIN)/repro stage full --paper $(PAPER)
	$(BIN)/repro status --paper $(PAPER)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

test-all: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(BIN)/.installed
	$(BIN)/ruff check repro papers tests benchmarks

bench: $(BIN)/.installed
	$(BIN)/python -m pip install -q -e ".[bench]"   # gensim, the GloVe loader's comparison
	$(BIN)/python benchmarks/cli_startup.py
	$(BIN)/python benchmarks/bimpm_throughput.py
	$(BIN)/python benchmarks/glove_load.py

clean-runs:
	rm -rf runs
