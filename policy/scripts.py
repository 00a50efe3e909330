"""Lua scripts run by EVALSHA in pipelines, loaded again when Redis has lost them.

A pipeline of calls goes out as plain protocol bytes on a pooled connection and its replies
are read later (``policy.pipelines.PendingReplies``), so a caller can work while Redis runs
the script: :meth:`Script.send`, then :meth:`ScriptReplies.read`; :meth:`Script.run` does
both at once.
"""

import hashlib
from collections.abc import Sequence
from typing import Any

import redis

from policy.pipelines import PendingReplies, bulk

Call = tuple[Sequence[str | bytes], Sequence[str | bytes | int]]  # keys, arguments


class Script:
    """One Lua script of a client, loaded at its first use.

    ``stats`` counts pipelines and loads (the first, and after a Redis restart or ``SCRIPT
    FLUSH``).
    """

    def __init__(self, client: "redis.Redis", source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self.loaded = False
        self.stats = {"round_trips": 0, "script_loads": 0}

    def run(self, calls: Sequence[Call]) -> list[Any]:
        """Replies of ``calls``, in one pipeline (:meth:`send` and read)."""
        return self.send(calls).read() if calls else []

    def send(self, calls: Sequence[Call]) -> "ScriptReplies":
        """Send ``calls`` in one pipeline; their replies are read by the result's
        :meth:`~ScriptReplies.read`. Raises redis-py's errors when sending fails."""
        if not self.loaded:
            self.load()
        return ScriptReplies(
            self, calls, PendingReplies(self.client, self.commands(calls), len(calls))
        )

    def commands(self, calls: Sequence[Call]) -> bytes:
        """The protocol bytes of an EVALSHA per call."""
        head = bulk(b"EVALSHA") + bulk(self.sha.encode())
        return b"".join(
            b"*%d\r\n" % (3 + len(keys) + len(args))
            + head
            + bulk(b"%d" % len(keys))
            + b"".join(bulk(_bytes(x)) for x in (*keys, *args))
            for keys, args in calls
        )

    def load(self) -> None:
        """Load the script into Redis (again, after Redis lost it)."""
        self.client.script_load(self.source)
        self.loaded = True
        self.stats["script_loads"] += 1


class ScriptReplies:
    """The replies of a :meth:`Script.send`, to be read once."""

    def __init__(self, script: Script, calls: Sequence[Call], pending: PendingReplies) -> None:
        self.script = script
        self.calls = calls
        self.pending = pending

    def read(self) -> list[Any]:
        """The calls' replies, in order. Calls that met NOSCRIPT (Redis restarted or its
        scripts flushed) run again once after loading the script, so the script must be safe
        to repeat. The first error reply is raised after every call ran."""
        script = self.script
        replies = self.pending.read(raise_errors=False)
        missing = [i for i, r in enumerate(replies) if _no_script(r)]
        if missing:
            script.load()
            calls = [self.calls[i] for i in missing]
            again = PendingReplies(script.client, script.commands(calls), len(calls))
            for i, reply in zip(missing, again.read(raise_errors=False), strict=True):
                replies[i] = reply
        script.stats["round_trips"] += 1
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def drop(self) -> None:
        """Give up on the replies (the connection is closed)."""
        self.pending.drop()


def _no_script(reply: Any) -> bool:
    return isinstance(reply, redis.exceptions.NoScriptError)


def _bytes(value: str | bytes | int) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, int):
        return b"%d" % value
    return value.encode()
