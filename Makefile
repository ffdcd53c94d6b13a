# cheaplm: `make demo` sets up and runs the main job on the embedded sample; `make test` runs the tests.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DUMP ?= data/sample-pages-articles.xml
DEMO ?= out/demo
MINUTES ?= 1

.PHONY: setup demo test bench-prepare clean

$(BIN)/cheaplm: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/cheaplm

demo: setup
	$(BIN)/cheaplm prepare $(DUMP) --out $(DEMO)/data --val-fraction 0.1 --test-fraction 0.1

test: setup
	$(BIN)/python -m pytest -q

bench-prepare: setup
	$(BIN)/python bench/prepare_speed.py

clean:
	rm -rf out build *.egg-info
