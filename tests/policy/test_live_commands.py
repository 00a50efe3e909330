"""The numba builder of live-state commands agrees with its plain-Python twin."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.live_commands import CLOSED, commands_of_rows, write_commands_py

NAMES = [b"open_account", b"loan", "\u7406\u8d22".encode(), b"x"]
ids = st.text(st.characters(blacklist_characters="\x00", codec="utf-8"), min_size=1, max_size=9)
values = st.one_of(st.none(), st.binary(max_size=40))
client_rows = st.dictionaries(st.integers(0, len(NAMES) - 1), values, min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(ids, client_rows, min_size=1, max_size=12),
    st.integers(1, 10**9),
)
def test_kernel_commands_equal_the_twins(
    clients: dict[str, dict[int, bytes | None]], ttl_s: int
) -> None:
    rows = [(c, j, v) for c, fields in clients.items() for j, v in fields.items()]
    buf = b"".join(v for _, _, v in rows if v is not None)
    lengths = [CLOSED if v is None else len(v) for _, _, v in rows]
    starts = np.cumsum([0] + [max(n, 0) for n in lengths])[:-1]
    commands, count, clients_written = commands_of_rows(
        ttl_s, b"ato:journey:", np.array([c.encode() for c, _, _ in rows], np.bytes_),
        np.array([j for _, j, _ in rows]), NAMES, np.frombuffer(buf or b"\0", np.uint8),
        starts, np.array(lengths),
    )  # fmt: skip
    twin = [
        (c.encode(), [(NAMES[j], v) for j, v in fields.items()]) for c, fields in clients.items()
    ]
    assert clients_written == len(clients)
    assert (commands, count) == write_commands_py(ttl_s, b"ato:journey:", twin)


def test_one_client_in_the_protocol() -> None:
    commands = write_commands_py(60, b"k:", [(b"C1", [(b"a", b"{}"), (b"b", None)])])
    assert commands == (
        b"*4\r\n$4\r\nHSET\r\n$4\r\nk:C1\r\n$1\r\na\r\n$2\r\n{}\r\n"
        b"*3\r\n$4\r\nHDEL\r\n$4\r\nk:C1\r\n$1\r\nb\r\n"
        b"*3\r\n$6\r\nEXPIRE\r\n$4\r\nk:C1\r\n$2\r\n60\r\n",
        3,
    )
    assert write_commands_py(60, b"k:", [(b"C2", [(b"b", None)])]) == (
        b"*3\r\n$4\r\nHDEL\r\n$4\r\nk:C2\r\n$1\r\nb\r\n",
        1,
    )  # removals only: no EXPIRE (an HDEL never creates the key)
    assert commands_of_rows(
        60, b"k:", np.array([], np.bytes_), np.array([], np.int64), [b"a"],
        np.zeros(1, np.uint8), np.array([], np.int64), np.array([], np.int64),
    ) == (b"", 0, 0)  # fmt: skip
