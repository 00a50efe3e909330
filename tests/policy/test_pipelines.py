"""Plain-command pipelines read straight from the socket: replies, error replies, failures."""

import pytest
import redis

from policy import pipelines
from policy.connection import is_transient
from policy.pipelines import PendingReplies, bulk, reply_error, send_counting_replies


def command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(bulk(a) for a in args)


def test_replies_are_parsed_in_order_across_many_socket_reads(r: redis.Redis) -> None:
    r.hset("h", mapping={"a": "1", "b": "2"})
    commands = b"".join(command(b"HGETALL", b"h") for _ in range(20_000))
    replies = PendingReplies(r, commands + command(b"GET", b"absent"), 20_001).read()
    assert len(replies) == 20_001 and replies[-1] is None
    first = replies[0]  # a map on RESP3 (redis-py's default), a flat list on RESP2
    fields = first if isinstance(first, dict) else dict(zip(first[::2], first[1::2], strict=True))
    assert fields == {b"a": b"1", b"b": b"2"}


def test_an_error_reply_is_raised_after_every_reply_and_the_connection_stays_usable(
    r: redis.Redis,
) -> None:
    r.set("s", "x")
    commands = command(b"HGETALL", b"s") + command(b"SET", b"after", b"1")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        PendingReplies(r, commands, 2).read()
    assert r.get("after") == b"1"  # the command after the error ran
    assert PendingReplies(r, command(b"GET", b"after"), 1).read() == [b"1"]
    assert send_counting_replies(r, command(b"DEL", b"after"), 1) == ""
    got = PendingReplies(r, command(b"HGETALL", b"s") + command(b"GET", b"s"), 2).read(False)
    assert isinstance(got[0], redis.ResponseError) and "WRONGTYPE" in str(got[0])
    assert got[1] == b"x"  # with raise_errors False, errors come back in their place


def test_an_unreachable_server_is_a_connection_error() -> None:
    broken = redis.Redis(port=1, socket_connect_timeout=0.2)
    with pytest.raises(redis.ConnectionError):
        PendingReplies(broken, command(b"PING"), 1)


def test_pending_replies_are_read_later_once_or_dropped(r: redis.Redis) -> None:
    r.set("k", "v")
    pending = PendingReplies(r, command(b"GET", b"k") + command(b"INCR", b"n"), 2)
    assert r.get("k") == b"v"  # the client's other connections serve meanwhile
    assert pending.read() == [b"v", 1]
    with pytest.raises(RuntimeError, match="already read"):
        pending.read()
    dropped = PendingReplies(r, command(b"INCR", b"n"), 1)
    dropped.drop()
    dropped.drop()  # twice is harmless
    assert int(r.get("n") or 0) in (1, 2)  # sent: it may have run before the close
    assert PendingReplies(r, command(b"PING"), 1).read() == [b"PONG"]  # the pool still serves


@pytest.mark.parametrize(
    ("reply", "kind", "transient"),
    [
        ("LOADING Redis is loading the dataset in memory", redis.BusyLoadingError, True),
        ("BUSY Redis is busy running a script.", redis.ResponseError, True),
        ("TRYAGAIN Multiple keys request during rehashing", redis.ResponseError, True),
        ("MASTERDOWN Link with MASTER is down", redis.RedisError, True),
        ("READONLY You can't write against a read only replica.", redis.ResponseError, True),
        ("NOPERM this user has no permissions", redis.exceptions.NoPermissionError, False),
        ("NOSCRIPT No matching script.", redis.exceptions.NoScriptError, False),
        ("WRONGTYPE Operation against a key holding the wrong kind", redis.ResponseError, False),
        ("ERR unknown command", redis.ResponseError, False),
        ("OOM command not allowed when used memory > 'maxmemory'.", redis.ResponseError, False),
    ],
)
def test_error_replies_get_redis_py_classes_and_passing_states_are_transient(
    reply: str, kind: type[Exception], transient: bool
) -> None:
    """A Redis loading its data, busy with a script or failing over is an outage (the
    decisions wait), not a fatal error; redis-py's own calls raise the same classes."""
    error = reply_error(reply)
    assert isinstance(error, kind)
    assert is_transient(error) is transient


def test_a_denied_command_raises_its_class_from_a_pipeline(r: redis.Redis) -> None:
    r.acl_setuser("no-get", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-get"])
    kwargs = r.connection_pool.connection_kwargs
    limited = redis.Redis(
        host=kwargs["host"], port=kwargs["port"], username="no-get", password="pw"
    )
    try:
        commands = command(b"GET", b"k") + command(b"SET", b"after-denied", b"1")
        with pytest.raises(redis.exceptions.NoPermissionError):
            PendingReplies(limited, commands, 2).read()
        replies = PendingReplies(limited, commands, 2).read(raise_errors=False)
        assert isinstance(replies[0], redis.exceptions.NoPermissionError) and replies[1] == b"OK"
    finally:
        limited.close()
        r.acl_deluser("no-get")


def test_replies_are_counted_whatever_bytes_each_socket_read_brings(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read may end between a reply's "\\r" and its "\\n"; the line still counts (it was
    missed, and the writer waited for a reply that had come until the socket timed out)."""
    real = pipelines._receive
    pending: list[bytes] = []

    def byte_by_byte(sock: object) -> bytes:
        if not pending:
            pending.extend(bytes([b]) for b in real(sock))  # type: ignore[arg-type]
        return pending.pop(0)

    monkeypatch.setattr(pipelines, "_receive", byte_by_byte)
    commands = b"".join(command(b"INCR", b"k") for _ in range(12))
    assert send_counting_replies(r, commands, 12) == ""
    assert r.get("k") == b"12" and not pending
