"""Process-wide settings a flow process applies once at start."""

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Allocations between young-generation collections, and collections between older ones.
# The flow's objects rarely form reference cycles (a 1 M-client run with the contact policy
# collected about 1,500 objects in 28,000 collections), but Python's defaults (700, 10, 10)
# spent 10 s of that 70 s run scanning live objects.
GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    """Collect reference cycles far less often than Python's defaults (``GC_THRESHOLDS``)."""
    gc.set_threshold(*GC_THRESHOLDS)


_pause_lock = threading.Lock()
_pauses = 0  # blocks inside gc_paused now, on any thread
_was_enabled = False  # collection was on when the first of them began


@contextmanager
def gc_paused() -> Iterator[None]:
    """No automatic cycle collection inside the block (restored after it, if it was on).

    For code that makes many short-lived container objects without cycles: a collection
    they trigger would only scan them. Objects freed inside the block no longer count
    towards the next collection. Blocks may overlap on several threads (the decode threads
    and the flow's): collection resumes when the last one ends.
    """
    global _pauses, _was_enabled  # noqa: PLW0603 - one switch per process
    with _pause_lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()
