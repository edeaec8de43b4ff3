# One command each: `make demo` runs the walkthrough, `make test` runs every check.
# Both create the virtual environment and install everything on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck pytest bench bench-scale diagrams clean

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

# Not part of `make test`: N credentials on the PostgreSQL server kept fresh by 1, 2 and 4
# `credman serve` processes (docs/scale.md). SCALE_ARGS="--rows 1000000 --window 180".
SCALE_ARGS ?= --rows 10000 --window 60
bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale $(SCALE_ARGS)

diagrams: $(STAMP)
	$(BIN)/credman diagram -o diagrams

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache .hypothesis .demo
