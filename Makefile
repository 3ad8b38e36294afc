# Two commands on a fresh machine: `make run` (set up, then run the main experiment) and
# `make test` (set up, then run the test suite). Everything else is optional.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of PyTorch. Where pip would otherwise take a CUDA build, pass for example
#   make TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" run
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
EXPERIMENT ?= experiments/ml100k.yaml
PYTEST_ARGS ?=

.PHONY: setup run test test-slow lint ui bench notebooks clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,torchrec]"
	# TorchRec declares the CUDA fbgemm-gpu; its CPU needs come from the [torchrec] extra above.
	# recommenders (Microsoft Recommenders) is only the reference the `msr` metric mode is
	# tested against; its own pins (pandas<3) do not apply to the one module we import.
	$(BIN)/python -m pip install --quiet --no-deps torchrec==1.8.0 recommenders==1.2.1
	touch $@

run: $(STAMP)
	$(BIN)/personalize run $(EXPERIMENT)

test: $(STAMP)
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP)
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 \
		$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports --config pyproject.toml

# Execute every notebook with its defaults (full data) into build/notebooks/ (outside git) and render
# each to HTML, to read them as a user would; prints each notebook's wall time.
NOTEBOOK_OUT ?= build/notebooks
notebooks: $(STAMP)
	mkdir -p $(NOTEBOOK_OUT)
	@for nb in notebooks/[0-9]*.ipynb; do \
		name=$$(basename $$nb); start=$$(date +%s); \
		HF_HUB_OFFLINE=1 $(BIN)/papermill --cwd . -k python3 --no-progress-bar --log-level WARNING \
			"$$nb" "$(NOTEBOOK_OUT)/$$name" || exit 1; \
		$(BIN)/jupyter nbconvert --to html --log-level ERROR "$(NOTEBOOK_OUT)/$$name" || exit 1; \
		echo "$$name: $$(( $$(date +%s) - start )) s -> $(NOTEBOOK_OUT)/$${name%.ipynb}.html"; \
	done

ui: $(STAMP)
	$(BIN)/personalize ui

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_models.py

clean-venv:
	rm -rf $(VENV)
