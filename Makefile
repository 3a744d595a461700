# Two commands for a new user: `make demo` (the main job) and `make test` (what CI runs).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
PAPER ?= bimpm
LINT_PY := repro papers tests benchmarks scripts conf
TORCH_INFO := $(BIN)/python -c 'import torch; print(f"torch {torch.__version__} (CUDA build: {torch.version.cuda}, CUDA available: {torch.cuda.is_available()})")'

.PHONY: demo test test-all lint torch-info bench clean-runs help

help:
	@echo "make demo        create .venv, install, run the $(PAPER) example through data, shapes, overfit, full"
	@echo "make test        the fast test suite (what CI runs); make test-all includes slow tests"
	@echo "make lint        ruff check, ruff format --check, hadolint Dockerfile"
	@echo "make torch-info  which torch build .venv has (CPU or CUDA) and whether CUDA is available"
	@echo "make bench       the benchmarks (CLI start-up, BiMPM throughput, GloVe loading)"

# torch first, pinned: the CUDA build where an NVIDIA GPU answers, else the CPU build
# (scripts/install_torch.sh says why and which index); then the project.
$(BIN)/.installed: pyproject.toml scripts/install_torch.sh
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	TORCH=$(TORCH) bash scripts/install_torch.sh $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"
	@$(TORCH_INFO)
	touch $@

demo: $(BIN)/.installed
	$(BIN)/repro stage overfit --paper $(PAPER)
	$(BIN)/repro stage full --paper $(PAPER)
	$(BIN)/repro status --paper $(PAPER)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

test-all: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m "not slurm and not wheel"   # fast + slow; .ci/slurm-tests, .ci/wheel-tests run the others

# All three checks run; any failure fails the target.
lint: $(BIN)/.installed
	@fail=0; \
	for check in "ruff check $(LINT_PY)" "ruff format --check $(LINT_PY)" "hadolint Dockerfile"; do \
		echo "== $$check"; $(BIN)/$$check || fail=1; \
	done; \
	exit $$fail

torch-info: $(BIN)/.installed
	@$(TORCH_INFO)

bench: $(BIN)/.installed
	$(BIN)/python -m pip install -q -e ".[bench]"   # gensim, the GloVe loader's comparison
	$(BIN)/python benchmarks/cli_startup.py
	$(BIN)/python benchmarks/bimpm_throughput.py
	$(BIN)/python benchmarks/glove_load.py

clean-runs:
	rm -rf runs
