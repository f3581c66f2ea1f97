# Quickstart: `make run` (full pipeline on Fashion-MNIST), `make test` (the whole test suite).
.PHONY: setup run test test-fast ui clean

setup:
	@scripts/setup.sh

run: setup
	.venv/bin/tinyopt run

test: setup
	.venv/bin/python -m pytest

test-fast: setup
	.venv/bin/python -m pytest -m "not slow"

ui: setup
	.venv/bin/tinyopt ui

# Removes what the pipeline made here (data copies, artifacts, reports, local MLflow store, task cache,
# the project's Prefect home: `make setup` migrates a new one).
clean:
	rm -rf data artifacts reports mlflow.db mlartifacts .tinyopt
