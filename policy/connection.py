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


_PASSING = (
    redis.ConnectionError,  # BusyLoadingError (LOADING) too
    redis.TimeoutError,
    redis.exceptions.TryAgainError,
    redis.exceptions.MasterDownError,
    redis.exceptions.ReadOnlyError,  # a replica answers: the primary is failing over
)


def is_transient(exc: BaseException) -> bool:
    """Connection errors and timeouts, and the error replies of a Redis that is loading its
    data, running a long script or failing over (``LOADING``, ``BUSY``, ``TRYAGAIN``,
    ``MASTERDOWN``, ``READONLY``): the same call can succeed later. A refused password or
    user (redis-py makes them connection errors) is not: no retry fixes it."""
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.AuthorizationError):
        return False
    if isinstance(exc, _PASSING):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith("BUSY ")
