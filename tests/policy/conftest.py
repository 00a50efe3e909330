"""A real redis-server for the policy tests (one per session), and local-time helpers.

This directory has no ``__init__.py`` on purpose: as a package it would be named ``policy``
and shadow the package under test. Helpers are therefore handed out as fixtures.
"""

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

from ato.devservers import Server, start_redis


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


class CountingConnection(redis.Connection):
    """A connection that counts the packed writes it sends (one per round trip)."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sends += 1
        super().send_packed_command(command, check_health)


class Counted:
    """A client and the number of round trips it made since the last ``reset()``."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    @property
    def sends(self) -> int:
        return CountingConnection.sends

    def reset(self) -> None:
        CountingConnection.sends = 0


@pytest.fixture
def counting(redis_server: Server, r: redis.Redis) -> Iterator[Counted]:
    """A client whose round trips (packed writes) are counted."""
    pool = redis.ConnectionPool(
        host="127.0.0.1", port=redis_server.port, connection_class=CountingConnection
    )
    client = redis.Redis(connection_pool=pool)
    client.ping()
    CountingConnection.sends = 0
    try:
        yield Counted(client)
    finally:
        client.close()
        pool.disconnect()


def local_ms(text: str, tz: str) -> int:
    """Epoch ms of local wall time ``"2026-01-05 20:59:59.999"`` in ``tz``."""
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M"
    wall = datetime.strptime(text, fmt).replace(tzinfo=ZoneInfo(tz))
    return round(wall.timestamp() * 1000)


@pytest.fixture
def at() -> Callable[[str, str], int]:
    """``at("2026-01-05 20:59:59.999", "Europe/London")``: epoch ms of a local wall time."""
    return local_ms
