# Every target sets itself up: a fresh machine needs only python3 (3.11+) and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= demo-out

.PHONY: demo test lint bench fuzz wheel-smoke clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m discmaker.ui.demo --out $(DEMO)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

lint: $(STAMP)
	$(BIN)/ruff check discmaker tests bench fuzz
	$(BIN)/ruff format --check discmaker tests bench fuzz
	$(BIN)/mypy
	$(BIN)/lint-imports

# Thousands of hostile discs through the real CLI, each with time and memory limits.
FUZZ_CASES ?= 3000
fuzz: $(STAMP)
	$(BIN)/python -m fuzz --cases $(FUZZ_CASES) --out fuzz-out

wheel-smoke:
	bash .ci/wheel-smoke

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
