"""Errors raised by the ato package."""


class AtoError(Exception):
    """Base class of every error ato-stream raises on purpose."""


class CatalogError(AtoError):
    """The journey catalog is invalid; the message names file, journey and field."""


class ConfigError(AtoError):
    """A setting is invalid; the message names the key."""


class RecoveryError(AtoError):
    """A recovery directory cannot be read or prepared; the message names the file."""


class ClusterError(AtoError):
    """A process of a cluster lost its connection to another one (which failed or was
    stopped, and says why itself). ``ato`` exits with :data:`CLUSTER_ERROR_EXIT` for it, so
    that the parent of a cluster names the process that failed first."""


CLUSTER_ERROR_EXIT = 3


def cause_of(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of ``kinds`` in ``exc``'s chain of causes (``exc`` included):
    Bytewax wraps what a step raised in errors of its own (``raise ... from``). An error
    raised while another was being handled (``__context__``) is not caused by it: a bug in
    a handler of an ato error is a bug, not that error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kinds):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None


def reported_by_ato(exc: BaseException) -> bool:
    """Whether ``ato``'s command line reports ``exc`` in a line of its own: an error of
    ato's (possibly wrapped by Bytewax) or an interrupt."""
    return cause_of(exc, (AtoError, KeyboardInterrupt)) is not None
