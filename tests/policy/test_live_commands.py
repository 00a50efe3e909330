"""The numba builder of live-state EVALSHA calls agrees with its plain-Python twin."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.live_commands import CLOSED, write_calls, write_commands_py

NAMES = [b"open_account", b"loan", "\u7406\u8d22".encode(), b"x"]
SHA = "0123456789abcdef0123456789abcdef01234567"
ids = st.text(st.characters(blacklist_characters="\x00", codec="utf-8"), min_size=1, max_size=9)
values = st.one_of(st.none(), st.binary(max_size=40))
client_rows = st.dictionaries(st.integers(0, len(NAMES) - 1), values, min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(ids, client_rows, min_size=1, max_size=12),
    st.integers(1, 5),
    st.integers(1, 10**9),
)
def test_kernel_calls_equal_the_twins(
    clients: dict[str, dict[int, bytes | None]], chunk: int, ttl_s: int
) -> None:
    rows = [(c, j, v) for c, fields in clients.items() for j, v in fields.items()]
    buf = b"".join(v for _, _, v in rows if v is not None)
    lengths = [CLOSED if v is None else len(v) for _, _, v in rows]
    starts = np.cumsum([0] + [max(n, 0) for n in lengths])[:-1]
    calls, count = write_calls(
        SHA, ttl_s, b"ato:journey:", np.array([c.encode() for c, _, _ in rows], np.bytes_),
        np.array([j for _, j, _ in rows]), NAMES, np.frombuffer(buf or b"\0", np.uint8),
        starts, np.array(lengths), chunk,
    )  # fmt: skip
    twin = [
        (c.encode(), [(NAMES[j], v) for j, v in fields.items()]) for c, fields in clients.items()
    ]
    assert count == len(clients)
    assert calls == write_commands_py(SHA, ttl_s, b"ato:journey:", twin, chunk)


def test_one_call_in_the_protocol() -> None:
    calls = write_commands_py(SHA, 60, b"k:", [(b"C1", [(b"a", b"{}"), (b"b", None)])], 10)
    assert calls == [
        b"*10\r\n$7\r\nEVALSHA\r\n$40\r\n" + SHA.encode() + b"\r\n$1\r\n0\r\n$2\r\n60\r\n"
        b"$4\r\nk:C1\r\n$1\r\n1\r\n$1\r\n1\r\n$1\r\na\r\n$2\r\n{}\r\n$1\r\nb\r\n"
    ]
    assert write_calls(
        SHA, 60, b"k:", np.array([], np.bytes_), np.array([], np.int64), [b"a"],
        np.zeros(1, np.uint8), np.array([], np.int64), np.array([], np.int64), 10,
    ) == ([], 0)  # fmt: skip
