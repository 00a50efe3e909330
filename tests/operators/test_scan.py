"""The numba scanner agrees with its twin, and the scan decoder with the orjson decoder."""

import json

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from ato.catalog import load_catalog
from ato.config import EngineSettings
from operators import scan
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
event = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.one_of(text, scalar),
        "client_id": st.one_of(st.sampled_from(["C1", "C2", "Ç3"]), scalar),
        "ts": st.one_of(st.integers(NOW - 10**9, NOW), scalar),
        "channel": st.one_of(st.sampled_from(["app", "call", "branch", "ai"]), scalar),
        "type": st.one_of(st.sampled_from(CATALOG.type_names), scalar),
        "journey": st.one_of(st.sampled_from([j.name for j in CATALOG.journeys]), scalar),
        "step": st.one_of(st.sampled_from(["confirm", "start", "otp"]), scalar),
        "session_id": scalar,
        "attrs": json_value,
    },
)


@st.composite
def message(draw: st.DrawFn) -> bytes:
    doc = draw(st.one_of(event, json_value))
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


@settings(max_examples=300, deadline=None)
@given(st.lists(message(), min_size=1, max_size=12))
def test_scan_matches_its_twin(messages: list[bytes]) -> None:
    lengths = np.array([len(m) for m in messages], dtype=np.int64)
    ends = np.cumsum(lengths)
    buf = np.frombuffer(b"".join(messages) or b" ", dtype=np.uint8)
    status, ts, span_start, span_len, hashes = scan.scan_events(buf, ends - lengths, ends, 64)
    for i, (t_status, t_ts, t_spans, t_hash) in enumerate(scan.scan_events_py(messages, 64)):
        assert status[i] == t_status, messages[i]
        if t_status == scan.OK:
            assert ts[i] == t_ts and hashes[i] == t_hash
            for field, value in t_spans.items():
                start, length = span_start[field, i], span_len[field, i]
                got = None if length < 0 else bytes(buf[start : start + length]).decode()
                assert got == value, (messages[i], field)


def _same(a: Decoder, b: Decoder, messages: list[bytes]) -> None:
    x = a(RawBatch("p", messages, 100))
    y = b(RawBatch("p", messages, 100))
    for name in ("client_key", "client_id", "ts", "channel", "type_code", "journey", "step",
                 "flags", "offset"):  # fmt: skip
        assert np.array_equal(getattr(x.events, name), getattr(y.events, name)), name
    assert list(x.events.raw) == list(y.events.raw)
    assert [(d.reason, d.detail, d.raw, d.offset) for d in x.dead] == [
        (d.reason, d.detail, d.raw, d.offset) for d in y.dead
    ]
    assert x.max_ts == y.max_ts


@settings(max_examples=300, deadline=None)
@given(st.lists(message(), min_size=1, max_size=12))
def test_scan_decoder_equals_orjson_decoder(messages: list[bytes]) -> None:
    """Whatever the input, both decoders give the same events and dead letters."""
    scanned = Decoder(CATALOG, EngineSettings(decoder="scan"), now_ms=lambda: NOW)
    parsed = Decoder(CATALOG, EngineSettings(decoder="orjson"), now_ms=lambda: NOW)
    _same(scanned, parsed, messages)


def test_common_events_take_the_scan_path() -> None:
    doc = {"event_id": "e1", "client_id": "C1", "ts": NOW, "channel": "app",
           "type": "order_paid", "journey": "wealth_purchase", "session_id": None,
           "attrs": {"a": [1, {"b": True}], "c": "x"}}  # fmt: skip
    messages = [orjson.dumps(doc), json.dumps(doc, indent=2).encode()]
    lengths = np.array([len(m) for m in messages], dtype=np.int64)
    ends = np.cumsum(lengths)
    status, *_ = scan.scan_events(
        np.frombuffer(b"".join(messages), np.uint8), ends - lengths, ends, 64
    )
    assert status.tolist() == [scan.OK, scan.OK]
