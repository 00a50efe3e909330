"""The decode step: raw JSON batches to event columns, bad input to dead letters (BRIEF §3)."""

import json
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ato.catalog import CHANNELS, FLAG_CALL, FLAG_ERROR, FLAG_SESSION, SEGMENTS, load_catalog
from ato.columns import client_id_texts
from ato.config import EngineSettings
from operators import decode as d
from operators.batches import DecodedBatch, RawBatch
from operators.decode import Decoder
from state.hashing import hash_client_id_py

CATALOG = load_catalog()
FIXED = 1_767_600_000_000  # the injected wall clock
T0 = FIXED - 3_600_000
DROP = object()  # a field value meaning "leave the field out"


def event(**fields: Any) -> bytes:
    """A valid event; keyword arguments replace fields (``DROP`` removes one)."""
    doc: dict[str, Any] = {
        "event_id": "e-1",
        "client_id": "c-1",
        "ts": T0,
        "channel": "app",
        "type": "product_viewed",
    }
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not DROP}).encode()


def decoder(**engine: Any) -> Decoder:
    return Decoder(CATALOG, EngineSettings(**engine), now_ms=lambda: FIXED)


def decode(messages: list[bytes], **batch: Any) -> DecodedBatch:
    return decoder().decode(RawBatch("p0", messages, **batch))


def journey_code(name: str) -> int:
    return CATALOG.journey_codes[name]


def step_index(journey: str, step: str) -> int:
    return CATALOG.journey(journey).step(step).index


GOOD_A = event(event_id="a", client_id="alice")
GOOD_B = event(event_id="b", client_id="bob", ts=T0 + 5)

# orjson reads integers outside [-2**63, 2**64) as floats; -(2**63) - 1 rounds to the float
# -2**63, a whole number, which the decoder reads as the integer -2**63: an absurd ts.
BAD_INPUT = [
    pytest.param(b"not json", d.NOT_JSON, id="not-json"),
    pytest.param(b'{"event_id": "x", ', d.NOT_JSON, id="truncated-json"),
    pytest.param(b"", d.NOT_JSON, id="empty-message"),
    pytest.param(b"\xff\xfe{}", d.NOT_JSON, id="not-utf8"),
    pytest.param(b"1,2", d.NOT_JSON, id="two-values-joined-array-breaker"),
    pytest.param(b"[1, 2]", d.NOT_OBJECT, id="array"),
    pytest.param(b"42", d.NOT_OBJECT, id="number"),
    pytest.param(b'"text"', d.NOT_OBJECT, id="string"),
    pytest.param(b"null", d.NOT_OBJECT, id="null"),
    pytest.param(event(client_id=DROP), d.MISSING_FIELD, id="missing-client_id"),
    pytest.param(event(ts=DROP), d.MISSING_FIELD, id="missing-ts"),
    pytest.param(event(type=DROP), d.MISSING_FIELD, id="missing-type"),
    pytest.param(event(channel=DROP), d.MISSING_FIELD, id="missing-channel"),
    pytest.param(event(event_id=DROP), d.MISSING_FIELD, id="missing-event_id"),
    pytest.param(event(ts=str(T0)), d.BAD_TYPE, id="ts-string"),
    pytest.param(event(ts=T0 + 0.5), d.BAD_TYPE, id="ts-float"),
    pytest.param(event(ts=True), d.BAD_TYPE, id="ts-bool"),
    pytest.param(event(ts=[T0]), d.BAD_TYPE, id="ts-list"),
    pytest.param(event(session_id=5), d.BAD_TYPE, id="session_id-int"),
    pytest.param(event(channel=1), d.BAD_TYPE, id="channel-int"),
    pytest.param(event(client_id=12345), d.BAD_TYPE, id="client_id-int"),
    pytest.param(event(event_id=7), d.BAD_TYPE, id="event_id-int"),
    pytest.param(event(journey=["wealth_purchase"]), d.BAD_TYPE, id="journey-list"),
    pytest.param(event(attrs="senior"), d.BAD_TYPE, id="attrs-string"),
    pytest.param(event(attrs=[{"segment": "senior"}]), d.BAD_TYPE, id="attrs-list"),
    pytest.param(event(attrs=0), d.BAD_TYPE, id="attrs-int"),
    pytest.param(event(client_id=""), d.BAD_VALUE, id="client_id-empty"),
    pytest.param(event(event_id=""), d.BAD_VALUE, id="event_id-empty"),
    pytest.param(event(client_id="x" * 65), d.BAD_VALUE, id="client_id-too-long"),
    pytest.param(event(client_id="a\x00"), d.BAD_VALUE, id="client_id-trailing-nul"),
    pytest.param(event(client_id="   "), d.BAD_VALUE, id="client_id-spaces"),
    pytest.param(event(client_id=" \t\n "), d.BAD_VALUE, id="client_id-white-space"),
    pytest.param(event(client_id="\u00a0\u2003"), d.BAD_VALUE, id="client_id-unicode-space"),
    pytest.param(event(client_id="a\x01b"), d.BAD_VALUE, id="client_id-control"),
    pytest.param(event(client_id="a\x7f"), d.BAD_VALUE, id="client_id-del"),
    pytest.param(event(client_id="c\x9b"), d.BAD_VALUE, id="client_id-c1-control"),
    pytest.param(event(channel="fax"), d.UNKNOWN_CHANNEL, id="unknown-channel"),
    pytest.param(event(journey="time_travel"), d.UNKNOWN_JOURNEY, id="unknown-journey"),
    pytest.param(
        event(journey="wealth_purchase", step="teleport"), d.UNKNOWN_STEP, id="unknown-step"
    ),
    pytest.param(
        event(journey="wealth_purchase", step="otp"), d.UNKNOWN_STEP, id="step-not-in-journey"
    ),
    pytest.param(event(step="confirm"), d.UNKNOWN_STEP, id="step-without-journey"),
    pytest.param(event(ts=946_684_799_999), d.ABSURD_TS, id="ts-before-2000"),
    pytest.param(event(ts=-1), d.ABSURD_TS, id="ts-negative"),
    pytest.param(event(ts=FIXED + 86_400_001), d.ABSURD_TS, id="ts-far-future"),
    pytest.param(event(ts=2**63), d.ABSURD_TS, id="ts-2**63"),
    pytest.param(event(ts=-(2**63) - 1), d.ABSURD_TS, id="ts-below-int64"),
    pytest.param(event(ts=2**64 + 1), d.ABSURD_TS, id="ts-beyond-uint64"),
    pytest.param(event(pad="x" * 70_000), d.OVERSIZED, id="oversized"),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_INPUT)
def test_bad_message_is_dead_lettered_and_neighbours_decode(bad: bytes, reason: str) -> None:
    """One bad message between two good ones: it alone is dead-lettered, with its bytes."""
    out = decode([GOOD_A, bad, GOOD_B], first_offset=40)
    assert [(x.reason, x.raw, x.offset, x.partition) for x in out.dead] == [(reason, bad, 41, "p0")]
    assert out.dead[0].detail
    assert client_id_texts(out.events.client_id) == ["alice", "bob"]
    assert out.events.offset.tolist() == [40, 42]
    assert out.events.raw.tolist() == [GOOD_A, GOOD_B]
    assert out.n_in == 3
    assert out.max_ts == T0 + 5


@pytest.mark.parametrize(
    "good",
    [
        pytest.param(event(ts=946_684_800_000), id="ts-exactly-2000"),
        pytest.param(event(ts=FIXED + 86_400_000), id="ts-exactly-max-future"),
        pytest.param(event(client_id="x" * 64), id="client_id-at-max-length"),
        pytest.param(event(client_id="客户-007"), id="client_id-cjk"),
        pytest.param(event(client_id="zoë"), id="client_id-latin1"),
        pytest.param(event(client_id="🙂" * 64), id="client_id-emoji-64-chars"),
        pytest.param(event(journey=None, step=None), id="null-journey-and-step"),
        pytest.param(event(session_id="s-1"), id="session_id"),
    ],
)
def test_boundary_and_unicode_values_are_valid(good: bytes) -> None:
    """Values at the limits and non-ASCII client ids decode as events."""
    out = decode([good])
    assert out.dead == []
    assert len(out.events) == 1
    doc = json.loads(good)
    assert out.events.client_id[0].decode() == doc["client_id"]
    assert int(out.events.client_key[0]) == hash_client_id_py(doc["client_id"])


def test_oversized_limit_comes_from_settings() -> None:
    """``max_message_bytes`` is the limit: at it is fine, one byte over is oversized."""
    good = event()
    out = decoder(max_message_bytes=len(good)).decode(RawBatch("p0", [good, good + b" "]))
    assert len(out.events) == 1
    assert [(x.reason, x.offset) for x in out.dead] == [(d.OVERSIZED, 1)]


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(event(ts=True), id="ts-bool"),
        pytest.param(event(session_id=5), id="session_id-int"),
        pytest.param(event(channel=1), id="channel-int"),
        pytest.param(event(journey=1), id="journey-int"),
        pytest.param(event(journey="wealth_purchase", step=3), id="step-int"),
        pytest.param(event(attrs=True), id="attrs-bool"),
    ],
)
def test_outcome_does_not_depend_on_neighbours(bad: bytes) -> None:
    """A message gets the same verdict whether or not another message forces the slow path."""
    fast = decode([GOOD_A, bad])
    slow = decode([GOOD_A, bad, b"garbage"])
    assert [x.reason for x in fast.dead] == [x.reason for x in slow.dead if x.offset == 1]
    assert [x.reason for x in fast.dead] == [d.BAD_TYPE]


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param([event(ts=[1])], id="ts-[1]-alone"),
        pytest.param([event(ts=[1, 2])], id="ts-[1,2]-alone"),
        pytest.param([GOOD_A, event(ts=[])], id="ts-[]-after-good"),
        pytest.param([GOOD_A, event(ts={"a": 1}), event(ts=[3])], id="ts-dict-and-list"),
    ],
)
def test_ts_as_list_is_dead_lettered_not_raised(messages: list[bytes]) -> None:
    """A JSON array as ts is a wrong type like any other: decode must not raise."""
    out = decode(messages)
    bad = [i for i, m in enumerate(messages) if m != GOOD_A]
    assert [(x.reason, x.offset) for x in out.dead] == [(d.BAD_TYPE, i) for i in bad]


def test_messages_that_only_parse_when_joined_are_dead_lettered() -> None:
    """Halves of an object and a two-object message are each not JSON on their own."""
    head = b'{"event_id":"e1","client_id":"c1"'
    tail = b'"ts":%d,"channel":"app","type":"product_viewed"}' % T0
    pair = event(client_id="c2") + b"," + event(client_id="c3")
    out = decode([head, tail, pair, GOOD_A])
    assert [(x.reason, x.offset) for x in out.dead] == [
        (d.NOT_JSON, 0),
        (d.NOT_JSON, 1),
        (d.NOT_JSON, 2),
    ]
    assert out.events.offset.tolist() == [3]


def test_client_id_with_nul_is_not_merged_with_another_client() -> None:
    """numpy str_ arrays drop trailing NULs, so 'a\\x00' is dead-lettered rather than kept."""
    out = decode([event(client_id="a\x00"), event(client_id="a")])
    assert client_id_texts(out.events.client_id) == ["a"]
    assert [(x.reason, x.offset) for x in out.dead] == [(d.BAD_VALUE, 0)]


BAD_CLIENT_IDS = {
    "": "client_id is empty",
    " ": "client_id is only white space",
    "    ": "client_id is only white space",
    "\t": "client_id is only white space",
    " \r\n": "client_id is only white space",
    "\u3000": "client_id is only white space",
    "\ufeff": "client_id is only white space",  # the schema's pattern (ECMAScript \\s) says so
    " \ufeff\u00a0": "client_id is only white space",
    "c\x1f1": "client_id contains a control character",
    "c1\x7f": "client_id contains a control character",
    "\x00c1": "client_id contains a control character",
    "c 1\n": "client_id contains a control character",
}


@pytest.mark.parametrize("chunk", [d.SCAN_CHUNK, 2])
@pytest.mark.parametrize("mode", ["scan", "orjson"])
@pytest.mark.parametrize(("client_id", "detail"), BAD_CLIENT_IDS.items())
def test_blank_or_control_client_id_is_a_bad_value(
    client_id: str, detail: str, mode: str, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Empty, white-space-only and control-character client ids: the same dead letter on
    both decoders (the contact-policy step could not build a profile for them)."""
    monkeypatch.setattr(d, "SCAN_CHUNK", chunk)
    bad = event(client_id=client_id)
    messages = [GOOD_A, bad, GOOD_B, event(client_id=" c 1 ")]  # inner/outer spaces are fine
    out = decoder(decoder=mode).decode(RawBatch("p0", messages))
    assert [(x.reason, x.detail, x.raw, x.offset) for x in out.dead] == [
        (d.BAD_VALUE, detail, bad, 1)
    ]
    assert client_id_texts(out.events.client_id) == ["alice", "bob", " c 1 "]


@pytest.mark.parametrize("mode", ["scan", "orjson"])
def test_a_repeated_required_key_counts_its_last_value_on_both_decoders(mode: str) -> None:
    """As orjson reads JSON: the last of repeated keys wins, for the fields the scanner reads
    too (client, time, channel, type)."""
    repeated = (
        b'{"event_id":"e-1","client_id":"first","ts":1,"channel":"call","type":"x",'
        b'"client_id":"alice","ts":%d,"channel":"app","type":"product_viewed"}' % T0
    )
    out = decoder(decoder=mode).decode(RawBatch("p0", [repeated, GOOD_B]))
    assert out.dead == []
    assert client_id_texts(out.events.client_id) == ["alice", "bob"]
    assert out.events.ts.tolist() == [T0, T0 + 5]
    assert out.events.channel.tolist()[0] == CHANNELS.index("app")
    assert out.events.type_code.tolist()[0] == CATALOG.type_codes["product_viewed"]


@pytest.mark.parametrize("mode", ["scan", "orjson"])
def test_a_nineteen_digit_ts_in_64_bits_is_an_absurd_time_not_a_failure(mode: str) -> None:
    """The widest integer the scanner reads: in range for int64, far past any sane time."""
    far = event(ts=9_000_000_000_000_000_000)
    out = decoder(decoder=mode).decode(RawBatch("p0", [GOOD_A, far]))
    assert [(x.reason, x.offset) for x in out.dead] == [(d.ABSURD_TS, 1)]
    assert client_id_texts(out.events.client_id) == ["alice"]


@pytest.mark.parametrize("chunk", [d.SCAN_CHUNK, 2])
@pytest.mark.parametrize("mode", ["scan", "orjson"])
def test_message_that_is_not_bytes_is_a_bad_type(
    mode: str, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """None, a str (even of valid JSON) or an int in the batch: dead-lettered, not raised."""
    monkeypatch.setattr(d, "SCAN_CHUNK", chunk)
    odd: list[Any] = [None, GOOD_A.decode(), "nope", 7]
    out = decoder(decoder=mode).decode(RawBatch("p0", [GOOD_A, *odd, GOOD_B], first_offset=5))
    assert [(x.reason, x.raw, x.offset) for x in out.dead] == [
        (d.BAD_TYPE, m, 6 + k) for k, m in enumerate(odd)
    ]
    assert [x.detail for x in out.dead] == [
        "message is NoneType, not bytes",
        "message is str, not bytes",
        "message is str, not bytes",
        "message is int, not bytes",
    ]
    assert client_id_texts(out.events.client_id) == ["alice", "bob"]
    assert out.events.offset.tolist() == [5, 10]
    assert out.events.raw is not None and out.events.raw.tolist() == [GOOD_A, GOOD_B]


def test_bytearray_decodes_on_both_decoders() -> None:
    """A bytearray is bytes-like: it decodes, on the scan decoder through the orjson path."""
    for mode in ("scan", "orjson"):
        messages: list[Any] = [GOOD_A, bytearray(GOOD_B)]
        out = decoder(decoder=mode).decode(RawBatch("p0", messages))
        assert out.dead == []
        assert client_id_texts(out.events.client_id) == ["alice", "bob"]


def fast_only(monkeypatch: pytest.MonkeyPatch) -> Decoder:
    """A decoder whose per-message slow path fails the test if reached."""
    dec = decoder()

    def no_slow_path(*_args: Any) -> None:
        raise AssertionError

    monkeypatch.setattr(dec, "_check_each", no_slow_path)
    return dec


def test_clean_batch_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of valid messages never reaches the per-message check."""
    dec = fast_only(monkeypatch)
    messages = [event(event_id=f"e{i}", client_id=f"c{i}", ts=T0 + i) for i in range(50)]
    out = dec.decode(RawBatch("p0", messages, first_offset=7, read_wall_ms=123))
    assert len(out.events) == 50
    assert out.dead == []
    assert out.events.offset.tolist() == list(range(7, 57))
    assert (out.partition, out.read_wall_ms, out.n_in, out.max_ts) == ("p0", 123, 50, T0 + 49)


def test_columns_resolve_codes_flags_and_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Journey/step from type alone, from journey + type, from journey + step; flags; hashes."""
    rows = [
        ({"type": "order_confirm_viewed"}, "wealth_purchase", "confirm"),
        ({"journey": "large_transfer", "type": "otp_sent"}, "large_transfer", "otp"),
        (
            {"journey": "wealth_purchase", "step": "amount", "type": "my_own_event_name"},
            "wealth_purchase",
            "amount",
        ),
        ({"journey": "large_transfer", "type": "product_viewed"}, "large_transfer", None),
        ({"type": "app_backgrounded"}, None, None),
        ({"type": "something_new"}, None, None),
        ({"type": "error"}, None, None),
        ({"type": "call_started"}, None, None),
        ({"type": "app_session_start"}, None, None),
        ({"type": "payment_failed", "session_id": "s-9", "journey": None}, None, None),
    ]
    channels = ["app", "call", "branch", "ai"]
    messages = [
        event(client_id=f"客户{i}", ts=T0 + i, channel=channels[i % 4], **fields)
        for i, (fields, _, _) in enumerate(rows)
    ]
    out = fast_only(monkeypatch).decode(RawBatch("p0", messages))
    assert out.dead == []
    cols = out.events
    expected_journey = [journey_code(j) if j else -1 for _, j, _ in rows]
    expected_step = [step_index(j, s) if s else -1 for _, j, s in rows]
    assert cols.journey.tolist() == expected_journey
    assert cols.step.tolist() == expected_step
    types = [json.loads(m)["type"] for m in messages]
    assert cols.type_code.tolist() == [CATALOG.type_codes.get(t, 0) for t in types]
    assert cols.type_code[5] == 0  # a type the catalog does not name
    assert cols.flags.tolist() == [0] * 6 + [FLAG_ERROR, FLAG_CALL, FLAG_SESSION, FLAG_ERROR]
    assert cols.channel.tolist() == [CHANNELS.index(channels[i % 4]) for i in range(len(rows))]
    assert cols.ts.tolist() == [T0 + i for i in range(len(rows))]
    assert cols.client_key.tolist() == [hash_client_id_py(f"客户{i}") for i in range(len(rows))]
    assert cols.client_key.dtype == np.uint64
    assert cols.ts.dtype == np.int64
    assert cols.raw.tolist() == messages


def test_mixed_batch_keeps_input_order_and_offsets() -> None:
    """Good events keep their input order and source offsets around any bad ones."""
    messages = [
        b"oops",
        event(event_id="e1", client_id="c1", ts=T0 + 30),
        event(channel="fax"),
        event(event_id="e3", client_id="c3", ts=T0 + 10),
        b"[]",
        event(event_id="e5", client_id="c5", ts=T0 + 20),
        event(ts=0),
    ]
    out = decode(messages, first_offset=1000)
    assert client_id_texts(out.events.client_id) == ["c1", "c3", "c5"]
    assert out.events.offset.tolist() == [1001, 1003, 1005]
    assert out.events.ts.tolist() == [T0 + 30, T0 + 10, T0 + 20]
    assert out.max_ts == T0 + 30
    assert sorted((x.offset, x.reason) for x in out.dead) == [
        (1000, d.NOT_JSON),
        (1002, d.UNKNOWN_CHANNEL),
        (1004, d.NOT_OBJECT),
        (1006, d.ABSURD_TS),
    ]
    for letter in out.dead:
        assert letter.raw == messages[letter.offset - 1000]


def test_explicit_offsets_are_used() -> None:
    """``RawBatch(offsets=...)`` positions go on events and dead letters alike."""
    out = decode([GOOD_A, b"{", GOOD_B], offsets=[100, 205, 310], first_offset=1)
    assert out.events.offset.tolist() == [100, 310]
    assert [(x.reason, x.offset) for x in out.dead] == [(d.NOT_JSON, 205)]


def test_empty_and_all_bad_batches() -> None:
    """No valid events: empty columns and no max_ts."""
    empty = decode([])
    assert (len(empty.events), empty.dead, empty.max_ts, empty.n_in) == (0, [], None, 0)
    bad = decode([b"x", b"[]"])
    assert len(bad.events) == 0
    assert bad.max_ts is None
    assert [x.reason for x in bad.dead] == [d.NOT_JSON, d.NOT_OBJECT]


def test_dead_letter_doc_keeps_original_bytes() -> None:
    """The dead-letter document carries the raw bytes base64-encoded."""
    import base64

    raw = b"\xff not json"
    (letter,) = decode([raw], first_offset=9).dead
    doc = letter.to_doc()
    assert base64.b64decode(doc["raw_b64"]) == raw
    assert (doc["reason"], doc["offset"], doc["partition"]) == (d.NOT_JSON, 9, "p0")


SEGMENT_CASES = [
    pytest.param({"segment": "senior"}, SEGMENTS.index("senior"), id="known"),
    pytest.param({"device": "ios", "segment": "car_owner"}, SEGMENTS.index("car_owner"), id="2nd"),
    pytest.param({"segment": "Senior"}, -1, id="unknown-name"),
    pytest.param({"segment": ""}, -1, id="empty-name"),
    pytest.param({"segment": 5}, -1, id="int"),
    pytest.param({"segment": None}, -1, id="null"),
    pytest.param({"segment": ["senior"]}, -1, id="list"),
    pytest.param({"segment": {"segment": "senior"}}, -1, id="object"),
    pytest.param({"profile": {"segment": "senior"}}, -1, id="nested"),
    pytest.param({"device": "ios"}, -1, id="no-segment"),
    pytest.param({}, -1, id="empty-attrs"),
    pytest.param(None, -1, id="null-attrs"),
    pytest.param(DROP, -1, id="no-attrs"),
    pytest.param({"segment": "sénior"}, -1, id="non-ascii-name"),
]


@pytest.mark.parametrize("path", ["scan", "orjson", "slow"])
@pytest.mark.parametrize(("attrs", "code"), SEGMENT_CASES)
def test_segment_comes_from_attrs(attrs: Any, code: int, path: str) -> None:
    """attrs.segment names one of SEGMENTS, or reads -1: never a reason to dead-letter."""
    messages = [event(attrs=attrs), event(attrs={"segment": "executive"})]
    if path == "slow":
        messages.append(b"garbage")  # sends the orjson path message by message
    out = decoder(decoder="orjson" if path == "orjson" else "scan").decode(RawBatch("p0", messages))
    assert [x.offset for x in out.dead] == ([2] if path == "slow" else [])
    assert out.events.segment.dtype == np.int8
    assert out.events.segment.tolist() == [code, 0]


def test_segment_follows_rows_through_value_rules() -> None:
    """Events dropped by the value rules take their segment along; the others keep theirs."""
    messages = [
        event(channel="fax", attrs={"segment": "senior"}),
        event(attrs={"segment": "car_owner"}),
        event(ts=0, attrs={"segment": "executive"}),
        event(attrs={"segment": "young_trendsetter"}),
    ]
    out = decode(messages)
    assert sorted(x.offset for x in out.dead) == [0, 2]
    assert out.events.segment.tolist() == [
        SEGMENTS.index("car_owner"),
        SEGMENTS.index("young_trendsetter"),
    ]


def test_generated_traffic_decodes_its_segments() -> None:
    """The generator's events carry their client's segment into the column."""
    from ato.config import GeneratorSettings
    from ato.generator import generate

    traffic = generate(CATALOG, GeneratorSettings(clients=50, seed=3))
    messages = [m for part in traffic.partitions.values() for m in part]
    out = decoder(max_future_ms=10**13).decode(RawBatch("p0", messages))
    assert out.dead == []
    docs = [orjson.loads(m) for m in messages]
    expected = [SEGMENTS.index(x["attrs"]["segment"]) if "attrs" in x else -1 for x in docs]
    assert out.events.segment.tolist() == expected
    assert len(set(expected) - {-1}) > 1  # several segments, not one code everywhere


# ---------------------------------------------------------------------- property tests

_FIELDS = [
    "event_id", "client_id", "ts", "channel", "type", "journey", "step", "session_id", "attrs",
]  # fmt: skip
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=T0 - 10**9, max_value=FIXED + 2 * 86_400_000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(
        [*CHANNELS, "wealth_purchase", "confirm", "otp", "order_confirm_viewed", "x" * 70]
    ),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def _jsonish(draw: st.DrawFn) -> bytes:
    """A valid event with some fields dropped or replaced by random values."""
    client_id = st.one_of(
        st.text(min_size=1, max_size=10),
        st.text(" \t\n\r\x0b\x0c\x1f\x7f\u00a0\u3000", min_size=1, max_size=4),
    )
    doc = json.loads(event(client_id=draw(client_id)))
    for name in draw(st.lists(st.sampled_from(_FIELDS), max_size=3)):
        if draw(st.booleans()):
            doc.pop(name, None)
        else:
            doc[name] = draw(_VALUES)
    extra = draw(st.dictionaries(st.text(max_size=5), _VALUES, max_size=2))
    return json.dumps({**extra, **doc}).encode()


_MESSAGES = st.lists(
    st.one_of(
        st.binary(max_size=40),
        _jsonish(),
        st.just(event()),
        st.sampled_from([b"1,2", b"[1", b"2]", b"{", b"}", b",", b"[]", b"{}"]),
    ),
    max_size=12,
)


@settings(deadline=None, max_examples=300)
@given(_MESSAGES)
def test_decode_never_raises_and_accounts_for_every_message(messages: list[bytes]) -> None:
    """Every message ends as exactly one event or exactly one dead letter, at its offset."""
    out = decoder(max_message_bytes=200, max_client_id_len=8).decode(
        RawBatch("p0", messages, first_offset=10)
    )
    n = len(messages)
    assert len(out.events) + len(out.dead) == n == out.n_in
    seen = out.events.offset.tolist() + [x.offset for x in out.dead]
    assert sorted(seen) == list(range(10, 10 + n))
    for letter in out.dead:
        assert letter.raw == messages[letter.offset - 10]
        assert letter.reason in {
            d.OVERSIZED, d.NOT_JSON, d.NOT_OBJECT, d.MISSING_FIELD, d.BAD_TYPE, d.BAD_VALUE,
            d.ABSURD_TS, d.UNKNOWN_CHANNEL, d.UNKNOWN_JOURNEY, d.UNKNOWN_STEP,
        }  # fmt: skip
    for raw, offset in zip(out.events.raw.tolist(), out.events.offset.tolist(), strict=True):
        assert raw == messages[offset - 10]
    assert out.events.offset.tolist() == sorted(out.events.offset.tolist())


@settings(deadline=None, max_examples=100)
@given(st.lists(_jsonish(), min_size=1, max_size=8))
def test_valid_events_match_their_own_json(messages: list[bytes]) -> None:
    """Whatever survives decoding carries the client id and time its message holds."""
    out = decoder().decode(RawBatch("p0", messages))
    for i, offset in enumerate(out.events.offset.tolist()):
        doc = orjson.loads(messages[offset])
        assert out.events.ts[i] == doc["ts"]
        assert int(out.events.client_key[i]) == hash_client_id_py(out.events.client_id[i].decode())
        client_id = out.events.client_id[i].decode()
        assert client_id.strip()  # what policy.profiles.Profile asks of a client_id
        assert not any(ord(c) < 32 or ord(c) == 127 for c in client_id)


@pytest.mark.parametrize("written", [f"{T0}.0", f"{T0 // 1000}.0e3", f"{T0 / 1e12}e12"])
def test_a_ts_written_as_an_integral_float_is_an_integer(written: str) -> None:
    """JSON Schema's "integer" (the published schema's type of ts) includes 1767...000.0 and
    1.7675964e12: they are read as that integer, in a batch of their own and among events
    the scanner reads (before, they were dead-lettered as bad_type)."""
    message = event().replace(str(T0).encode(), written.encode())
    assert int(float(written)) == T0 and f"{T0},".encode() not in message
    for batch in ([message], [GOOD_A, message, GOOD_B]):
        out = decode(batch)
        assert out.dead == []
        assert T0 in out.events.ts.tolist()
