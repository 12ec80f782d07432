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

# One test process per core (at most 4), each single-threaded: the suite is mostly short CPU-bound runs and
# subprocesses, so two processes halve the time on 2 cores where one process with two threads would not.
test: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto --maxprocesses 4

# The exhaustive fault suite (docs/RELIABILITY.md): at least 20 kill -9 per stage, Ctrl-C, full and
# read-only disks, two writers at once, damaged stores and checkpoints, decoder fuzzing and a soak.
# `make test` runs a few of each; this runs them all and tabulates every fault and its outcome.
FAULT_LOG ?= faults-log.jsonl
faults: setup
	rm -f $(FAULT_LOG)
	AQA_FAULTS=full AQA_FAULT_LOG=$(FAULT_LOG) $(BIN)/python -m pytest -q tests/faults
	$(BIN)/python -m tests.faults.summary $(FAULT_LOG)

# The whole job on the synthetic demo data, small enough for a CPU: a random-init ResNet-10 on 32-frame
# windows (4 clips of 8 frames). Real MTL-AQA runs use the defaults (R(2+1)D-34, 96 frames, 3 clips).
# The synthetic dives compress 8:1 (real video barely does), so the demo store is LZF-compressed.
DEMO_TRAIN := --depth 10 --conv 3d --clip 8 --frames 32 --batch-size 4 --lr 3e-3 --epochs 12 \
	--val-fraction 0.2 --seed 0

demo: setup
	rm -rf $(DEMO_DIR)/demo.h5 $(DEMO_DIR)/run  # from scratch, whatever an older version left
	$(BIN)/aqa synth $(DEMO_DIR)/videos --seed 0
	$(BIN)/aqa preprocess $(DEMO_DIR)/videos/manifest.csv --out $(DEMO_DIR)/demo.h5 --compression lzf
	$(BIN)/aqa info $(DEMO_DIR)/demo.h5
	$(BIN)/aqa train --store $(DEMO_DIR)/demo.h5 --out $(DEMO_DIR)/run $(DEMO_TRAIN)
	$(BIN)/aqa eval --run $(DEMO_DIR)/run
	$(BIN)/aqa score $(DEMO_DIR)/videos/dive_015.mp4 $(DEMO_DIR)/videos/dive_047.mp4 --difficulty 2.0 \
		--difficulty 3.6 --run $(DEMO_DIR)/run --explain $(DEMO_DIR)/explain.png

# Speed and memory against what users would otherwise use (docs/BENCHMARKS.md): about 10-15 minutes on
# 2 cores; prints a table and writes benchmarks/results.json. Not part of `make test`.
bench: setup $(VENV)/.bench-installed
	@command -v ffmpeg >/dev/null || { echo "installing Debian's ffmpeg (the preprocess reference)"; \
		apt-get update -qq && apt-get install -y -qq ffmpeg; } || echo "no ffmpeg: that comparison is skipped"
	$(BIN)/python benchmarks/run.py

$(VENV)/.bench-installed: pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	touch $@

lint: setup
	$(BIN)/ruff check aqa_cli tests benchmarks
	$(BIN)/ruff format --check aqa_cli tests benchmarks

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
