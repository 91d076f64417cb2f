# The two commands of the README: `make demo` (set up + run the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU torch from the local wheel cache; a GPU server installs CUDA torch first (see README).
TORCH  ?= torch==2.13.0

.PHONY: demo test setup setup-test tools lint clean

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
setup-test: $(VENV)/.setup-test tools

# promtool (Debian package prometheus) checks deploy/prometheus/alerts.yml in the tests;
# systemd-analyze (package systemd) checks the units. Installed only where missing.
tools:
	@command -v promtool >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus)
	@command -v systemd-analyze >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd)

demo: setup
	$(BIN)/radinfill demo

test: setup-test
	$(BIN)/python -m pytest

lint: setup-test
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build dist *.egg-info
