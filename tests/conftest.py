"""Fixtures shared by every test directory: a real redis-server (one per session)."""

from collections.abc import Iterator
from pathlib import Path

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
