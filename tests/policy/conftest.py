"""Policy-test helpers: a Redis client that counts round trips, and local-time helpers.

The redis-server fixtures (``redis_server``, ``redis_url``, ``r``) and ``at`` (epoch ms of a
local wall time) are in ``tests/conftest.py``.

This directory has no ``__init__.py`` on purpose: as a package it would be named ``policy``
and shadow the package under test. Helpers are therefore handed out as fixtures.
"""

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from ato.devservers import Server


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
