# Two commands are all the set-up a fresh machine needs:
#   make demo   creates .venv, installs mlhub, runs the tour on the embedded defaults
#   make test   creates .venv, installs mlhub with its dev and tensorflow extras, runs the test suite
# (the demo does not need TensorFlow, a large download: only the test set-up installs that extra)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# reinstall whenever pyproject.toml changes
CKSUM  := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
STAMP  := $(VENV)/.installed-$(CKSUM)
TEST_STAMP := $(VENV)/.installed-test-$(CKSUM)

# the services tests use; CI exports the same and MLHUB_REQUIRE_SERVICES=1 so a missing one fails
export MLHUB_TEST_DATABASE_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
export MLHUB_TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: demo test install lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	@rm -f $(VENV)/.installed-[0-9]* && touch $@

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,tensorflow]'
	@rm -f $(VENV)/.installed-test-* && touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mlhub demo

test: $(TEST_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check mlhub actors serve_apps migrations tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/metrics_write.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build dist *.egg-info
