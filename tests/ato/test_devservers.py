"""The dev-server launcher used by `ato dev`, the test fixtures and the load-test harness."""

import sys
from pathlib import Path

import pytest

from ato.devservers import Server, free_port


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
