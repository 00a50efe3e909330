"""Errors raised by the ato package."""


class AtoError(Exception):
    """Base class of every error ato-stream raises on purpose."""


class CatalogError(AtoError):
    """The journey catalog is invalid; the message names file, journey and field."""


class ConfigError(AtoError):
    """A setting is invalid; the message names the key."""


class RecoveryError(AtoError):
    """A recovery directory cannot be read or prepared; the message names the file."""
