# Two commands: `make run` (install + quickstart) and `make test` (install dev extra + suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?= -n 2 --durations=15

.PHONY: run test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/rl train ppo --config ppo-cartpole

test: $(VENV)/.installed-dev
	$(BIN)/ruff check rl tests experiments notebooks
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[peers]'
	$(BIN)/python experiments/bench/foundation.py
	$(BIN)/python experiments/bench/throughput.py
	$(BIN)/python experiments/bench/rewards.py
	$(BIN)/python experiments/bench/jitted.py
	$(BIN)/python experiments/bench/dreamer.py
	$(BIN)/python experiments/bench/preference.py
	$(BIN)/python experiments/bench/preference.py --overhead 12000
	$(BIN)/python experiments/bench/cmorl.py
	$(BIN)/python experiments/bench/morl_peer.py --iterations 8

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check rl tests experiments notebooks
	$(BIN)/ruff format --check rl tests experiments

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
