# Cadenza: two commands on a fresh machine with Python 3.11 and pip.
#   make demo   create .venv, install Cadenza (pinned), run an example pipeline end to end
#   make test   install the test extras (pinned) and run the whole suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
PYTEST_ARGS ?=

.PHONY: demo test bench install install-test lock clean ui ui-types

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Cadenza needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install --quiet -c constraints.txt -e '.[ml,server]'
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install --quiet -c constraints.txt -e '.[test]'
	@touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# The fraud-detection pipeline end to end on the embedded defaults (SQLite, local artifacts,
# local MLflow store, processes executor), then again: unchanged tasks come from the cache.
demo: $(VENV)/.installed
	@echo "== 1/2: fraud detection, first run =="
	$(BIN)/cadenza run examples/fraud_detection.py
	@echo
	@echo "== 2/2: the same pipeline again: unchanged tasks are served from the cache =="
	$(BIN)/cadenza run examples/fraud_detection.py
	@echo
	@echo "Look next:"
	@echo "  $(BIN)/cadenza runs list                  every run, newest first"
	@echo "  $(BIN)/cadenza runs show RUN_ID           each task: state, attempts, cache origin"
	@echo "  $(BIN)/cadenza plan examples/fraud_detection.py   what would run, and why"
	@echo "  $(BIN)/cadenza lineage ARTIFACT_SHA       where an output came from"
	@echo "  $(BIN)/mlflow ui --backend-store-uri sqlite:///.cadenza/mlflow/mlflow.db   the MLflow runs"
	@echo "  $(BIN)/python examples/quickstart.py      a smaller, dependency-free pipeline"
	@echo "  $(BIN)/python examples/features_to_training.py   two pipelines chained by an asset, started by the scheduler"
	@echo
	@echo "The web UI (pipelines, graph, grid, live runs, Gantt, logs) and the REST API, with the scheduler:"
	@echo "  $(BIN)/cadenza server --scheduler examples/fraud_detection.py"
	@echo "  then open http://127.0.0.1:8321/"

test: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench examples
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

bench: $(VENV)/.installed-test
	$(BIN)/python bench/overhead.py

# The web UI (frontend/, TypeScript): rebuild src/cadenza/ui/static/ (committed, so pip users
# need no Node); `ui-types` regenerates what the frontend takes from the Python side first
# (the API's OpenAPI types and the state colours of core/states.py).
ui:
	cd frontend && npm ci --no-audit --no-fund && npm run build

ui-types: $(VENV)/.installed-test
	$(BIN)/python frontend/scripts/openapi.py
	$(BIN)/python frontend/scripts/states.py > frontend/src/states.gen.ts
	cd frontend && npm ci --no-audit --no-fund && npm run gen:api

# Re-pin what `make demo` and `make test` install (run after changing dependencies).
lock: $(BIN)/python
	$(PIP) install --quiet -e '.[test]'
	$(PIP) freeze --exclude-editable | grep -v '^-e ' > constraints.txt

clean:
	rm -rf $(VENV) .cadenza
