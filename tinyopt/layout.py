"""Where the pipeline reads and writes, relative to the project directory (the current directory).

dvc.yaml names the same paths; keep the two in step.
"""

from pathlib import Path

DATA_ROOT = Path("data")
ARTIFACTS = Path("artifacts")
PREPARED = ARTIFACTS / "prepared.npz"
BASELINE_DIR = ARTIFACTS / "baseline"
REPORTS = Path("reports")
MLFLOW_DB = Path("mlflow.db")
MLFLOW_ARTIFACTS = Path("mlartifacts")
PREFECT_STORAGE = Path(".tinyopt") / "prefect-results"
