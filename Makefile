# Each target creates .venv and installs the project into it when missing,
# so a fresh clone on a fresh machine needs nothing but python3 (>= 3.11).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-quick bench settings-reference clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/tgcrm up

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not slow'

bench: $(STAMP)
	$(BIN)/python -m bench

# docs/configuration.md and .env.example, from the settings classes (a test fails when they are stale).
settings-reference: $(STAMP)
	$(BIN)/python -m tgcrm.settings_reference

clean:
	rm -rf $(VENV) .local .pytest_cache
