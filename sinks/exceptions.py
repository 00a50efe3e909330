"""Errors raised by sinks."""

from ato.exceptions import AtoError


class SinkError(AtoError):
    """A sink could not make accepted items durable."""


class ClickHouseError(SinkError):
    """ClickHouse cannot be opened, migrated, written or queried; the message names the URL
    (password masked) and what to do."""
