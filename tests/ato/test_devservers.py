"""The dev-server launcher used by `ato dev`, the test fixtures and the load-test harness."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ato.devservers import Server, free_port
from ato.process import process_running


class Interrupted(BaseException):
    """Stands for the signal (SIGTERM, Ctrl-C) that arrives while a server starts."""


def test_a_server_interrupted_while_it_starts_is_stopped(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]

    def probe(_port: int) -> bool:
        raise Interrupted

    server = Server("http", argv, port, tmp_path / "http.log", probe)
    with pytest.raises(Interrupted):
        server.start(ready_timeout_s=30)
    assert server.process is not None
    assert server.process.poll() is not None  # not left running


STARTER = """
import sys, time
from pathlib import Path
from ato.devservers import start_redis
server = start_redis(None, Path(sys.argv[1]), detach=sys.argv[2] == "detach")
pid = server.detach() if sys.argv[2] == "detach" else server.process.pid
print(pid, server.port, flush=True)
if sys.argv[2] != "detach":
    time.sleep(600)  # killed (-9) by the test while its server runs
"""


def _wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while process_running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not process_running(pid)


def test_a_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """A harness or test session killed with -9 used to leave its broker (gigabytes of
    in-memory topics) and Redis running, adopted by init."""
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(tmp_path), "attached"], stdout=subprocess.PIPE
    )
    assert starter.stdout is not None
    pid = int(starter.stdout.readline().split()[0])
    assert process_running(pid)
    starter.kill()
    starter.wait()
    starter.stdout.close()
    assert _wait_gone(pid), "the server outlived the process that started it"


def test_a_detached_server_outlives_it(tmp_path: Path) -> None:
    """`ato dev up` detaches its servers: they must run on after the command exits."""
    done = subprocess.run(
        [sys.executable, "-c", STARTER, str(tmp_path), "detach"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    pid = int(done.stdout.split()[0])
    try:
        time.sleep(0.3)
        assert process_running(pid)
    finally:
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid)
