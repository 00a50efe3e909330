"""librdkafka's log lines on stderr, at most one a minute per kind of line and client.

Left to itself, librdkafka writes every log line to stderr: a broker gone mid-run made
about 2,800 lines (a failed connection per client and retry) that buried the run's one
``ato: error:`` line. The flow's consumers and producers log through :data:`LIBRDKAFKA_LOG`
instead (their ``logger`` property).
"""

import logging
import sys
import threading
import time

REPEAT_S = 60.0  # a line of the same kind from the same client shows again after this


class OncePerKind(logging.Filter):
    """Passes a record unless one of its kind passed within ``REPEAT_S``. confluent-kafka
    logs ``("%s [%s] %s", facility, client name, text)``: the kind is the first two."""

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[object, float] = {}
        self.lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        kind = (record.msg, *args[:2])
        now = time.monotonic()
        with self.lock:
            if now - self.last.get(kind, -REPEAT_S) < REPEAT_S:
                return False
            self.last[kind] = now
        return True


class _Stderr(logging.Handler):
    """Writes to the ``sys.stderr`` of the moment (a run may redirect it)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"ato: kafka: {record.getMessage()}", file=sys.stderr)


LIBRDKAFKA_LOG = logging.getLogger("ato.librdkafka")
LIBRDKAFKA_LOG.propagate = False
_handler = _Stderr()
_handler.addFilter(OncePerKind())
LIBRDKAFKA_LOG.addHandler(_handler)
