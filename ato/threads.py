"""Helper threads for GIL-free numba work of the flow's own thread.

A worker runs its steps on one thread. The shard store's kernels and the intervention
kernels release the GIL, so work split into independent parts (the lanes of a shard, the
two halves of a batch of documents) overlaps on another core: the first part runs on the
calling thread, the others on the process's helper threads. Work handed to a helper must not
itself wait for helpers.
"""

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from typing import TypeVar

T = TypeVar("T")

MAX_HELPERS = 7  # at most this many parts run on helpers at once (engine.lanes <= 8)
SPLIT_MIN_ROWS = 2_048  # fewer rows run whole on the calling thread: a hand-over costs ~50 us


@cache
def helper_pool() -> ThreadPoolExecutor:
    """The process's helper threads (made on first use, so a forked worker makes its own;
    a thread is started only when no idle one is free)."""
    return ThreadPoolExecutor(MAX_HELPERS, thread_name_prefix="ato-helper")


def run_parts(parts: Sequence[Callable[[], T]]) -> list[T]:
    """Each part's result, in order: the first computed on this thread, the others on
    helper threads. Every part has finished when this returns or raises (the first error
    is raised)."""
    if len(parts) == 1:
        return [parts[0]()]
    futures: list[Future[T]] = [helper_pool().submit(part) for part in parts[1:]]
    try:
        first = parts[0]()
    finally:
        for future in futures:
            future.exception()  # waits; the state the parts share is not left half-written
    return [first, *(future.result() for future in futures)]


def in_halves(rows: int, work: Callable[[int, int], T]) -> list[T]:
    """``[work(0, m), work(m, rows)]`` side by side (see :func:`run_parts`), or
    ``[work(0, rows)]`` below :data:`SPLIT_MIN_ROWS` rows."""
    if rows < SPLIT_MIN_ROWS:
        return [work(0, rows)]
    middle = rows // 2
    return run_parts([lambda: work(0, middle), lambda: work(middle, rows)])
