# Two commands a new user needs: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= data/demo

.PHONY: setup test demo bench lint faults clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

test: setup
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/aqa synth $(DEMO_DIR)/videos --seed 0
	$(BIN)/aqa preprocess $(DEMO_DIR)/videos/manifest.csv --out $(DEMO_DIR)/demo.h5
	$(BIN)/aqa info $(DEMO_DIR)/demo.h5

bench: setup
	$(BIN)/python benchmarks/run.py

lint: setup
	$(BIN)/ruff check aqa_cli tests benchmarks
	$(BIN)/ruff format --check aqa_cli tests benchmarks

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
