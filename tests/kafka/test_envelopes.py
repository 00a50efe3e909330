"""Envelope splitting without a broker: messages that cannot be split stay whole, offsets stay
aligned, nothing raises, and the decoder dead-letters what stayed whole."""

import json

import orjson
from hypothesis import given
from hypothesis import strategies as st

from ato.catalog import load_catalog
from ato.config import EngineSettings
from operators import decode as d
from operators.batches import RawBatch
from operators.decode import Decoder
from sources.kafka import expand_envelopes


def nested(depth: int) -> bytes:
    """An object nested ``depth`` levels deep."""
    return b'{"a":' * depth + b"1" + b"}" * depth


DEEP = b"[" + nested(300) + b"]"  # orjson reads it (<= 1024 levels) but cannot write it (> 254)
TOO_DEEP = b"[" + nested(1100) + b"]"  # orjson cannot read it
EVENT = orjson.dumps(
    {
        "event_id": "e-1",
        "client_id": "c-1",
        "ts": 1_767_600_000_000,
        "channel": "app",
        "type": "product_viewed",
    }
)


def test_deeply_nested_envelope_stays_whole() -> None:
    assert expand_envelopes([DEEP], [1]) == ([DEEP], [1])
    assert expand_envelopes([TOO_DEEP], [2]) == ([TOO_DEEP], [2])


def test_deepest_writable_element_is_split() -> None:
    assert expand_envelopes([b"[" + nested(254) + b"]"], [3]) == ([nested(254)], [3])


def test_empty_envelope_stays_whole() -> None:
    assert expand_envelopes([b"[]", b" [ ]\n"], [5, 6]) == ([b"[]", b" [ ]\n"], [5, 6])


def test_mixed_batch_keeps_messages_and_offsets_aligned() -> None:
    envelope = b'[{"a":1},{"a":2}]'
    messages = [b'{"a":0}', envelope, DEEP, b"[]", b"[1,", b"[3]"]
    assert expand_envelopes(messages, [10, 11, 12, 14, 15, 16]) == (
        [b'{"a":0}', b'{"a":1}', b'{"a":2}', DEEP, b"[]", b"[1,", b"3"],
        [10, 11, 11, 12, 14, 15, 16],
    )


def test_decoder_dead_letters_what_stayed_whole() -> None:
    messages, offsets = expand_envelopes(
        [EVENT, b"[" + EVENT + b"]", DEEP, TOO_DEEP, b"[]"], [0, 1, 2, 3, 4]
    )
    decoder = Decoder(load_catalog(), EngineSettings(), now_ms=lambda: 1_767_600_000_000)
    out = decoder.decode(RawBatch("in#0", messages, offsets=offsets))
    assert out.events.offset.tolist() == [0, 1]
    assert [(x.reason, x.raw, x.offset) for x in out.dead] == [
        (d.NOT_OBJECT, DEEP, 2),
        (d.NOT_JSON, TOO_DEEP, 3),
        (d.NOT_OBJECT, b"[]", 4),
    ]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
)


@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40).map(lambda b: b"[" + b),
            st.lists(JSON, max_size=4).map(lambda v: json.dumps(v).encode()),
            st.integers(0, 1100).map(lambda n: b"[" + nested(n) + b"]"),
        ),
        max_size=8,
    )
)
def test_never_raises_and_every_message_keeps_its_offset(messages: list[bytes]) -> None:
    offsets = list(range(100, 100 + len(messages)))
    out, out_offsets = expand_envelopes(messages, offsets)
    assert len(out) == len(out_offsets)
    assert out_offsets == sorted(out_offsets)
    assert set(out_offsets) == set(offsets)  # no message lost, whole or split
