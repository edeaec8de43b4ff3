# One command each: `make demo` runs the walkthrough, `make test` runs every check.
# Both create the virtual environment and install everything on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck mapped importlint downstream pytest bench diagrams openapi bench-server clean

$(STAMP): pyproject.toml setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/credman demo

test: lint typecheck importlint downstream pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The concern folders install as credman.* subpackages; mypy and import-linter see that
# layout through a tree of symlinks (neither can follow setuptools' editable-install finder).
MAPPED := build/mypy
mapped:
	rm -rf $(MAPPED) && mkdir -p $(MAPPED)/credman
	ln -s $(CURDIR)/credman/* $(MAPPED)/credman/
	for d in lifecycle storage crypto scheduler; do ln -s $(CURDIR)/$$d $(MAPPED)/credman/$$d; done

typecheck: $(STAMP) mapped
	cd $(MAPPED) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p credman

# The import rules in pyproject.toml ([tool.importlinter]); the acyclic contract type is ours.
importlint: $(STAMP) mapped
	cd $(MAPPED) && PYTHONPATH=$(CURDIR)/tools $(CURDIR)/$(BIN)/lint-imports \
		$(CURDIR)/pyproject.toml --no-cache

# A downstream project: the built wheel alone (no extras) in a venv of its own; every module
# imports there, and mypy --strict checks tests/downstream/example.py against it. The venv is
# rebuilt when the dependencies change; the wheel on every run (build/lib is cleared first:
# setuptools would package files deleted since the last build).
DOWNSTREAM := build/downstream
WHEEL_DIR := build/wheel

$(DOWNSTREAM)/venv/.created: pyproject.toml constraints.txt
	rm -rf $(DOWNSTREAM)/venv
	$(PYTHON) -m venv $(DOWNSTREAM)/venv
	touch $@

downstream: $(STAMP) $(DOWNSTREAM)/venv/.created
	rm -rf $(WHEEL_DIR) build/lib build/bdist.*
	$(BIN)/python -m pip wheel --quiet --no-deps -w $(WHEEL_DIR) .
	$(DOWNSTREAM)/venv/bin/python -m pip install --quiet -c constraints.txt $(WHEEL_DIR)/credman-*.whl
	$(DOWNSTREAM)/venv/bin/python -m pip install --quiet --no-deps --force-reinstall \
		$(WHEEL_DIR)/credman-*.whl
	$(DOWNSTREAM)/venv/bin/python tests/downstream/check_install.py
	cd tests/downstream && $(CURDIR)/$(BIN)/mypy --config-file mypy.ini \
		--python-executable $(CURDIR)/$(DOWNSTREAM)/venv/bin/python \
		--cache-dir $(CURDIR)/$(DOWNSTREAM)/mypy-cache example.py

pytest: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m bench

diagrams: $(STAMP)
	$(BIN)/credman diagram -o diagrams

bench-server: $(STAMP)
	$(BIN)/python -m bench.server_auth

openapi: $(STAMP)
	$(BIN)/python -m credman.server openapi > docs/openapi.json

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache .hypothesis .demo
