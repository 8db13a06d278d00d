# Two commands: `make run` (install + quickstart) and `make test` (install dev extra + suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?= -n 2 --dist worksteal --durations=15

.PHONY: run test bench lint clean browser

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

# `rl label`'s browser test drives Debian's Chromium; where apt cannot install it, that test skips
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1; } || \
	  echo "chromium not installed: the labeling page's browser test will skip"

test: $(VENV)/.installed-dev browser
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
