"""Process-wide settings a flow process applies once at start, and how it stops."""

import ctypes
import gc
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Allocations between young-generation collections, and collections between older ones.
# The flow's objects rarely form reference cycles (a 1 M-client run with the contact policy
# collected about 1,500 objects in 28,000 collections), but Python's defaults (700, 10, 10)
# spent 10 s of that 70 s run scanning live objects.
GC_THRESHOLDS = (50_000, 20, 20)


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded before any fork: the child only calls it
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """``preexec_fn`` of a child process: the kernel kills it (SIGKILL) when the thread that
    started it ends, however that ends (kill -9 included, which skips every ``finally``)."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` after the command name: state, parent, ... (None: no such process)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot), None when it is gone."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def process_running(pid: int, started: int | None = None) -> bool:
    """Whether ``pid`` runs (a zombie, exited and not yet reaped, counts as gone) and, when
    ``started`` is given, is still the process that started then."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] == "Z":
        return False
    return started is None or int(fields[19]) == started


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


class Terminated(KeyboardInterrupt):
    """SIGTERM, which ends a run as Ctrl-C does (exit code 143 instead of 130)."""


def _raise_terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
    raise Terminated


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a supervisor's stop) raises :class:`Terminated` inside the block, so the
    command stops as on Ctrl-C, cleaning up what it started. Only the main thread can
    handle a signal: elsewhere the block changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
