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

# The whole job on the synthetic demo data, small enough for a CPU: a random-init ResNet-10 on 32-frame
# windows (4 clips of 8 frames). Real MTL-AQA runs use the defaults (R(2+1)D-34, 96 frames, 3 clips).
DEMO_TRAIN := --depth 10 --conv 3d --clip 8 --frames 32 --batch-size 4 --lr 3e-3 --epochs 12 \
	--val-fraction 0.2 --seed 0

demo: setup
	$(BIN)/aqa synth $(DEMO_DIR)/videos --seed 0
	$(BIN)/aqa preprocess $(DEMO_DIR)/videos/manifest.csv --out $(DEMO_DIR)/demo.h5
	$(BIN)/aqa info $(DEMO_DIR)/demo.h5
	rm -rf $(DEMO_DIR)/run
	$(BIN)/aqa train --store $(DEMO_DIR)/demo.h5 --out $(DEMO_DIR)/run $(DEMO_TRAIN)
	$(BIN)/aqa eval --run $(DEMO_DIR)/run
	$(BIN)/aqa score $(DEMO_DIR)/videos/dive_015.mp4 $(DEMO_DIR)/videos/dive_047.mp4 --difficulty 2.0 \
		--difficulty 3.6 --run $(DEMO_DIR)/run --explain $(DEMO_DIR)/explain.png

bench: setup
	$(BIN)/python benchmarks/run.py

lint: setup
	$(BIN)/ruff check aqa_cli tests benchmarks
	$(BIN)/ruff format --check aqa_cli tests benchmarks

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
