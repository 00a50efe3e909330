"""The JSON-lines renderer: kernels equal their twins, and the output is the JSON orjson writes."""

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from ato.threads import SPLIT_MIN_ROWS
from operators.render import (
    FIXED4,
    INT,
    SPAN,
    TEXT,
    Template,
    Vocabulary,
    json_string_spans,
    json_string_spans_py,
    render,
    render_rows_py,
)

TEMPLATE = Template.compile(
    ['{"a":', (INT, 0), ',"b":', (FIXED4, 0), ',"c":', (TEXT, 0), ',"d":[', (SPAN, 0), ",",
     (INT, 1), "]}"]
)  # fmt: skip
WORDS = ["x", "", 'quote"back\\slash', "ünïcødé", "tab\tnew\nline"]
VOCABULARY = Vocabulary.of([orjson.dumps(w) for w in WORDS])
INT64 = st.integers(-(2**63), 2**63 - 1)
FIXED = st.integers(0, 10**15)


def _spans(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    buf = np.frombuffer(orjson.dumps(texts), np.uint8)
    start = np.zeros((1, len(texts)), np.int64)
    length = np.zeros((1, len(texts)), np.int64)
    assert json_string_spans(buf, start[0], length[0]) == len(texts)
    return buf, start, length


rows = st.lists(
    st.tuples(INT64, INT64, FIXED, st.integers(0, len(WORDS) - 1), st.text(max_size=12)),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(rows, st.randoms(use_true_random=False))
def test_render_equals_twin_and_orjson(items: list[tuple], rnd) -> None:
    """Kernel and twin write the same bytes; each line is what orjson makes of the row."""
    a, i1, f, c, text = (list(col) for col in zip(*items, strict=True))
    ints = np.array([a, i1], np.int64)
    fixed = np.array([f], np.int64)
    codes = np.array([c], np.int64)
    buf, start, length = _spans(text)
    order = np.arange(len(items))
    rnd.shuffle(order)
    lines, ends = render(TEMPLATE, VOCABULARY, order, ints, fixed, codes, buf, start, length)
    twin_lines, twin_ends = render_rows_py(
        TEMPLATE, VOCABULARY, order, ints, fixed, codes, buf, start, length
    )
    assert lines == twin_lines
    assert ends.tolist() == twin_ends
    expected = b"".join(
        orjson.dumps(
            {"a": a[r], "b": round(f[r] / 10_000, 4), "c": WORDS[c[r]], "d": [text[r], i1[r]]},
            option=orjson.OPT_APPEND_NEWLINE,
        )
        for r in order.tolist()
    )
    assert lines == expected


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(), max_size=20))
def test_json_string_spans_equal_twin(texts: list[str]) -> None:
    """Both find each string of a JSON array, quotes and escapes included."""
    raw = orjson.dumps(texts)
    buf, start, length = _spans(texts)
    assert list(zip(start[0].tolist(), length[0].tolist(), strict=True)) == json_string_spans_py(
        raw
    )
    assert [orjson.loads(raw[s : s + n]) for s, n in json_string_spans_py(raw)] == texts


def test_fixed4_boundaries() -> None:
    """Zero, exact tenths, the smallest step, and trailing zeros are written as orjson would."""
    values = [0, 1, 10, 100, 1_000, 10_000, 12_500, 99_999, 123_456_789, 10**15]
    fixed = np.array([values], np.int64)
    ints = np.zeros((2, len(values)), np.int64)
    codes = np.zeros((1, len(values)), np.int64)
    buf, start, length = _spans([""] * len(values))
    lines, _ = render(
        TEMPLATE, VOCABULARY, np.arange(len(values)), ints, fixed, codes, buf, start, length
    )
    got = [orjson.loads(line)["b"] for line in lines.splitlines()]
    assert [orjson.dumps(g) for g in got] == [orjson.dumps(round(v / 10_000, 4)) for v in values]
    assert b'"b":0.0001,' in lines and b'"b":0.0,' in lines and b'"b":1.25,' in lines


def test_a_large_render_in_two_halves_equals_twin() -> None:
    """At SPLIT_MIN_ROWS rows and more, two threads render a half each: the same bytes and
    line ends as the twin, in one block."""
    rng = np.random.default_rng(3)
    n = SPLIT_MIN_ROWS * 2 + 1
    ints = rng.integers(-(2**40), 2**40, (2, n))
    fixed = rng.integers(0, 10**9, (1, n))
    codes = rng.integers(0, len(WORDS), (1, n))
    buf, start, length = _spans([f"t{k}" * int(k % 7) for k in range(n)])
    order = rng.permutation(n)
    lines, ends = render(TEMPLATE, VOCABULARY, order, ints, fixed, codes, buf, start, length)
    twin_lines, twin_ends = render_rows_py(
        TEMPLATE, VOCABULARY, order, ints, fixed, codes, buf, start, length
    )
    assert lines == twin_lines
    assert ends.tolist() == twin_ends
