"""When to try a Redis that does not answer again: one schedule for a whole process."""

import threading

FIRST_PAUSE_MS = 1_000
MAX_PAUSE_MS = 8_000


class RedisBackoff:
    """Shared by every shard's policy step of a process. While Redis answers, every call
    may go ahead. Once one failed (connection refused, a timeout), one caller at a time may
    try again, after a pause that doubles on each failure (1 s up to 8 s); the others leave
    Redis alone meanwhile. So a Redis that hangs, where each call waits for the client's
    timeout, costs the flow one timeout per pause, not one per shard and call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pause_ms = 0  # 0: Redis answered last
        self._next_try_ms = 0

    def may_try(self, now_ms: int) -> bool:
        """Whether the caller may call Redis now; in a pause, the first caller after it
        ends gets the one try (the next caller waits for another pause)."""
        with self._lock:
            if self._pause_ms == 0:
                return True
            if now_ms < self._next_try_ms:
                return False
            self._next_try_ms = now_ms + self._pause_ms
            return True

    def failed(self, now_ms: int) -> None:
        """A call did not get an answer: pause, longer than the last time."""
        with self._lock:
            self._pause_ms = min(max(2 * self._pause_ms, FIRST_PAUSE_MS), MAX_PAUSE_MS)
            self._next_try_ms = now_ms + self._pause_ms

    def answered(self) -> None:
        """A call got its answer: no pause."""
        with self._lock:
            self._pause_ms = 0
            self._next_try_ms = 0

    @property
    def pausing(self) -> bool:
        """Whether Redis failed last."""
        with self._lock:
            return self._pause_ms > 0
