# cheaplm: `make demo` sets up and runs the main job on the embedded sample; `make test` runs the tests.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DUMP ?= data/sample-pages-articles.xml
DEMO ?= out/demo
# the training budget: all of the embedded sample (a bytes budget, larger than the sample: the same
# model on every run, however long the first run's kernels take to compile inside a minutes budget,
# which cut a cold run's counting short: 1 step against 6 warm), or MINUTES of training when given
MINUTES ?=
BUDGET = $(if $(MINUTES),--minutes $(MINUTES),--bytes 1M)
TRAIN_OPTS ?= --table-bits 16
PROMPT ?= A lighthouse is

.PHONY: setup demo test bench-prepare clean

$(BIN)/cheaplm: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/cheaplm

# the main job: prepare the dump, train (BUDGET), score the test split, continue a prompt.
# Each dump is prepared into its own directory (prepare keeps one that is up to date and refuses
# to overwrite another's), so `make demo DUMP=...` works after any other, in any order.
DATA = $(DEMO)/data-$(notdir $(DUMP))
demo: setup
	$(BIN)/cheaplm prepare $(DUMP) --out $(DATA) --val-fraction 0.1 --test-fraction 0.1
	rm -rf $(DEMO)/run
	$(BIN)/cheaplm train $(DATA) --out $(DEMO)/run $(BUDGET) --device cpu $(TRAIN_OPTS)
	@echo "test bits per byte:"
	$(BIN)/cheaplm eval $(DEMO)/run $(DATA) --split test
	$(BIN)/cheaplm sample $(DEMO)/run --prompt "$(PROMPT)" --max-bytes 300 --seed 1

# one OpenBLAS thread unless told otherwise: the reader's products are small, and OpenBLAS's spinning
# threads took the cores from numba's parallel loops (a CPU reader step of 1024 positions: 0.33 s
# against 0.83 s with two, 2 cores under load); results are the same with one and two (test_pinned.py)
test: setup
	OPENBLAS_NUM_THREADS=$${OPENBLAS_NUM_THREADS:-1} $(BIN)/python -m pytest -q

bench-prepare: setup
	$(BIN)/python bench/prepare_speed.py

clean:
	rm -rf out build *.egg-info
