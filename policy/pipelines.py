"""Pipelines of plain Redis commands on redis-py's pooled connections, their replies read
straight from the socket.

redis-py's own pipeline costs a few microseconds of Python per command (packing, a parser
call, response callbacks), more than Redis spends on a simple command; and a Lua script
that loops over many keys to save those calls costs Redis several times the commands
themselves (reading 100 k profile hashes: 1.1 s of Redis CPU through a script, 0.2 s as
plain commands). So the flow writes the commands' protocol bytes itself, sends
them in one piece on a pooled connection and reads the replies from its socket (redis-py's
``_sock``): counted as bytes when every reply is one line
(:func:`send_counting_replies`), or parsed by hiredis (:class:`PendingReplies`, read later
while the connection waits outside the pool).
Errors are redis-py's: ``ConnectionError``/``TimeoutError`` (the connection is then
dropped), or for an error reply the class redis-py itself gives it (:func:`reply_error`:
``LOADING`` is a ``BusyLoadingError``, a ``ConnectionError``; ``NOPERM`` a
``NoPermissionError``; other codes a ``ResponseError``).
"""

import socket
from collections.abc import Callable
from typing import Any, TypeVar

import hiredis
import redis
from redis._parsers.base import BaseParser  # redis-py's map of error codes (redis pinned)

T = TypeVar("T")


def bulk(data: bytes) -> bytes:
    """``data`` as a bulk string of the Redis protocol."""
    return b"$%d\r\n%s\r\n" % (len(data), data)


def reply_error(text: str) -> redis.RedisError:
    """The exception redis-py raises for the error reply ``text`` (``"LOADING ..."`` ->
    ``BusyLoadingError``), so callers tell a Redis that is loading or failing over from a
    real error as they do for redis-py's own calls."""
    error: redis.RedisError = BaseParser.parse_error(text)
    return error


def send_counting_replies(client: "redis.Redis", commands: bytes, count: int) -> str:
    """Send ``commands`` (protocol bytes of ``count`` commands whose replies are one line
    each: integers or errors) on one of ``client``'s pooled connections and read the replies
    as raw bytes until ``count`` lines have come; return the first error reply's text, or
    ``""``. Reading the socket directly (redis-py's ``_sock``) skips a parser call per reply.
    A connection that failed midway is dropped (``ConnectionError``/``TimeoutError``)."""

    def read(sock: socket.socket | None) -> list[bytes]:
        parts: list[bytes] = []
        lines = 0
        cr = False  # the last part ended in "\r": a "\n" first in the next one ends a line
        while lines < count:
            part = _receive(sock)
            parts.append(part)
            lines += part.count(b"\r\n") + (cr and part[:1] == b"\n")
            cr = part[-1:] == b"\r"
        return parts

    replies = b"".join(PendingReplies(client, commands, count).finish(read))
    if not replies.startswith(b"-") and b"\n-" not in replies:
        return ""
    at = 0 if replies.startswith(b"-") else replies.index(b"\n-") + 1
    return replies[at + 1 : replies.index(b"\r\n", at)].decode(errors="replace")


def _receive(sock: socket.socket | None) -> bytes:
    """What the socket has (waiting up to its timeout), as redis-py's errors."""
    problem = "Connection closed by server."
    try:
        if sock is not None and (part := sock.recv(1 << 20)):
            return part
    except TimeoutError as exc:
        problem = "Timeout reading from socket"
        raise redis.TimeoutError(problem) from exc
    except OSError as exc:
        problem = f"Error while reading from socket: {exc}"
        raise redis.ConnectionError(problem) from exc
    raise redis.ConnectionError(problem)


class PendingReplies:
    """Commands sent on a pooled connection (taken from the pool until their replies are
    read), so the caller can work while Redis does: :meth:`read` later, or :meth:`drop`.
    Sending raises redis-py's errors (``ConnectionError``/``TimeoutError``)."""

    def __init__(self, client: "redis.Redis", commands: bytes, count: int) -> None:
        self.pool = client.connection_pool
        self.count = count
        self.conn: Any = self.pool.get_connection()
        try:
            self.conn.send_packed_command([commands])
        except BaseException:
            self.drop()
            raise

    def read(self, raise_errors: bool = True) -> list[Any]:
        """The ``count`` replies, parsed by hiredis (bulk strings as ``bytes``, arrays as
        lists, maps as dicts; see :meth:`finish`). An error reply raises its
        :func:`reply_error` once every reply has been read, so the connection stays usable;
        with ``raise_errors`` False that exception is returned in its place."""
        replies = self.finish(self._parse)
        for i, reply in enumerate(replies):
            if isinstance(reply, hiredis.ReplyError):
                if raise_errors:
                    raise reply_error(str(reply))
                replies[i] = reply_error(str(reply))
        return replies

    def finish(self, read: Callable[[socket.socket | None], T]) -> T:
        """What ``read`` makes of the connection's socket (redis-py's ``_sock``: see the
        module docstring); the connection goes back to the pool, dropped if reading
        failed. Once only."""
        if self.conn is None:
            msg = "replies already read or dropped"
            raise RuntimeError(msg)
        try:
            got = read(self.conn._sock)  # noqa: SLF001
        except BaseException:
            self.drop()
            raise
        self.pool.release(self.conn)
        self.conn = None
        return got

    def drop(self) -> None:
        """Give up on the replies: the connection is closed and goes back to the pool."""
        if self.conn is not None:
            self.conn.disconnect()
            self.pool.release(self.conn)
            self.conn = None

    def _parse(self, sock: socket.socket | None) -> list[Any]:
        reader = hiredis.Reader()
        replies: list[Any] = []
        while len(replies) < self.count:
            reader.feed(_receive(sock))
            while (reply := reader.gets()) is not False:
                replies.append(reply)
        return replies
