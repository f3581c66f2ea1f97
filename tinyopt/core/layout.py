"""Where the pipeline reads and writes, relative to the project directory (the current directory).

dvc.yaml names the same paths; keep the two in step.
"""

from pathlib import Path

DATA_ROOT = Path("data")
ARTIFACTS = Path("artifacts")
PREPARED = ARTIFACTS / "prepared.npz"
BASELINE_DIR = ARTIFACTS / "baseline"
C_LIBRARIES = ARTIFACTS / "c"  # one generated C library per int8 model: artifacts/c/<variant>/
REPORTS = Path("reports")
MLFLOW_DB = Path("mlflow.db")
MLFLOW_ARTIFACTS = Path("mlartifacts")
PREFECT_STORAGE = Path(".tinyopt") / "prefect-results"
PREFECT_HOME = Path(".tinyopt") / "prefect"  # the project's own Prefect home: its API database, settings


def require_writable(directories: list[Path], writer: str = "a run writes there") -> None:
    """Before a run does any work: each directory it will write is writable (or can be created), else
    one line ending with `writer` (who writes there). A run that trains for minutes and then cannot write
    its report has wasted them."""
    from tinyopt.core.errors import UserError

    for directory in directories:
        problem = _write_problem(Path(directory))
        if problem:
            raise UserError(f"{directory}: {problem}; {writer}")


def _write_problem(directory: Path) -> str | None:
    """Why nothing can be written in `directory`, or None. A missing directory is probed at its nearest
    existing parent, where the run would create it; the probe file is removed, so nothing is left behind."""
    import os
    import tempfile

    existing = directory
    while not existing.exists() and not existing.is_symlink() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "it" if existing == directory else f"{existing}"
        return f"{'a file' if existing == directory else where + ' is a file'}, not a directory: move {where} aside"
    try:
        fd, probe = tempfile.mkstemp(prefix=".tinyopt-write-probe-", dir=existing)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if existing == directory:
            return f"not writable ({reason}): fix its permissions"
        return f"cannot be created, {existing} is not writable ({reason}): fix its permissions"
    os.close(fd)
    os.unlink(probe)
    return None
