# One command each: `make demo` runs the walkthrough, `make test` runs every check.
# Both create the virtual environment and install everything on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck pytest bench bench-service diagrams openapi clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/credman demo

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The concern folders install as credman.* subpackages; mypy sees that layout through a
# tree of symlinks (it cannot follow setuptools' editable-install finder).
typecheck: $(STAMP)
	rm -rf build/mypy && mkdir -p build/mypy/credman
	ln -s $(CURDIR)/credman/* build/mypy/credman/
	for d in lifecycle storage crypto scheduler; do ln -s $(CURDIR)/$$d build/mypy/credman/$$d; done
	cd build/mypy && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p credman

pytest: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m bench

# The service and its client: cached and remote access(), token checks, throughput (~1 min).
bench-service: $(STAMP)
	$(BIN)/python -m bench.service

diagrams: $(STAMP)
	$(BIN)/credman diagram -o diagrams

openapi: $(STAMP)
	$(BIN)/python -m credman.server openapi > docs/openapi.json

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache .hypothesis .demo
