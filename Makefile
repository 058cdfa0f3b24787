# Two commands on a fresh machine: `make demo` (the whole pipeline on bundled images) and `make test`.
# Both create .venv on first use with the CPU build of PyTorch pinned for CI (torch==2.13.0).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.segdeploy-installed

.PHONY: demo test test-all install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/segdeploy demo -o runs/demo

# The CI suite: everything but the tests marked slow (whole-model matrices of the big networks,
# Ray clusters, trained-weights gates on real photos). `make test-all` runs those too.
test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
