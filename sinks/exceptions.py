"""Errors raised by sinks."""

from ato.exceptions import AtoError


class SinkError(AtoError):
    """A sink could not make accepted items durable."""
