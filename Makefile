# The two commands: `make run` starts Tollgate, `make test` checks it. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-install only when the dependency list changes; a fresh checkout installs once.
STAMP := $(VENV)/.installed
# The model `make run` trains (tiny preset) when the registry has no ready version of it.
MODEL ?= code-gpt

.PHONY: install run test lint typecheck docs unit clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Tollgate needs Python >= 3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[gateway,trainer,workers,dev]'
	@touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m registry init
	$(BIN)/python -m trainer run --preset tiny --model $(MODEL) --skip-if-published
	TOLLGATE_DEFAULT_MODEL=$(MODEL) $(BIN)/python -m gateway run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir var/site

test: lint typecheck docs unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
