# The two commands of the README: `make demo` (set up + run the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU torch from the local wheel cache; a GPU server installs CUDA torch first (see README).
TORCH  ?= torch==2.13.0

.PHONY: demo test setup setup-test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.setup: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.setup-test: $(VENV)/.setup
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.setup
setup-test: $(VENV)/.setup-test

demo: setup
	$(BIN)/radinfill demo

test: setup-test
	$(BIN)/python -m pytest

lint: setup-test
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build dist *.egg-info
