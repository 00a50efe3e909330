"""Records the Kafka consumer cannot read become dead letters, not silent gaps (no broker:
the consumer's messages are built directly)."""

import logging

import pytest
from confluent_kafka import KafkaError, Message

from ato.catalog import load_catalog
from ato.config import EngineSettings
from operators.batches import DeadLetter, RawBatch
from operators.decode import UNREADABLE, Decoder
from sources.kafka import KafkaSourceError, consumed_batch, split_errors

EVENT = (
    b'{"event_id":"e-1","client_id":"c-1","ts":1767600000000,"channel":"app",'
    b'"type":"product_viewed"}'
)


def message(offset: int, value: bytes | None = EVENT, error: KafkaError | None = None) -> Message:
    return Message(topic="in", partition=0, offset=offset, value=value, error=error)


def test_a_corrupt_record_becomes_a_dead_letter_and_partition_errors_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    messages = [
        message(5),
        message(6, b"\x00garbled", KafkaError(KafkaError._BAD_MSG)),
        message(7, None, KafkaError(KafkaError._BAD_COMPRESSION)),
        message(-1001, None, KafkaError(KafkaError._TRANSPORT)),  # the partition's, no record
        message(8),
    ]
    kept, dead = split_errors("in#0", messages)
    assert [m.offset() for m in kept] == [5, 8]
    assert [(d.reason, d.raw, d.partition, d.offset) for d in dead] == [
        (UNREADABLE, b"\x00garbled", "in#0", 6),
        (UNREADABLE, b"", "in#0", 7),
    ]
    assert dead[0].detail.startswith("_BAD_MSG: ")
    assert "_TRANSPORT" in caplog.text and "offset 6" in caplog.text


def test_a_fatal_error_stops_the_source() -> None:
    fatal = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
    with pytest.raises(KafkaSourceError, match="in#0"):
        split_errors("in#0", [message(1), message(2, None, fatal)])


@pytest.mark.parametrize(
    "code", [KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.UNKNOWN_TOPIC_OR_PART]
)
def test_an_error_no_retry_fixes_stops_the_source(code: int) -> None:
    """Access refused was logged at every read, for ever, while the partition held the
    watermark."""
    with pytest.raises(KafkaSourceError, match="in#0"):
        split_errors("in#0", [message(1), message(-1001, None, KafkaError(code))])


def test_the_decoder_passes_unreadable_records_on_in_offset_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    lost = DeadLetter(UNREADABLE, "_BAD_MSG: Local: Bad message format", b"", "in#0", 11)
    batch = RawBatch("in#0", [EVENT, b"not json"], offsets=[10, 12], unreadable=(lost,))
    for decoder in ("scan", "orjson"):
        settings = EngineSettings(decoder=decoder)
        out = Decoder(load_catalog(), settings, now_ms=lambda: 1_767_600_000_000).decode(batch)
        assert out.events.offset.tolist() == [10]
        assert [(d.reason, d.offset) for d in out.dead] == [(UNREADABLE, 11), ("not_json", 12)]
        assert out.n_in == len(out.events) + len(out.dead) == 3


def test_a_batch_keeps_its_offsets_when_an_unreadable_record_ends_it() -> None:
    bad = KafkaError(KafkaError._BAD_MSG)
    messages = [message(5), message(6), message(7), message(8), message(9, None, bad)]
    got = consumed_batch("in#0", messages, 123)
    assert got is not None
    batch, next_offset = got
    assert (len(batch.messages), batch.offset_array().tolist(), next_offset) == (
        4,
        [5, 6, 7, 8],
        10,
    )
    assert [d.offset for d in batch.unreadable] == [9]


def test_envelopes_split_beside_an_unreadable_record() -> None:
    bad = KafkaError(KafkaError._BAD_COMPRESSION)
    messages = [message(5, b"[" + EVENT + b"," + EVENT + b"]"), message(6), message(7, None, bad)]
    got = consumed_batch("in#0", messages, 123)
    assert got is not None
    batch, next_offset = got
    assert (batch.offset_array().tolist(), next_offset) == ([5, 5, 6], 8)
    assert batch.messages == [EVENT, EVENT, EVENT]


def test_an_unreadable_record_at_offset_zero_alone_makes_a_batch() -> None:
    got = consumed_batch("in#0", [message(0, None, KafkaError(KafkaError._BAD_MSG))], 123)
    assert got is not None
    batch, next_offset = got
    assert (batch.messages, [d.offset for d in batch.unreadable], next_offset) == ([], [0], 1)


def test_only_partition_errors_make_no_batch() -> None:
    transport = KafkaError(KafkaError._TRANSPORT)
    assert consumed_batch("in#0", [message(-1001, None, transport)], 123) is None
