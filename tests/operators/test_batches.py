"""What dead letters and late events carry of the original bytes."""

import base64
import hashlib

from operators.batches import RAW_KEPT_BYTES, DeadLetter, raw_fields


def test_a_dead_letter_keeps_a_message_whole_up_to_the_limit() -> None:
    raw = b"x" * RAW_KEPT_BYTES
    doc = DeadLetter("oversized", "too long", raw, "in#0", 7).to_doc()
    assert base64.b64decode(doc["raw_b64"]) == raw and "raw_truncated" not in doc


def test_a_longer_message_is_cut_and_named_by_length_and_digest() -> None:
    raw = bytes(range(256)) * 1_000
    fields = raw_fields(raw)
    assert base64.b64decode(fields["raw_b64"]) == raw[:RAW_KEPT_BYTES]
    assert fields["raw_truncated"] is True and fields["raw_bytes"] == len(raw)
    assert fields["raw_sha256"] == hashlib.sha256(raw).hexdigest()
