"""Fixtures shared by every test directory: a real redis-server and a real Tansu Kafka broker
(one each per session), and epoch ms of local wall times."""

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import redis

from ato.devservers import Server, start_broker, start_redis


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The broker; a test that cannot get it fails (it never skips)."""
    server = start_broker(None, Path(tmp_path_factory.mktemp("tansu")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The server; a test that cannot get it fails (it never skips)."""
    server = start_redis(None, Path(tmp_path_factory.mktemp("redis")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: Server) -> Iterator[str]:
    """The server's URL, emptied before each test."""
    url = f"redis://{redis_server.address}/0"
    with redis.Redis.from_url(url) as client:
        client.flushall()
    yield url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the emptied server."""
    with redis.Redis.from_url(redis_url) as client:
        yield client


def local_ms(text: str, tz: str) -> int:
    """Epoch ms of local wall time ``"2026-01-05 20:59:59.999"`` in ``tz``."""
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M"
    wall = datetime.strptime(text, fmt).replace(tzinfo=ZoneInfo(tz))
    return round(wall.timestamp() * 1000)


@pytest.fixture
def at() -> Callable[[str, str], int]:
    """``at("2026-01-05 20:59:59.999", "Europe/London")``: epoch ms of a local wall time."""
    return local_ms
