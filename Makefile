# Two entry points on a fresh machine: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# NNCF builds a C++ extension for its torch backend (QAT) on first use; the default 60 s is too short on 2 cores.
export NNCF_EXTENSION_LOAD_TIMEOUT ?= 600
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test test-slow lint install install-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch and torchvision are pinned to the releases on this machine's disk (pip takes them without a download).
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(STAMP)
install-dev: $(DEV_STAMP)

demo: $(STAMP)
	$(BIN)/edgeflow optimize mobilenetv3 --device cpu --recipe demo --out reports/demo

test: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# The slow tests (whole searches, QAT, device calibration): .ci/run runs them after `make test`.
test-slow: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(DEV_STAMP)
	$(BIN)/ruff check edgeflow tests bench
	$(BIN)/ruff format --check edgeflow tests bench

bench: $(STAMP)
	$(BIN)/python bench/profile_vs_benchmark_app.py

clean:
	rm -rf $(VENV) reports/demo
