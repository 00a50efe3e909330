"""The numba scanner agrees with its twin, and the scan decoder with the orjson decoder."""

import dataclasses
import json

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ato.catalog import SEGMENTS, load_catalog, parse_catalog
from ato.columns import EventColumns, client_id_texts
from ato.config import EngineSettings
from operators import decode, scan
from operators.batches import RawBatch
from operators.decode import Decoder

CATALOG = load_catalog()
NOW = 1_767_700_000_000

text = st.one_of(
    st.sampled_from(["app", "call", "ai", "branch", "order_paid", "open_account", "confirm", ""]),
    st.text(max_size=8),
)
scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), text)
json_value = st.recursive(
    scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3)
)
# client ids the decoders dead-letter: empty, white space only, control characters
blank_id = st.sampled_from(["", " ", "   ", "\t", " \n", "\u3000", "C\x01", "C\x7f", " C "])
event = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.one_of(text, scalar),
        "client_id": st.one_of(st.sampled_from(["C1", "C2", "Ç3"]), blank_id, scalar),
        "ts": st.one_of(st.integers(NOW - 10**9, NOW), scalar),
        "channel": st.one_of(st.sampled_from(["app", "call", "branch", "ai"]), scalar),
        "type": st.one_of(st.sampled_from(CATALOG.type_names), scalar),
        "journey": st.one_of(st.sampled_from([j.name for j in CATALOG.journeys]), scalar),
        "step": st.one_of(st.sampled_from(["confirm", "start", "otp"]), scalar),
        "session_id": scalar,
        "attrs": json_value,
    },
)

# attrs: objects with or without a segment (a name, another string, another type, nested),
# or any other JSON value (which the decoders dead-letter unless it is null)
segment_value = st.one_of(st.sampled_from(SEGMENTS), text, scalar, json_value)
plain_segment = st.one_of(  # ASCII-only values, so that the scanner takes most messages
    st.sampled_from(SEGMENTS), st.sampled_from(["nobody", ""]), st.integers(-5, 5), st.none()
)
attrs_key = st.one_of(st.just("segment"), st.sampled_from(["device", "Segment", "segment "]))
attrs_object = st.dictionaries(
    attrs_key,
    st.one_of(segment_value, st.dictionaries(attrs_key, segment_value, max_size=2)),
    max_size=3,
)
attrs = st.one_of(
    st.fixed_dictionaries({"segment": st.sampled_from(SEGMENTS)}, optional={"device": text}),
    st.fixed_dictionaries({"segment": segment_value}),
    attrs_object,
    json_value,
)
# events the scanner can take: valid required fields, journey/session/attrs varying (and now
# and then a client_id of only spaces, which it must leave to the orjson path)
scannable = st.fixed_dictionaries(
    {
        "event_id": st.sampled_from(["e1", "e-2"]),
        "client_id": st.one_of(st.sampled_from(["C1", "C2"]), st.sampled_from([" ", "   "])),
        "ts": st.integers(NOW - 10**9, NOW),
        "channel": st.sampled_from(["app", "call", "branch", "ai"]),
        "type": st.sampled_from(CATALOG.type_names),
    },
    optional={
        "journey": st.one_of(st.none(), st.sampled_from([j.name for j in CATALOG.journeys])),
        "session_id": st.one_of(st.none(), text),
    },
)
with_attrs = st.builds(lambda doc, value: {**doc, "attrs": value}, scannable, attrs)


def _json_text(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


@st.composite
def attrs_text(draw: st.DrawFn, depth: int = 0) -> str:
    """An ``attrs`` object as text, with keys that may repeat (the last one counts)."""
    members = []
    for _ in range(draw(st.integers(0, 3))):
        key = draw(attrs_key)
        if depth < 1 and draw(st.integers(0, 3)) == 0:
            value = draw(attrs_text(depth + 1))
        else:
            value = _json_text(draw(st.one_of(plain_segment, segment_value)))
        members.append(f"{_json_text(key)}:{value}")
    return "{" + ",".join(members) + "}"


@st.composite
def repeated_keys(draw: st.DrawFn) -> bytes:
    """A scannable event whose attrs, and attrs.segment, may be given more than once."""
    doc = draw(scannable)
    attrs_values = st.one_of(attrs_text(), attrs_text(), st.sampled_from(["null", "[]", "1"]))
    values = draw(st.lists(attrs_values, max_size=3))
    members = [f"{_json_text(k)}:{_json_text(v)}" for k, v in doc.items()]
    members += [f'"attrs":{v}' for v in values]
    order = draw(st.permutations(range(len(members))))
    return ("{" + ",".join(members[k] for k in order) + "}").encode()


@st.composite
def message(draw: st.DrawFn) -> bytes:
    doc = draw(st.one_of(event, scannable, with_attrs, with_attrs, json_value))
    style = draw(st.sampled_from(["orjson", "spaced", "ascii"]))
    try:
        if style == "orjson":
            out = orjson.dumps(doc)
        else:
            out = json.dumps(
                doc, ensure_ascii=style == "ascii", indent=1 if style == "spaced" else None
            ).encode()
    except (TypeError, ValueError, orjson.JSONEncodeError):
        out = b"{}"
    cut = draw(st.integers(0, 3))
    if cut == 1 and len(out) > 2:
        out = out[: draw(st.integers(1, len(out) - 1))]
    elif cut == 2:
        out = out + draw(st.sampled_from([b",", b" ", b"}", b"x"]))
    return out


messages = st.lists(st.one_of(message(), repeated_keys()), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_scan_matches_its_twin(messages: list[bytes]) -> None:
    lengths = np.array([len(m) for m in messages], dtype=np.int64)
    ends = np.cumsum(lengths)
    buf = np.frombuffer(b"".join(messages) or b" ", dtype=np.uint8)
    vocabularies = Decoder(CATALOG, EngineSettings()).vocabularies
    status, ts, span_start, span_len, hashes, codes = scan.scan_events(
        buf, ends - lengths, ends, 64, vocabularies
    )
    for i, (t_status, t_ts, t_spans, t_hash) in enumerate(scan.scan_events_py(messages, 64)):
        assert status[i] == t_status, messages[i]
        if t_status == scan.OK:
            assert ts[i] == t_ts and hashes[i] == t_hash
            for field, value in t_spans.items():
                start, length = span_start[field, i], span_len[field, i]
                got = None if length < 0 else bytes(buf[start : start + length]).decode()
                assert got == value, (messages[i], field)
                if field in vocabularies.by_field:  # the kernel's lookup against the dict's
                    assert codes[field, i] == vocabularies.by_field[field].code(value)


def _same(a: Decoder, b: Decoder, messages: list[bytes], offsets: list[int] | None = None) -> None:
    batch = (
        RawBatch("p", messages, 100)
        if offsets is None
        else RawBatch("p", messages, offsets=offsets)
    )
    x, y = a(batch), b(batch)
    for field in dataclasses.fields(EventColumns):  # every column, segment included
        if field.name != "raw":
            a, b = getattr(x.events, field.name), getattr(y.events, field.name)
            assert a.dtype == b.dtype and np.array_equal(a, b), field.name
    assert list(x.events.raw) == list(y.events.raw)
    assert [(d.reason, d.detail, d.raw, d.offset) for d in x.dead] == [
        (d.reason, d.detail, d.raw, d.offset) for d in y.dead
    ]
    assert x.max_ts == y.max_ts


# for the decoders only: messages that are not bytes (the batch's type says bytes)
not_bytes = st.sampled_from([None, "{}", '{"event_id":"e1"}', 5])
any_messages = st.lists(st.one_of(message(), repeated_keys(), not_bytes), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(any_messages)
def test_scan_decoder_equals_orjson_decoder(messages: list[bytes]) -> None:
    """Whatever the input, both decoders give the same events and dead letters, also when
    the scanner takes the batch in several chunks, on its threads or on the caller's."""
    scanned = Decoder(CATALOG, EngineSettings(decoder="scan"), now_ms=lambda: NOW)
    one_thread = Decoder(
        CATALOG, EngineSettings(decoder="scan", decode_threads=1), now_ms=lambda: NOW
    )
    parsed = Decoder(CATALOG, EngineSettings(decoder="orjson"), now_ms=lambda: NOW)
    _same(scanned, parsed, messages)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(decode, "SCAN_CHUNK", 3)
        _same(scanned, parsed, messages)
        _same(one_thread, parsed, messages)


def test_a_batch_whose_every_message_is_bad_through_both_paths() -> None:
    """The scanner takes one message (its value rules then dead-letter it), orjson the
    other, and no event is left: the decode step crashed on putting the none back in input
    order, which stopped the run."""
    bad_channel = {"event_id": "e1", "client_id": "C1", "ts": NOW, "channel": "fax", "type": "x"}
    messages = [b"not json at all", orjson.dumps(bad_channel)]
    for decoder in ("scan", "orjson"):
        out = Decoder(CATALOG, EngineSettings(decoder=decoder), now_ms=lambda: NOW)(
            RawBatch("p", messages, 0)
        )
        assert len(out.events) == 0
        assert [d.reason for d in out.dead] == ["not_json", "unknown_channel"]


def test_client_ids_holding_a_byte_order_mark_among_other_characters() -> None:
    """U+FEFF inside an id with other characters is an ordinary id (only an id of nothing but
    white space, U+FEFF included, is refused): the decode step raised on it, losing the batch."""
    good = {"event_id": "e0", "client_id": "C0", "ts": NOW, "channel": "app", "type": "x"}
    ids = ["\ufeffa", "a\ufeff", "x\ufeffy", "\ufeff \ufeff"]
    messages = [orjson.dumps(good)] + [orjson.dumps({**good, "client_id": i}) for i in ids]
    for decoder in ("scan", "orjson"):
        out = Decoder(CATALOG, EngineSettings(decoder=decoder), now_ms=lambda: NOW)(
            RawBatch("p", messages, 0)
        )
        assert client_id_texts(out.events.client_id) == ["C0", *ids[:3]]
        assert [(d.offset, d.reason) for d in out.dead] == [(4, "bad_value")]


def test_integers_past_a_double_anywhere_are_read_as_orjson_reads_them() -> None:
    """The scanner took any integer; orjson refuses one past a double's range: the two
    decoders disagreed on such a message."""
    doc = b'{"event_id":"e","client_id":"c","ts":%d,"channel":"app","type":"x","n":1%s}'
    messages = [doc % (NOW, b"0" * 18), doc % (NOW, b"0" * 19), doc % (NOW, b"0" * 309)]
    scanned = Decoder(CATALOG, EngineSettings(decoder="scan"), now_ms=lambda: NOW)
    parsed = Decoder(CATALOG, EngineSettings(decoder="orjson"), now_ms=lambda: NOW)
    _same(scanned, parsed, messages)
    out = scanned(RawBatch("p", messages, 0))
    assert len(out.events) == 2 and [d.reason for d in out.dead] == ["not_json"]


def test_a_catalog_without_event_types() -> None:
    """Steps reached only by naming them: the type vocabulary is empty, and the fields
    looked up after it keep their own codes (the scanner read channels against a table
    shifted by one word, so every event was a dead letter)."""
    raw = {"journeys": [{"name": "loan", "steps": [
        {"name": "apply", "timeout": "10m"}, {"name": "done", "terminal": "success"},
    ]}]}  # fmt: skip
    catalog = parse_catalog(raw)
    doc = {"event_id": "e1", "client_id": "C1", "ts": NOW, "channel": "call", "type": "x",
           "journey": "loan", "step": "done", "attrs": {"segment": "senior"}}  # fmt: skip
    scanned = Decoder(catalog, EngineSettings(decoder="scan"), now_ms=lambda: NOW)
    parsed = Decoder(catalog, EngineSettings(decoder="orjson"), now_ms=lambda: NOW)
    _same(scanned, parsed, [orjson.dumps(doc)])
    events = scanned(RawBatch("p", [orjson.dumps(doc)], 0)).events
    assert (events.channel[0], events.journey[0]) == (1, 0)
    assert events.step[0] == catalog.step_name_codes["done"]
    assert SEGMENTS[events.segment[0]] == "senior"


def test_common_events_take_the_scan_path() -> None:
    doc = {"event_id": "e1", "client_id": "C1", "ts": NOW, "channel": "app",
           "type": "order_paid", "journey": "wealth_purchase", "session_id": None,
           "attrs": {"a": [1, {"b": True}], "c": "x", "segment": "senior"}}  # fmt: skip
    messages = [orjson.dumps(doc), json.dumps(doc, indent=2).encode()]
    lengths = np.array([len(m) for m in messages], dtype=np.int64)
    ends = np.cumsum(lengths)
    status, *_ = scan.scan_events(
        np.frombuffer(b"".join(messages), np.uint8), ends - lengths, ends, 64
    )
    assert status.tolist() == [scan.OK, scan.OK]
    decoded = Decoder(CATALOG, EngineSettings(decoder="scan"), now_ms=lambda: NOW)(
        RawBatch("p", messages)
    )
    assert decoded.events.segment.tolist() == [SEGMENTS.index("senior")] * 2


HEAD = f'{{"event_id":"e1","client_id":"C1","ts":{NOW},"channel":"app","type":"x"'


def test_client_id_of_only_spaces_falls_back() -> None:
    """The scanner leaves a client_id of spaces to the orjson path; spaces around or inside
    a client_id are fine. Control characters and other white space already fall back."""
    ids = ["   ", " ", " C1", "C 1", "C1 ", "C\x7f", "\u00a0", "\t"]
    messages = [HEAD.replace('"C1"', orjson.dumps(c).decode()).encode() + b"}" for c in ids]
    lengths = np.array([len(m) for m in messages], dtype=np.int64)
    ends = np.cumsum(lengths)
    buf = np.frombuffer(b"".join(messages), np.uint8)
    status, *_ = scan.scan_events(buf, ends - lengths, ends, 64)
    expected = [scan.FALLBACK] * 2 + [scan.OK] * 3 + [scan.FALLBACK] * 3
    assert status.tolist() == expected
    assert [t[0] for t in scan.scan_events_py(messages, 64)] == expected


def test_segment_spans_follow_orjson() -> None:
    """attrs.segment: a top-level string member of an attrs object; the last key wins."""
    cases = [
        ('"attrs":{"segment":"senior"}', "senior"),
        ('"attrs":{"device":"ios", "segment" : "car_owner" }', "car_owner"),
        ('"attrs":{"segment":"nobody"}', "nobody"),  # a string: the vocabulary decides
        ('"attrs":{"segment":""}', ""),
        ('"attrs":{"segment":5}', None),
        ('"attrs":{"segment":null}', None),
        ('"attrs":{"segment":["senior"]}', None),
        ('"attrs":{"segment":{"segment":"senior"}}', None),
        ('"attrs":{"x":{"segment":"senior"}}', None),  # nested: not the event's segment
        ('"attrs":{"x":[{"segment":"senior"}],"y":"senior"}', None),
        ('"attrs":{"segment":"senior","segment":7}', None),
        ('"attrs":{"segment":7,"segment":"senior"}', "senior"),
        ('"attrs":{"segment":"senior"},"attrs":{}', None),
        ('"attrs":{"segment":"senior"},"attrs":null', None),
        ('"attrs":{},"attrs":{"segment":"senior"}', "senior"),
        ('"attrs":null', None),
        ('"attrs":{}', None),
        ('"segment":"senior"', None),  # top level: not attrs
    ]
    messages = [(HEAD + "," + member + "}").encode() for member, _ in cases]
    lengths = np.array([len(m) for m in messages], dtype=np.int64)
    ends = np.cumsum(lengths)
    buf = np.frombuffer(b"".join(messages), np.uint8)
    status, _, span_start, span_len, *_ = scan.scan_events(buf, ends - lengths, ends, 64)
    twin = scan.scan_events_py(messages, 64)
    for k, (message, (_, expected)) in enumerate(zip(messages, cases, strict=True)):
        assert status[k] == scan.OK == twin[k][0], message
        start, length = span_start[scan.F_SEGMENT, k], span_len[scan.F_SEGMENT, k]
        got = None if length < 0 else bytes(buf[start : start + length]).decode()
        assert got == expected == twin[k][2][scan.F_SEGMENT], message
        attrs = orjson.loads(message).get("attrs") or {}
        segment = attrs.get("segment")
        assert (segment if isinstance(segment, str) else None) == expected, message


def test_attrs_other_than_an_object_or_null_falls_back() -> None:
    values = ['"senior"', "5", "true", "[]", '[{"segment":"senior"}]', '{"segment":"s\\u00e9"}']
    messages = [(HEAD + ',"attrs":' + v + "}").encode() for v in values]
    lengths = np.array([len(m) for m in messages], dtype=np.int64)
    ends = np.cumsum(lengths)
    buf = np.frombuffer(b"".join(messages), np.uint8)
    status, *_ = scan.scan_events(buf, ends - lengths, ends, 64)
    assert status.tolist() == [scan.FALLBACK] * len(values)
    assert [t[0] for t in scan.scan_events_py(messages, 64)] == [scan.FALLBACK] * len(values)


def test_nesting_limit_counts_the_top_level_object() -> None:
    """Scanner and twin agree at the depth limit (values nest MAX_DEPTH - 1 deep)."""
    depths = [scan.MAX_DEPTH - 2, scan.MAX_DEPTH - 1, scan.MAX_DEPTH]
    messages = [(HEAD + ',"a":' + "[" * d + "]" * d + "}").encode() for d in depths]
    messages += [(HEAD + ',"attrs":' + '{"a":' * d + "1" + "}" * d + "}").encode() for d in depths]
    lengths = np.array([len(m) for m in messages], dtype=np.int64)
    ends = np.cumsum(lengths)
    buf = np.frombuffer(b"".join(messages), np.uint8)
    status, *_ = scan.scan_events(buf, ends - lengths, ends, 64)
    expected = [scan.OK, scan.OK, scan.FALLBACK] * 2
    assert status.tolist() == expected
    assert [t[0] for t in scan.scan_events_py(messages, 64)] == expected


def test_mixed_nesting_closes_each_container_with_its_own_bracket() -> None:
    """Objects inside arrays inside objects: the right bracket closes each level, a wrong
    one falls back, at shallow depths and near the limit (where the level bits run out)."""
    deep = scan.MAX_DEPTH // 2 - 1
    good = ['[{"b":[{"c":1},[]]}]', "[" * 3 + "{}" + "]" * 3, '[{"a":' * deep + "1" + "}]" * deep]
    bad = ['[{"b":[{"c":1},[]}]}', "[{]}", '[{"a":' * deep + "1" + "]}" * deep]
    messages = [(HEAD + ',"a":' + v + "}").encode() for v in good + bad]
    lengths = np.array([len(m) for m in messages], dtype=np.int64)
    ends = np.cumsum(lengths)
    buf = np.frombuffer(b"".join(messages), np.uint8)
    status, *_ = scan.scan_events(buf, ends - lengths, ends, 64)
    expected = [scan.OK] * len(good) + [scan.FALLBACK] * len(bad)
    assert status.tolist() == expected
    assert [t[0] for t in scan.scan_events_py(messages, 64)] == expected


def test_both_decoders_keep_input_order_of_dead_letters_and_of_an_envelopes_events() -> None:
    """Dead letters come out in offset order whichever check found them (the orjson path
    listed a chunk's missing fields before its absurd times); the events of one envelope,
    which share its offset, keep their order when the scanner takes some and orjson the
    others (they were ordered by offset, so by path)."""
    scanned = Decoder(CATALOG, EngineSettings(decoder="scan"), now_ms=lambda: NOW)
    plain = Decoder(CATALOG, EngineSettings(decoder="orjson"), now_ms=lambda: NOW)
    absurd = HEAD.replace(f'"ts":{NOW}', '"ts":5').encode() + b"}"
    no_type = f'{{"event_id":"e2","client_id":"C1","ts":{NOW},"channel":"app"}}'.encode()
    good = HEAD.encode() + b"}"
    _same(scanned, plain, [absurd, no_type, good])
    batch = plain(RawBatch("p", [absurd, no_type, good], 100))
    assert [(d.offset, d.reason) for d in batch.dead] == [
        (100, "absurd_ts"),
        (101, "missing_field"),
    ]
    escaped = HEAD.replace('"e1"', '"e\\u002d0"').encode() + b"}"  # orjson's path
    second = HEAD.replace('"e1"', '"e2"').encode() + b"}"  # the scanner's
    _same(scanned, plain, [escaped, second], offsets=[42, 42])
    events = scanned(RawBatch("p", [escaped, second], offsets=[42, 42])).events
    assert list(events.raw) == [escaped, second]


def test_dead_letters_of_one_envelope_keep_input_order_whichever_check_finds_them() -> None:
    """Messages of one envelope share its offset: their dead letters come out in input
    order, not grouped by the check that found them (the scan path listed value rules
    first, the orjson path parse failures first)."""
    scanned = Decoder(CATALOG, EngineSettings(decoder="scan"), now_ms=lambda: NOW)
    plain = Decoder(CATALOG, EngineSettings(decoder="orjson"), now_ms=lambda: NOW)
    absurd = HEAD.replace(f'"ts":{NOW}', '"ts":0').encode() + b"}"
    bad_channel = HEAD.replace('"channel":"app"', '"channel":"fax"').encode() + b"}"
    for messages in ([absurd, b"0"], [b"0", absurd], [bad_channel, absurd, b"x"]):
        _same(scanned, plain, messages, offsets=[7] * len(messages))
        for decoder in (scanned, plain):
            dead = decoder(RawBatch("p", messages, offsets=[7] * len(messages))).dead
            assert [d.raw for d in dead] == messages


def test_client_id_column_is_as_wide_as_its_longest_kept_id() -> None:
    """A message dead-lettered by a value rule does not leave its longer client id's width
    on the column (the width depended on how the messages fell between the two paths)."""
    scanned = Decoder(CATALOG, EngineSettings(decoder="scan"), now_ms=lambda: NOW)
    plain = Decoder(CATALOG, EngineSettings(decoder="orjson"), now_ms=lambda: NOW)
    short = HEAD.replace('"C1"', '"C2"').encode() + b"}"
    long_bad = (
        HEAD.replace('"e1"', '"e\\u0032"')  # an escape: the orjson path
        .replace('"C1"', '"C0123456789"')
        .replace('"channel":"app"', '"channel":"fax"')
        .encode()
        + b"}"
    )
    for messages in ([short, long_bad], [long_bad, short]):
        _same(scanned, plain, messages)
        for decoder in (scanned, plain):
            events = decoder(RawBatch("p", messages, 100)).events
            assert events.client_id.dtype == np.dtype("S2")
