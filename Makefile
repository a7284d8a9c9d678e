# Two commands for a new user (see README.md):
#   make demo   set up, then plan + train + compare the embedded tiny sweep on CPU
#   make test   set up (with the extras the tests cover), then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch: the CPU build (from PyTorch's CPU index) where no NVIDIA GPU is visible, so a laptop or CI
# never downloads the multi-GB CUDA build; PyPI's default (CUDA) build where a GPU is.
TORCH_VERSION ?= 2.13.0
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_INDEX := $(if $(HAS_GPU),,--index-url https://download.pytorch.org/whl/cpu --retries 1 --timeout 15)

.PHONY: setup demo test bench lint clean

$(BIN)/matcher: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH_INDEX) "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@

setup: $(BIN)/matcher

# The tests also cover the optional extras (math answer equivalence, lm-evaluation-harness tasks): none is
# skipped for a missing package.
$(VENV)/.test-extras: $(BIN)/matcher pyproject.toml
	$(BIN)/python -m pip install -q -e ".[dev,math,lm-eval]"
	@touch $@

demo: setup
	$(BIN)/matcher demo

test: $(VENV)/.test-extras
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python bench/cost_model.py

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
