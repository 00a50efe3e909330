"""librdkafka's log lines: at most one a minute per kind and client."""

import logging

import pytest

from ato import kafka_log


def _record(facility: str, client: str, text: str) -> logging.LogRecord:
    return logging.LogRecord(
        "x", logging.ERROR, "", 0, "%s [%s] %s", (facility, client, text), None
    )


def test_a_kind_of_line_passes_once_a_minute_per_client(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(kafka_log.time, "monotonic", lambda: now[0])
    once = kafka_log.OncePerKind()
    assert once.filter(_record("FAIL", "producer-1", "connect failed (after 0ms)"))
    assert not once.filter(_record("FAIL", "producer-1", "connect failed (after 9ms)"))
    assert once.filter(_record("FAIL", "consumer-2", "connect failed"))  # another client
    assert once.filter(_record("ERROR", "producer-1", "all brokers down"))  # another kind
    now[0] += kafka_log.REPEAT_S
    assert once.filter(_record("FAIL", "producer-1", "connect failed"))
