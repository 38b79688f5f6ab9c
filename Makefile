# agrimon: the README's commands. `make demo` and `make test` set everything up themselves.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch and torchvision first and alone: pip takes them from this machine's disk.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The season before first (once), so that the demo also shows change between two runs.
EARLIER_DEMO := outputs/grootfontein/2022-07-01_2023-06-30
demo: $(STAMP)
	@test -f $(EARLIER_DEMO)/manifest.json || $(BIN)/agrimon run --start 2022-07-01 --end 2023-06-30 >/dev/null
	$(BIN)/agrimon run

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -q

bench: $(STAMP)
	@for f in bench/[!_]*.py; do echo "== $$f"; $(BIN)/python -m bench.$$(basename $$f .py) || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
