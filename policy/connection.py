"""One place that turns ``[redis]`` settings into a redis-py client."""

import os

import redis

from ato.config import RedisSettings


def client_name() -> str:
    """The name this process's connections carry (Redis ``CLIENT LIST`` shows it)."""
    return f"ato-{os.getpid()}"


def connect(settings: RedisSettings) -> "redis.Redis":
    """A client of the configured Redis with the settings' timeouts (connects lazily); its
    connections are named :func:`client_name`."""
    timeout = settings.timeout_s
    return redis.Redis.from_url(
        settings.connection_url(),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        client_name=client_name(),
    )


def is_transient(exc: BaseException) -> bool:
    """Connection errors and timeouts: the same call can succeed once Redis answers."""
    return isinstance(exc, redis.ConnectionError | redis.TimeoutError)
