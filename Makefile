# Quickstart: `make run` (full pipeline on Fashion-MNIST), `make test` (the whole test suite).
.PHONY: setup run test test-fast lint format params ui clean

setup:
	@scripts/setup.sh

run: setup
	.venv/bin/tinyopt run

# Two workers, a test file each at a time (its module fixtures stay in one process): most tests wait on
# servers and subprocesses, so two cores run the suite in well under the serial time.
test: setup lint
	.venv/bin/python -m pytest -n 2 --dist loadfile

test-fast: setup
	.venv/bin/python -m pytest -m "not slow"

# The formatter and linter (configured in pyproject.toml); `make test` runs the check first.
lint: setup
	.venv/bin/ruff format --check .
	.venv/bin/ruff check .

format: setup
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

# params.yaml is rendered from the schema (tinyopt/params/): rerun after changing a default or a description.
params: setup
	.venv/bin/python -m tinyopt.params.render > params.yaml

ui: setup
	.venv/bin/tinyopt ui

# Removes what the pipeline made here (data copies, artifacts, reports, local MLflow store, task cache,
# the project's Prefect home: `make setup` migrates a new one).
clean:
	rm -rf data artifacts reports mlflow.db mlflow.db.lock mlartifacts .tinyopt
