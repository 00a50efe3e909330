"""JSON lines from columns after a fixed template, rendered by a numba kernel.

A :class:`Template` is a sequence of literal JSON text and typed holes. Each row of the input
columns becomes one line: the literals with the holes filled from that row, then a newline.
Hole kinds:

* ``INT``: ``ints[index, row]`` as a decimal integer;
* ``FIXED4``: ``fixed[index, row]``, a count of 1/10,000ths, as the shortest decimal with at
  most four fraction digits and at least one (``12500`` -> ``1.25``, ``0`` -> ``0.0``): what
  ``orjson`` writes for that count / 10,000 below 10**15 (the caller rounds with ``np.rint``
  of ``value * 1e4``, halves to even, where ``round(value, 4)`` may differ at a tie);
* ``TEXT``: piece ``codes[index, row]`` of a vocabulary of pre-encoded JSON values;
* ``SPAN``: bytes ``span_buf[start : start + length]`` of the row (per-row JSON values,
  such as escaped strings).

``render_rows_py`` is the plain-Python twin of ``render_rows``, and ``json_string_spans_py``
of ``json_string_spans``.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from ato.threads import in_halves

LITERAL = -1  # a template part with no hole (only its literal)
INT = 0
FIXED4 = 1
TEXT = 2
SPAN = 3

_MAX_INT_DIGITS = 20  # '-' and 19 digits of an int64
_NEWLINE = 10
_QUOTE = 34
_BACKSLASH = 92


@dataclass(frozen=True)
class Template:
    """Literal text and holes, compiled into the arrays the kernel reads."""

    literals: np.ndarray  # uint8: every part's literal, concatenated
    lit_start: np.ndarray  # int64 [parts]
    lit_len: np.ndarray  # int64 [parts]
    kinds: np.ndarray  # int64 [parts]: LITERAL, INT, FIXED4, TEXT or SPAN
    index: np.ndarray  # int64 [parts]: row of ints / fixed / codes / spans the hole reads

    @staticmethod
    def compile(parts: Sequence[str | tuple[int, int]]) -> "Template":
        """From literal strings and ``(kind, index)`` holes, in order."""
        literal: list[bytes] = []
        kinds: list[int] = []
        index: list[int] = []
        pending = b""
        for part in parts:
            if isinstance(part, str):
                pending += part.encode()
                continue
            literal.append(pending)
            kinds.append(part[0])
            index.append(part[1])
            pending = b""
        literal.append(pending)
        kinds.append(LITERAL)
        index.append(0)
        lengths = np.array([len(b) for b in literal], np.int64)
        return Template(
            np.frombuffer(b"".join(literal), np.uint8).copy(),
            np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
            lengths,
            np.array(kinds, np.int64),
            np.array(index, np.int64),
        )

    def max_line(self, vocabulary: "Vocabulary") -> int:
        """Bytes one line can take, not counting its SPAN holes."""
        widest = {INT: _MAX_INT_DIGITS, FIXED4: _MAX_INT_DIGITS + 2, TEXT: vocabulary.widest()}
        holes = sum(widest.get(int(k), 0) for k in self.kinds)
        return int(self.lit_len.sum()) + holes + 1


@dataclass(frozen=True)
class Vocabulary:
    """Pre-encoded JSON values, addressed by code."""

    buf: np.ndarray  # uint8
    start: np.ndarray  # int64 [codes]
    length: np.ndarray  # int64 [codes]

    @staticmethod
    def of(values: Sequence[bytes]) -> "Vocabulary":
        """Code ``i`` renders as ``values[i]`` (already JSON)."""
        lengths = np.array([len(v) for v in values], np.int64)
        return Vocabulary(
            np.frombuffer(b"".join(values), np.uint8).copy(),
            np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
            lengths,
        )

    def widest(self) -> int:
        """Length of the longest value."""
        return int(self.length.max()) if len(self.length) else 0


@njit(cache=True, nogil=True)
def _write_uint(out: np.ndarray, pos: int, value: np.uint64, min_digits: int) -> int:
    n = 1
    rest = value // np.uint64(10)
    while rest > 0:
        n += 1
        rest = rest // np.uint64(10)
    n = max(n, min_digits)
    for k in range(n - 1, -1, -1):
        out[pos + k] = 48 + np.uint8(value % np.uint64(10))
        value = value // np.uint64(10)
    return pos + n


@njit(cache=True, nogil=True)
def _magnitude(value: np.int64) -> np.uint64:
    if value >= 0:
        return np.uint64(value)
    return np.uint64(-(value + 1)) + np.uint64(1)


@njit(cache=True, nogil=True)
def _write_int(out: np.ndarray, pos: int, value: np.int64) -> int:
    if value < 0:
        out[pos] = 45  # '-'
        pos += 1
    return _write_uint(out, pos, _magnitude(value), 1)


@njit(cache=True, nogil=True)
def _write_fixed4(out: np.ndarray, pos: int, value: np.int64) -> int:
    if value < 0:
        out[pos] = 45
        pos += 1
    magnitude = _magnitude(value)
    pos = _write_uint(out, pos, magnitude // np.uint64(10_000), 1)
    out[pos] = 46  # '.'
    pos += 1
    fraction = magnitude % np.uint64(10_000)
    width = 4
    while width > 1 and fraction % np.uint64(10) == 0:
        fraction = fraction // np.uint64(10)
        width -= 1
    return _write_uint(out, pos, fraction, width)


@njit(cache=True, nogil=True)
def render_rows(
    order: np.ndarray,
    literals: np.ndarray,
    lit_start: np.ndarray,
    lit_len: np.ndarray,
    kinds: np.ndarray,
    index: np.ndarray,
    ints: np.ndarray,
    fixed: np.ndarray,
    codes: np.ndarray,
    vocab_buf: np.ndarray,
    vocab_start: np.ndarray,
    vocab_len: np.ndarray,
    span_buf: np.ndarray,
    span_start: np.ndarray,
    span_len: np.ndarray,
    out: np.ndarray,
    ends: np.ndarray,
) -> int:
    """Write rows ``order[0], order[1], ...`` as lines into ``out``; return bytes written.

    ``ends[i]`` gets the end (after the newline) of the i-th line. ``out`` must be large
    enough (see :meth:`Template.max_line`).
    """
    pos = 0
    for i in range(len(order)):
        row = order[i]
        for p in range(len(kinds)):
            start = lit_start[p]
            n = lit_len[p]
            out[pos : pos + n] = literals[start : start + n]
            pos += n
            kind = kinds[p]
            if kind == INT:
                pos = _write_int(out, pos, ints[index[p], row])
            elif kind == FIXED4:
                pos = _write_fixed4(out, pos, fixed[index[p], row])
            elif kind == TEXT:
                code = codes[index[p], row]
                start = vocab_start[code]
                n = vocab_len[code]
                out[pos : pos + n] = vocab_buf[start : start + n]
                pos += n
            elif kind == SPAN:
                start = span_start[index[p], row]
                n = span_len[index[p], row]
                out[pos : pos + n] = span_buf[start : start + n]
                pos += n
        out[pos] = _NEWLINE
        pos += 1
        ends[i] = pos
    return pos


@njit(cache=True, nogil=True)
def json_string_spans(buf: np.ndarray, start: np.ndarray, length: np.ndarray) -> int:
    """Spans of the strings in ``buf``, a JSON array of strings; return how many were found.

    Each span includes the quotes (and any escapes), ready to copy into a document.
    """
    n = 0
    i = 0
    end = len(buf)
    while i < end:
        if buf[i] == _QUOTE:
            first = i
            i += 1
            while buf[i] != _QUOTE:
                i += 2 if buf[i] == _BACKSLASH else 1
            start[n] = first
            length[n] = i + 1 - first
            n += 1
        i += 1
    return n


def render(
    template: Template,
    vocabulary: Vocabulary,
    order: np.ndarray,
    ints: np.ndarray,
    fixed: np.ndarray,
    codes: np.ndarray,
    span_buf: np.ndarray,
    span_start: np.ndarray,
    span_len: np.ndarray,
) -> tuple[bytes, np.ndarray]:
    """Lines of the rows in ``order``, and the end offset of each line."""
    widest = template.max_line(vocabulary)
    ends = np.empty(len(order), np.int64)

    def rows(a: int, b: int) -> bytes:
        """Lines of ``order[a:b]``; their ends, counted from the first, into ``ends[a:b]``."""
        room = (b - a) * widest + int(span_len[:, order[a:b]].sum())
        out = np.empty(room, np.uint8)
        used = render_rows(
            order[a:b], template.literals, template.lit_start, template.lit_len,
            template.kinds, template.index, ints, fixed, codes, vocabulary.buf,
            vocabulary.start, vocabulary.length, span_buf, span_start, span_len, out,
            ends[a:b],
        )  # fmt: skip
        return out[:used].tobytes()

    parts = in_halves(len(order), rows)
    if len(parts) == 2:
        ends[len(order) // 2 :] += len(parts[0])
    return b"".join(parts), ends


# ---------------------------------------------------------------- plain-Python twins


def _fixed4_py(value: int) -> str:
    sign = "-" if value < 0 else ""
    whole, fraction = divmod(abs(value), 10_000)
    digits = f"{fraction:04d}".rstrip("0") or "0"
    return f"{sign}{whole}.{digits}"


def render_rows_py(
    template: Template,
    vocabulary: Vocabulary,
    order: np.ndarray,
    ints: np.ndarray,
    fixed: np.ndarray,
    codes: np.ndarray,
    span_buf: np.ndarray,
    span_start: np.ndarray,
    span_len: np.ndarray,
) -> tuple[bytes, list[int]]:
    """Twin of :func:`render` (and so of ``render_rows``)."""
    raw = template.literals.tobytes()
    pieces = [raw[s : s + n] for s, n in zip(template.lit_start, template.lit_len, strict=True)]
    words = [
        vocabulary.buf[s : s + n].tobytes()
        for s, n in zip(vocabulary.start, vocabulary.length, strict=True)
    ]
    spans = span_buf.tobytes()
    out = bytearray()
    ends = []
    for row in order.tolist():
        for piece, kind, k in zip(pieces, template.kinds, template.index, strict=True):
            out += piece
            if kind == INT:
                out += str(int(ints[k, row])).encode()
            elif kind == FIXED4:
                out += _fixed4_py(int(fixed[k, row])).encode()
            elif kind == TEXT:
                out += words[codes[k, row]]
            elif kind == SPAN:
                s = int(span_start[k, row])
                out += spans[s : s + int(span_len[k, row])]
        out += b"\n"
        ends.append(len(out))
    return bytes(out), ends


def json_string_spans_py(text: bytes) -> list[tuple[int, int]]:
    """Twin of ``json_string_spans``: (start, length) of each string, quotes included."""
    spans = []
    i = 0
    while i < len(text):
        if text[i] == _QUOTE:
            first = i
            i += 1
            while text[i] != _QUOTE:
                i += 2 if text[i] == _BACKSLASH else 1
            spans.append((first, i + 1 - first))
        i += 1
    return spans
