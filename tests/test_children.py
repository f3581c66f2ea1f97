"""Children that die with tinyopt (tinyopt.core.children): a timeout kills the child's whole process group, and a
`kill -9` of tinyopt leaves no child behind: the compiler's, the log forwarder, Prefect's temporary server."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

from tinyopt.core.children import run_child
from tinyopt.mcu.firmware import _run


def gone(pid: int) -> bool:
    """Ended (a zombie waiting for init to reap it has ended too)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def all_gone(pids: list[int], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(gone(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def command_line(process: psutil.Process) -> str:
    """Its command line, or '' once it has ended."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def test_a_timeout_kills_the_childs_whole_group(tmp_path):
    # sh stands for gcc's driver, its background sleep for cc1: subprocess.run's timeout killed sh alone.
    script = f"sleep 60 & echo $! > {tmp_path / 'grandchild'}; wait"
    with pytest.raises(subprocess.TimeoutExpired):
        run_child(["sh", "-c", script], timeout=1)
    assert all_gone([int((tmp_path / "grandchild").read_text())])


def test_a_toolchain_command_that_hangs_is_a_build_failure_not_a_traceback(tmp_path):
    with pytest.raises(RuntimeError, match=r"^sh did not finish within 1 s$"):
        _run(["sh", "-c", "sleep 60"], tmp_path, timeout=1)


PARENT = """
import sys, time
from tinyopt.core import console
from tinyopt.core.children import run_child
console.filter_native_stderr()
if sys.argv[1] == "prefect":
    from tinyopt.orchestration import prefect_home
    prefect_home.configure()
    prefect_home.start_api()
    print("ready", flush=True)
    time.sleep(600)
print("ready", flush=True)
run_child(["sh", "-c", "sleep 60 & wait"])
"""


def kill_9_leaves_nothing(mode: str, expected: list[str], timeout: float) -> None:
    """Start a parent that starts children; once a child runs for each of `expected` (a part of its command
    line), kill -9 the parent: every descendant it had ends within 5 s."""

    def running() -> list[psutil.Process]:
        children = descendants(parent.pid)
        lines = [command_line(child) for child in children]
        return children if all(any(part in line for line in lines) for part in expected) else []

    parent = subprocess.Popen([sys.executable, "-c", PARENT, mode], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline() == "ready\n"
        deadline = time.monotonic() + timeout
        while not running() and time.monotonic() < deadline:
            time.sleep(0.1)
        children = running()
        assert children, [command_line(child) for child in descendants(parent.pid)]
        # The parent tells its watchdog of a child just after starting it; on a loaded machine the child's own
        # child may already run before that line is written (CI saw `sh` and `sleep` outlive a kill at once).
        time.sleep(1.0)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert all_gone([child.pid for child in children]), [command_line(c) for c in children if not gone(c.pid)]
    finally:
        parent.kill()


FORWARDER = "c._forward_filtered()"


def test_kill_9_of_tinyopt_kills_the_log_forwarder_and_a_childs_whole_group():
    kill_9_leaves_nothing("child", [FORWARDER, "sh -c sleep 60 & wait", "sleep 60"], timeout=30)


def test_kill_9_of_tinyopt_kills_prefects_temporary_server():
    kill_9_leaves_nothing("prefect", [FORWARDER, "uvicorn"], timeout=0)  # the server answered before "ready"
