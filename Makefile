# The two quick-start commands: `make demo` and `make test`. Both set up .venv and the local stack.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DL     := $(BIN)/driftline

.PHONY: setup stack demo test lint unit stack-down clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@echo "setting up $(VENV): installing Driftline and its dependencies (a minute on a fresh machine) ..."
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	@$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

stack: setup
	$(DL) stack up

# The demo starts the stack itself and stops it at the end: `make demo ARGS=--keep` leaves it up.
demo: setup
	$(DL) demo $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Unit tests need no services; integration and slow tests use the real local stack.
unit: setup
	$(BIN)/pytest -m "not integration" -q

# On every core (pytest-xdist); tests marked xdist_group("cpu-heavy") run one after another.
test: lint stack
	$(BIN)/pytest -q -n auto --dist loadgroup

stack-down: setup
	$(DL) stack down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
