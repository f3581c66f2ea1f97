"""The first run on a fresh machine, as a new user meets it: an empty Prefect home, two runs at once, a
Prefect API that is not there, places the run cannot write, and a console meant for a person."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINYOPT, free_port, make_project, needs_fashion, run_cli
from tests.flow_helpers import progress_counts
from tinyopt.core import layout
from tinyopt.core.console import is_native_noise
from tinyopt.core.errors import UserError

TINY = dict(
    seed=3,
    data={"train_limit": 600, "test_limit": 200},
    train={"epochs": 1},
    plan=[["float32"]],
    reference={"dir": None},
    benchmark={"latency_warmup": 2, "latency_repeats": 20},
)
# What TensorFlow, XLA, absl and LiteRT wrote on a run's console before tinyopt filtered them.
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796150466.565641    8992 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU "
    "will not be used.",
    "E0000 00:00:1796150472.063190    8992 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)",
    "E0000 00:00:1796150472.339499    8992 node_def_util.cc:682] NodeDef mentions attribute "
    "use_unbounded_threadpool which is not in the op definition: Op<name=MapDataset; signature=...>",
    "I0000 00:00:1796179398.601402     442 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. "
    "To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    "fully_quantize: 0, inference_type: 6, input_inference_type: INT8, output_inference_type: INT8",
]


def completed_flow_runs(prefect_home: Path) -> int:
    with sqlite3.connect(prefect_home / "prefect.db") as db:
        return db.execute("SELECT count(*) FROM flow_run WHERE state_type = 'COMPLETED'").fetchone()[0]


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in result.stdout + result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("tinyopt: error:")]


@pytest.mark.slow
@needs_fashion
def test_a_first_run_with_an_empty_prefect_home_completes_and_talks_to_a_person(tmp_path):
    home = tmp_path / "brand-new-prefect-home"  # not even created: nothing migrated it
    # Offline, without the paper's models: they are skipped, with where to put them said once.
    offline = {"dir": str(tmp_path / "no-refs"), "url": f"http://127.0.0.1:{free_port()}/{{path}}"}
    root = make_project(tmp_path / "project", **{**TINY, "reference": offline})
    result = run_cli(["run"], cwd=root, env={"PREFECT_HOME": str(home)})
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-3000:]
    assert completed_flow_runs(home) == 1
    for line in console.splitlines():
        assert not is_native_noise(line), line
    assert "cuInit" not in console and "NodeDef mentions attribute" not in console and "absl::" not in console
    where = f"put the 19 .tflite files that tinyopt/run/references.py lists in {tmp_path / 'no-refs'}"
    assert len([line for line in console.splitlines() if line.endswith(where)]) == 1, console[-3000:]
    # Progress: steps done / total and elapsed time, one line per finished step, named after what it did.
    # fetch, prepare, train; base-float32's conversion, evaluation, benchmark and MLflow log; latency; and
    # the reference models' steps, counted in the total from the start and skipped at once (not found).
    counts = progress_counts(console)
    assert len({total for _, total in counts}) == 1 and counts[-1][0] == counts[-1][1], counts
    assert [done for done, _ in counts] == sorted({done for done, _ in counts}), counts
    assert "reference models not found or not usable skipped" in console and len(counts) == 9, console[-3000:]
    for name in (
        "fetch fashion-mnist",
        "train baseline",
        "convert base-float32",
        "evaluate base-float32",
        "benchmark base-float32",
        "measure latency",
        "log base-float32 to MLflow",
    ):
        assert f"] {name} done" in console, name
    assert not [line for line in console.splitlines() if "Task run" in line and "Finished in state" in line]
    with sqlite3.connect(home / "prefect.db") as db:
        names = {name for (name,) in db.execute("SELECT name FROM task_run")}
    assert {"train baseline", "convert base-float32", "evaluate base-float32"} <= names, names


@pytest.mark.slow
@needs_fashion
def test_two_runs_at_once_on_one_new_prefect_home_both_complete(tmp_path):
    """Unserialized, the second temporary server migrated the same new database at the same time and
    died ('duplicate column name'); tinyopt lets one start at a time per Prefect home."""
    home = tmp_path / "shared-prefect-home"
    root = make_project(tmp_path / "project", **TINY)
    env = {**os.environ, "PREFECT_HOME": str(home)}
    runs = [
        subprocess.Popen(
            TINYOPT + ["run"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=900)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], "\n".join(output[-2000:] for output in outputs)
    assert completed_flow_runs(home) == 2


def _first_use_of_store(uri: str) -> str:
    os.environ["MLFLOW_TRACKING_URI"] = uri
    from tinyopt.orchestration import tracking

    try:
        tracking.client().search_registered_models()
        return "ok"
    except Exception as exc:  # what a racing migration raised, to show in the assertion
        return f"{type(exc).__name__}: {str(exc)[:120]}"


def test_four_processes_meeting_a_new_mlflow_store_at_once_all_use_it(tmp_path):
    """Unserialized, MLflow's migrations of one new SQLite store collide ('duplicate column name',
    'table mcp_servers already exists'): the CI failure of two runs at once on a new project."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        assert pool.map(_first_use_of_store, [uri] * 4) == ["ok"] * 4


def _in_step_with_another_run(uri: str, meeting: str, step, result: str) -> None:
    """Run `step` after the other process has made its first lookup in `step.table` too, and missed: the
    interleaving of two runs at once on a new store, made certain. Writes "ok" or what `step` raised."""
    os.environ["MLFLOW_TRACKING_URI"] = uri
    import time

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from tinyopt.orchestration import tracking

    tracking.client()  # the store's own first queries are not the lookup under test
    waited = []

    def meet_after_first_lookup(conn, cursor, statement, *args):
        if not waited and statement.lstrip().startswith("SELECT") and f"FROM {step.table}" in statement:
            waited.append(True)
            Path(meeting, str(os.getpid())).touch()
            deadline = time.time() + 60
            while len(os.listdir(meeting)) < 2 and time.time() < deadline:
                time.sleep(0.01)

    event.listen(Engine, "after_cursor_execute", meet_after_first_lookup)
    try:
        step()
        Path(result).write_text("ok")
    except Exception as exc:  # what the racing insert raised, to show in the assertion
        Path(result).write_text(f"{type(exc).__name__}: {str(exc)[:100]}")


def _dataset_input():
    from tinyopt.orchestration import tracking

    return tracking.dataset_input("fashion-mnist", "ec0372c160db9ccb628b0f57ca841966.dir", "/data", {"n": 1})


def _mlflow_log_inputs():
    from tinyopt.orchestration import tracking

    tracking.client().log_inputs(tracking.start_run("tinyopt", "race", {}), datasets=[_dataset_input()])


def _tinyopt_log_dataset():
    from tinyopt.orchestration import tracking

    tracking.log_dataset(tracking.start_run("tinyopt", "race", {}), _dataset_input())


def _mlflow_get_or_create_experiment():
    from tinyopt.orchestration import tracking

    if tracking.client().get_experiment_by_name("new") is None:
        tracking.client().create_experiment("new")


def _tinyopt_experiment_id():
    from tinyopt.orchestration import tracking

    tracking.experiment_id("new")


_mlflow_log_inputs.table = _tinyopt_log_dataset.table = "datasets"
_mlflow_get_or_create_experiment.table = _tinyopt_experiment_id.table = "experiments"


@pytest.mark.parametrize(
    "step, fails, error",
    [
        (_mlflow_log_inputs, 1, "UNIQUE constraint failed: datasets"),
        (_tinyopt_log_dataset, 0, ""),
        (_mlflow_get_or_create_experiment, 1, "already exists"),
        (_tinyopt_experiment_id, 0, ""),
    ],
    ids=["dataset-mlflow-alone", "dataset-tinyopt", "experiment-mlflow-alone", "experiment-tinyopt"],
)
def test_two_runs_meeting_a_new_dataset_or_experiment_at_once_both_go_on(tmp_path, step, fails, error):
    """MLflow looks a dataset (an experiment) up, then inserts it: two runs at once on a new store both
    missed it and the second insert failed its unique key (CI, two runs on one new project). MLflow's calls
    alone fail one of the two; tinyopt's go on with the row the other run wrote."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(1) as pool:
        assert pool.apply(_first_use_of_store, (uri,)) == "ok"
    paths = [tmp_path / f"result-{index}" for index in range(2)]
    processes = [
        spawn.Process(target=_in_step_with_another_run, args=(uri, str(meeting), step, str(path))) for path in paths
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    results = [path.read_text() for path in paths]
    assert len(os.listdir(meeting)) == 2  # both looked it up before either inserted it
    assert sum(error in result for result in results) == fails if fails else results == ["ok", "ok"], results
    if step is _tinyopt_log_dataset:
        from mlflow import MlflowClient

        store = MlflowClient(uri)
        runs = store.search_runs([store.get_experiment_by_name("tinyopt").experiment_id])
        assert len(runs) == 2 and all(len(run.inputs.dataset_inputs) == 1 for run in runs)


def test_a_closed_prefect_api_url_is_one_line_before_any_work(tmp_path):
    root = make_project(tmp_path / "project", **TINY)
    api = f"http://127.0.0.1:{free_port()}/api"
    result = run_cli(["run"], cwd=root, env={"PREFECT_API_URL": api})
    assert result.returncode == 2
    assert error_lines(result) == [
        f"tinyopt: error: Prefect API {api} is unreachable ([Errno 111] Connection refused); start that server, "
        "or unset PREFECT_API_URL to let tinyopt start a temporary one"
    ]
    assert sorted(os.listdir(root)) == ["params.yaml"]


def test_a_temporary_server_that_does_not_start_in_time_is_one_line_with_what_to_do(tmp_path):
    home = tmp_path / "prefect-home"
    root = make_project(tmp_path / "project", **TINY)
    result = run_cli(
        ["run"], cwd=root, env={"PREFECT_HOME": str(home), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "1"}
    )
    assert result.returncode == 2
    [line] = error_lines(result)
    assert line.startswith("tinyopt: error: Prefect's temporary API server did not start (Timed out"), line
    assert f"database under {home}" in line and "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (now 1)" in line
    assert "make setup" in line
    assert sorted(os.listdir(root)) == ["params.yaml"]


def test_a_file_where_the_reports_directory_belongs_stops_the_run_before_any_work(tmp_path):
    root = make_project(tmp_path / "project", **TINY)
    (root / "reports").write_text("not a directory")
    result = run_cli(["run"], cwd=root)
    assert result.returncode == 2
    assert error_lines(result) == [
        "tinyopt: error: reports: a file, not a directory: move it aside; a run writes there"
    ]
    assert sorted(os.listdir(root)) == ["params.yaml", "reports"]


def _can_drop_dac_override() -> bool:
    try:
        return subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", "true"]).returncode == 0
    except OSError:
        return False


@pytest.mark.parametrize("directory", ["reports", "artifacts"])
def test_a_read_only_directory_stops_the_run_before_any_work(tmp_path, directory):
    """As a user without the right to write there. The tests run as root, which ignores permission bits:
    unless run as another user, the run is started without root's capability to override them."""
    root = make_project(tmp_path / "project", **TINY)
    (root / directory).mkdir()
    (root / directory).chmod(0o555)
    command = [*TINYOPT, "run"]
    if os.geteuid() == 0:
        if not _can_drop_dac_override():
            pytest.skip("running as root, and setpriv cannot drop CAP_DAC_OVERRIDE here")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    (root / directory).chmod(0o755)
    assert result.returncode == 2, result.stderr[-2000:]
    assert error_lines(result) == [
        f"tinyopt: error: {directory}: not writable (Permission denied): fix its permissions; a run writes there"
    ]
    assert sorted(os.listdir(root)) == sorted(["params.yaml", directory]) and not os.listdir(root / directory)


def test_a_missing_directory_is_probed_where_it_would_be_made_and_nothing_is_left(tmp_path):
    layout.require_writable([tmp_path / "artifacts" / "variants", tmp_path / "reports"])
    assert os.listdir(tmp_path) == []
    (tmp_path / "data").write_text("a file")
    with pytest.raises(UserError, match=f"{tmp_path / 'data'} is a file, not a directory"):
        layout.require_writable([tmp_path / "data" / "fashion-mnist"])


def test_native_noise_is_recognised_and_other_native_lines_are_not():
    assert all(is_native_noise(line) for line in NOISE)
    kept = [
        "E0000 00:00:1796150472.063190    8992 bfc_allocator.cc:485] Allocator ran out of memory",
        "F0000 00:00:1796150472.063190    8992 tensor.cc:12] Check failed: dims() == 2",
        "E0000 00:00:1796150472.339499    8992 node_def_util.cc:630] Invalid argument: NodeDef missing attr 'T'",
        "tinyopt: error: something a user must see",
        "INFO: Created TensorFlow Lite delegate for GPU.",
    ]
    assert not any(is_native_noise(line) for line in kept)


def test_native_stderr_is_filtered_and_a_crash_still_gets_its_last_words_out(tmp_path):
    """Through the real file descriptor 2, as TensorFlow's C++ code writes it, in a process that then aborts."""
    payload = ("\n".join(NOISE) + "\n").encode()
    script = (
        "import os, sys\n"
        "from tinyopt.core.console import filter_native_stderr\n"
        "filter_native_stderr()\n"
        f"os.write(2, {payload!r})\n"
        "os.write(2, b'F0000 00:00:1 1 tensor.cc:12] Check failed: a real native error\\n')\n"
        "print('python stderr still works', file=sys.stderr, flush=True)\n"
        "os.abort()\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0  # aborted
    assert "Check failed: a real native error" in result.stderr and "python stderr still works" in result.stderr
    assert not any(noise in result.stderr for noise in NOISE), result.stderr


# TensorFlow's Python-level warnings that a default run printed (16, 5 and a few), as TensorFlow formats them.
TENSORFLOW_NOISE = [
    "Gradients do not exist for variables ['cluster_centroids:0'] when minimizing the loss. If you're using "
    "`model.compile()`, did you forget to provide a `loss` argument?",
    "Compiled the loaded model, but the compiled metrics have yet to be built. `model.compile_metrics` will be "
    "empty until you train or evaluate the model.",
    "5 out of the last 5 calls to <function Model.make_predict_function.<locals>.predict_function at 0x7f3c> "
    "triggered tf.function retracing. Tracing is expensive and the excessive number of tracings could be due to "
    "(1) creating @tf.function repeatedly in a loop.",
]


def _emit_tensorflow_warnings(env: dict) -> str:
    """Each message through TensorFlow's own logger (as tf_keras and tf.function warn) and the Keras 3 gradient
    warning through the warnings module, then an unrelated warning on each channel; returns stderr."""
    script = (
        "import warnings\n"
        "import tinyopt\n"
        "from tinyopt.core.console import quiet_tensorflow_warnings\n"
        "quiet_tensorflow_warnings()\n"
        "from tensorflow.python.platform import tf_logging\n"
        f"for message in {TENSORFLOW_NOISE!r}:\n"
        "    tf_logging.warning('%s', message)\n"
        f"warnings.warn({TENSORFLOW_NOISE[0]!r})\n"
        "tf_logging.warning('an unrelated TensorFlow warning')\n"
        "warnings.warn('an unrelated Python warning')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env={**os.environ, **env}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def test_tensorflow_warnings_that_say_nothing_to_a_user_are_dropped_and_others_kept():
    console = _emit_tensorflow_warnings({"TINYOPT_NATIVE_LOGS": ""})
    assert "WARNING:tensorflow:an unrelated TensorFlow warning" in console
    assert "UserWarning: an unrelated Python warning" in console
    for noise in ("Gradients do not exist", "compiled metrics have yet to be built", "tf.function retracing"):
        assert noise not in console, console


def test_native_logs_all_shows_the_tensorflow_warnings_too():
    console = _emit_tensorflow_warnings({"TINYOPT_NATIVE_LOGS": "all"})
    for message in TENSORFLOW_NOISE:
        assert f"WARNING:tensorflow:{message}" in console
    assert f"UserWarning: {TENSORFLOW_NOISE[0]}" in console
    assert "an unrelated TensorFlow warning" in console and "an unrelated Python warning" in console


def test_the_progress_total_stays_fixed_and_skipped_steps_count_as_finished():
    from tinyopt.core.console import Progress

    lines: list[str] = []
    progress = Progress(6, lines.append)
    progress.finished("fetch")
    progress.skip("prune", 3)
    progress.skip("nothing", 0)
    progress.finished("convert base-int8")
    progress.finished("evaluate base-int8", "cached")
    assert [line.split("] ")[1] for line in lines] == [
        "fetch done",
        "prune skipped (3 steps)",
        "convert base-int8 done",
        "evaluate base-int8 cached",
    ]
    assert progress_counts("\n".join(lines)) == [(1, 6), (4, 6), (5, 6), (6, 6)]
