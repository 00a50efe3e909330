"""Envelope splitting without a broker: messages that cannot be split stay whole, offsets stay
aligned, nothing raises, and the decoder dead-letters what stayed whole."""

import json

import numpy as np
import orjson
from hypothesis import given
from hypothesis import strategies as st

from ato.catalog import load_catalog
from ato.config import EngineSettings
from operators import decode as d
from operators.batches import RawBatch
from operators.decode import Decoder
from sources.envelopes import element_bounds, element_bounds_twin, expand_envelopes


def nested(depth: int) -> bytes:
    """An object nested ``depth`` levels deep."""
    return b'{"a":' * depth + b"1" + b"}" * depth


DEEP = b"[" + nested(300) + b"]"  # orjson reads it (<= 1024 levels) but could not write it (> 254)
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


def test_elements_keep_their_original_bytes() -> None:
    """Escapes, number spellings, duplicate keys and white space inside an element are what
    the collector sent; only the white space around elements goes."""
    first = b'{"client_id": "caf\\u00e9", "n": 1.0E+2, "n": 2}'
    envelope = b" [\n  " + first + b' ,\t"x\\",y" ,\r\n[1, [2]] ]\n'
    assert expand_envelopes([envelope], [7]) == ([first, b'"x\\",y"', b"[1, [2]]"], [7, 7, 7])


def test_an_element_nested_deeper_than_any_encoder_writes_is_split_unchanged() -> None:
    """It used to keep the whole envelope together (re-encoding failed past 254 levels)."""
    assert expand_envelopes([DEEP], [1]) == ([nested(300)], [1])
    assert expand_envelopes([b"[" + nested(254) + b"]"], [3]) == ([nested(254)], [3])


def test_an_envelope_orjson_cannot_read_stays_whole() -> None:
    assert expand_envelopes([TOO_DEEP, b"[1,", b"[1]x"], [2, 3, 4]) == (
        [TOO_DEEP, b"[1,", b"[1]x"],
        [2, 3, 4],
    )


def test_empty_envelope_stays_whole() -> None:
    assert expand_envelopes([b"[]", b" [ ]\n"], [5, 6]) == ([b"[]", b" [ ]\n"], [5, 6])


def test_mixed_batch_keeps_messages_and_offsets_aligned() -> None:
    envelope = b'[{"a":1},{"a":2}]'
    messages = [b'{"a":0}', envelope, DEEP, b"[]", b"[1,", b"[3]"]
    assert expand_envelopes(messages, [10, 11, 12, 14, 15, 16]) == (
        [b'{"a":0}', b'{"a":1}', b'{"a":2}', nested(300), b"[]", b"[1,", b"3"],
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
        (d.MISSING_FIELD, nested(300), 2),
        (d.NOT_JSON, TOO_DEEP, 3),
        (d.NOT_OBJECT, b"[]", 4),
    ]


def test_an_envelope_over_the_limit_stays_whole_and_is_dead_lettered_as_oversized() -> None:
    """One message's parse is bounded: an array over ``kafka.max_envelope_bytes`` is not
    split, and the decoder finds it over ``engine.max_message_bytes``."""
    big = b"[" + b",".join([EVENT] * 400) + b"]"
    messages, offsets = expand_envelopes([EVENT, big], [0, 1], max_bytes=len(big) - 1)
    assert messages == [EVENT, big] and offsets == [0, 1]
    assert expand_envelopes([big], [1], max_bytes=len(big))[0] == [EVENT] * 400
    settings = EngineSettings(max_message_bytes=len(big) - 1)
    decoder = Decoder(load_catalog(), settings, now_ms=lambda: 1_767_600_000_000)
    out = decoder.decode(RawBatch("in#0", messages, offsets=offsets))
    assert out.events.offset.tolist() == [0]
    assert [(x.reason, x.offset) for x in out.dead] == [(d.OVERSIZED, 1)]


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


@given(
    st.lists(JSON, min_size=1, max_size=6),
    st.sampled_from([None, 0, 2]),
    st.sampled_from([(",", ":"), (", ", ": "), (" ,\t", " :\n")]),
    st.booleans(),
)
def test_element_bounds_kernel_matches_its_twin_and_the_elements(
    values: list, indent: int | None, separators: tuple[str, str], ascii_only: bool
) -> None:
    """Numba kernel and twin agree on any array, however it is spaced and escaped, and each
    slice parses to its element."""
    message = json.dumps(values, indent=indent, separators=separators, ensure_ascii=ascii_only)
    buf = (" \n" + message + "\r\n").encode()
    kernel = element_bounds(np.frombuffer(buf, np.uint8)).tolist()
    assert [tuple(b) for b in kernel] == element_bounds_twin(buf)
    assert [json.loads(buf[s:e]) for s, e in kernel] == values
