"""Lua scripts run by EVALSHA in pipelines, loaded again when Redis has lost them."""

import hashlib
from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import NoScriptError

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
        """Replies of ``calls``, in one pipeline; the calls that met NOSCRIPT run again once
        after loading the script (so the script must be safe to repeat). The first error
        reply is raised after every call ran."""
        if not calls:
            return []
        if not self.loaded:
            self._load()
        replies = self._pipeline(calls)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            self._load()
            for i, reply in zip(missing, self._pipeline([calls[i] for i in missing]), strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _load(self) -> None:
        self.client.script_load(self.source)
        self.loaded = True
        self.stats["script_loads"] += 1

    def _pipeline(self, calls: Sequence[Call]) -> list[Any]:
        with self.client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(self.sha, len(keys), *keys, *args)
            replies = pipe.execute(raise_on_error=False)
        self.stats["round_trips"] += 1
        return list(replies)
