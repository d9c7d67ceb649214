# Two commands for a fresh machine with only Python 3.11+ and pip:
#   make run   -> sets up .venv and runs the main job on the built-in default data
#   make test  -> sets up .venv and runs the full test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench setup clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench,solvers]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/allocator allocate --scenario scenarios/baseline.toml --out runs/baseline

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
