"""Child processes that die with tinyopt: the C compilers, QEMU, the TFLM and model-loading probes, Prefect's
temporary server and the console's log forwarder.

Each child started here runs in its own process group, so a timeout or an exception kills the whole group
(gcc's cc1 and as along with the gcc driver), not only the process Python started. When tinyopt itself dies,
even by SIGKILL, a watchdog kills what is left: one small process per tinyopt process, reading a pipe that only
tinyopt holds open. Each child is announced on that pipe; end of file means tinyopt is gone. (Linux's
PR_SET_PDEATHSIG would reach only the direct child, not cc1, and needs a preexec_fn, unsafe with threads.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

# Announcements, one a line: "<pid> <grace> group|process" (kill it when tinyopt dies; a group is the process
# group the child leads) or "-<pid>" (it has ended: forget it, its pid may be reused). On end of file: kill
# every child at once, except those given a grace: they may end by themselves first (the log forwarder
# forwards what a crashing run wrote last), then they are killed too.
WATCHDOG = r"""
import os, signal, sys, time
alive = {}
for line in sys.stdin:
    words = line.split()
    if words[0].startswith("-"):
        alive.pop(int(words[0][1:]), None)
    else:
        alive[int(words[0])] = (float(words[1]), words[2] == "group")

def kill(pid, group):
    try:
        os.killpg(pid, signal.SIGKILL) if group else os.kill(pid, signal.SIGKILL)
    except OSError:
        pass

def running(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False

for pid, (grace, group) in alive.items():
    if not grace:
        kill(pid, group)
deadline = time.monotonic() + max([grace for grace, _ in alive.values()] + [0])
lingering = {pid: group for pid, (grace, group) in alive.items() if grace}
while lingering and time.monotonic() < deadline:
    lingering = {pid: group for pid, group in lingering.items() if running(pid)}
    time.sleep(0.05)
for pid, group in lingering.items():
    kill(pid, group)
"""

_watchdog: subprocess.Popen | None = None
_watchdog_owner: int | None = None  # the process that started it: a forked child starts its own
_watchdog_lock = threading.Lock()


def _watchdog_pipe() -> int:
    """The write end of this process's watchdog's pipe, the watchdog started on first use."""
    global _watchdog, _watchdog_owner
    with _watchdog_lock:
        if _watchdog_owner != os.getpid():
            _watchdog = subprocess.Popen(
                [sys.executable, "-c", WATCHDOG],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            _watchdog_owner = os.getpid()
        return _watchdog.stdin.fileno()


def _announce(line: str) -> None:
    """One line to the watchdog; a single write under PIPE_BUF, so threads never mix."""
    os.write(_watchdog_pipe(), (line + "\n").encode())


def dies_with_us(process: subprocess.Popen, grace: float = 0.0, group: bool = False) -> None:
    """Have the watchdog kill `process` (its whole process group when `group`) if tinyopt dies first;
    `grace`: seconds it may take to end by itself before that."""
    _announce(f"{process.pid} {grace} {'group' if group else 'process'}")


def ended(process: subprocess.Popen) -> None:
    """`process` has ended and was reaped: the watchdog forgets it."""
    _announce(f"-{process.pid}")


def start_child(cmd: Sequence[str], grace: float = 0.0, **popen) -> subprocess.Popen:
    """subprocess.Popen(cmd, **popen) in a process group of its own, which dies with tinyopt (see the module)."""
    _watchdog_pipe()  # started first, so that only one write separates the child's start from its announcement
    process = subprocess.Popen(cmd, start_new_session=True, **popen)
    dies_with_us(process, grace, group=True)
    return process


def kill_group(process: subprocess.Popen) -> None:
    """Kill the child's whole process group (before it is reaped, so that its id cannot have been reused)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_child(
    cmd: Sequence[str], cwd=None, timeout: float | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, capture_output=True, text=True, timeout=timeout) for a child that dies with tinyopt:
    on a timeout (subprocess.TimeoutExpired, as subprocess.run raises it) or any other exception, an interrupt
    included, its whole process group is killed first."""
    process = start_child(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with process:
            try:
                stdout, stderr = process.communicate(timeout=timeout)
            except BaseException:
                kill_group(process)
                process.wait()
                raise
    finally:
        ended(process)
    return subprocess.CompletedProcess(list(cmd), process.returncode, stdout, stderr)
