"""Client profiles: the dataclass, its Redis hash layout, and a batch lookup with a TTL cache.

A profile lives in the Redis hash ``ato:profile:<client_id>`` with the string fields
``segment``, ``value_tier``, ``rm_id``, ``preferred_channel``, ``tz`` and ``do_not_contact``
(``"1"`` or ``"0"``); see ``docs/policy.md``. A client without a hash gets
:meth:`Profile.default`; a stored profile that does not parse gets the same defaults, but
keeps contact barred unless its ``do_not_contact`` field reads as false or is absent.
"""

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis

from ato.catalog import SEGMENTS
from ato.columns import CLIENT_ID_CONTROL, only_white_space
from policy.exceptions import ProfileError
from policy.pipelines import PendingReplies, bulk

KEY_PREFIX = "ato:profile:"
# value tiers, lowest first (a retail bank's mass / gold / platinum / diamond / private banking)
VALUE_TIERS: tuple[str, ...] = ("mass", "gold", "platinum", "diamond", "private")
# contact channels by tier; a profile's preferred channel is one of them or empty
TIER_CHANNELS: dict[str, tuple[str, ...]] = {
    "ai": ("push", "chat", "voice_bot"),
    "remote": ("phone", "video"),
    "offline": ("rm_task",),
}
CONTACT_CHANNELS: tuple[str, ...] = tuple(c for chans in TIER_CHANNELS.values() for c in chans)
FIELDS: tuple[str, ...] = (
    "segment",
    "value_tier",
    "rm_id",
    "preferred_channel",
    "tz",
    "do_not_contact",
)
# a lookup reads the known fields in one command (other fields of the hash are ignored)
_HMGET = b"*%d\r\n" % (2 + len(FIELDS)) + bulk(b"HMGET")
_FIELD_NAMES_TAIL = b"".join(bulk(name.encode()) for name in FIELDS)
_RM = FIELDS.index("rm_id")
_DNC = FIELDS.index("do_not_contact")
# what an unknown client gets (documented in docs/policy.md)
DEFAULT_SEGMENT = "savvy_regular"
DEFAULT_VALUE_TIER = "mass"
DEFAULT_TZ = "Asia/Shanghai"
_TRUE = {"1", "true", "yes", "y"}
_FALSE = {"0", "false", "no", "n", ""}


# names of the tz database that are no place's zone: the host's own (``localtime``), the
# "zone unknown" placeholder, and the posix/right copies some hosts carry and others do not
NOT_PLACES = ("localtime", "Factory", "posixrules")
NOT_PLACE_PREFIXES = ("posix/", "right/")


@cache
def zone(name: str) -> ZoneInfo:
    """The ``ZoneInfo`` of an IANA name; ``ProfileError`` naming ``tz`` if unknown, or if it
    names no place (:data:`NOT_PLACES`: a profile would mean other times on other hosts)."""
    if name in NOT_PLACES or name.startswith(NOT_PLACE_PREFIXES):
        msg = f"field 'tz': {name!r} is no place's time zone (use an Area/City name)"
        raise ProfileError(msg)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        msg = f"field 'tz': unknown IANA time zone {name!r}"
        raise ProfileError(msg) from exc


ProfileValues = tuple[str, str, str, str, str, bool, bool]
# Profile.default(...).values(), without validating a client id
DEFAULT_VALUES: ProfileValues = (
    DEFAULT_SEGMENT,
    DEFAULT_VALUE_TIER,
    "",
    "",
    DEFAULT_TZ,
    False,
    False,
)
INVALID_LOGGED = 10  # invalid stored profiles logged one by one per store; the rest counted
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Profile:
    """What the contact policy knows about a client; ``known`` is False for defaults."""

    client_id: str
    segment: str = DEFAULT_SEGMENT
    value_tier: str = DEFAULT_VALUE_TIER
    rm_id: str = ""
    preferred_channel: str = ""
    tz: str = DEFAULT_TZ
    do_not_contact: bool = False
    known: bool = True

    def __post_init__(self) -> None:
        if not self.client_id or not self.client_id.strip():
            msg = "field 'client_id': a non-empty string is required"
            raise ProfileError(msg)
        if self.segment not in SEGMENTS:
            msg = f"field 'segment': {self.segment!r} is not one of {', '.join(SEGMENTS)}"
            raise ProfileError(msg)
        if self.value_tier not in VALUE_TIERS:
            msg = f"field 'value_tier': {self.value_tier!r} is not one of {', '.join(VALUE_TIERS)}"
            raise ProfileError(msg)
        if self.preferred_channel and self.preferred_channel not in CONTACT_CHANNELS:
            msg = (
                f"field 'preferred_channel': {self.preferred_channel!r} is not empty "
                f"or one of {', '.join(CONTACT_CHANNELS)}"
            )
            raise ProfileError(msg)
        zone(self.tz)

    def values(self) -> "ProfileValues":
        """Every field but ``client_id``, as a tuple (what the cache keeps)."""
        return (
            self.segment, self.value_tier, self.rm_id, self.preferred_channel, self.tz,
            self.do_not_contact, self.known,
        )  # fmt: skip

    @classmethod
    def of_values(cls, client_id: str, values: "ProfileValues") -> "Profile":
        """A profile from :meth:`values` of a validated one, without validating again."""
        profile = object.__new__(cls)
        profile.__dict__.update(zip(_FIELD_NAMES, (client_id, *values), strict=True))
        return profile

    @classmethod
    def default(cls, client_id: str) -> "Profile":
        """An unknown client: savvy_regular, mass tier, no RM, no preference,
        Asia/Shanghai, contact allowed."""
        return cls(client_id, known=False)

    def to_fields(self) -> dict[str, str]:
        """The Redis hash fields."""
        return {
            "segment": self.segment,
            "value_tier": self.value_tier,
            "rm_id": self.rm_id,
            "preferred_channel": self.preferred_channel,
            "tz": self.tz,
            "do_not_contact": "1" if self.do_not_contact else "0",
        }


_FIELD_NAMES = tuple(f.name for f in fields(Profile))


def parse_bool(value: object, name: str) -> bool:
    """``true/false``, ``1/0``, ``yes/no`` (any case) or a JSON boolean; empty is False."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    msg = f"field '{name}': expected true/false, 1/0 or yes/no, got {value!r}"
    raise ProfileError(msg)


def unreadable_values(stored_flag: bytes | None) -> ProfileValues:
    """The values for a stored profile that does not parse: the defaults, with contact
    barred unless ``stored_flag`` (its ``do_not_contact`` field) reads as false or is absent
    (None). A key of another type passes ``b"1"``: nothing in it can be read."""
    try:
        barred = stored_flag is not None and parse_bool(stored_flag.decode(), "do_not_contact")
    except (ProfileError, UnicodeDecodeError):
        barred = True
    return (*DEFAULT_VALUES[:5], barred, False)


def parse_profile(row: Mapping[str, object]) -> Profile:
    """A profile from text fields (a CSV row, a JSON object, or the known fields of a Redis
    hash).

    ``client_id`` and ``segment`` are required; missing or empty optional fields take the
    defaults of :meth:`Profile.default`. Unknown fields are errors (they are usually typos).
    """
    unknown = sorted(set(row) - {"client_id", *FIELDS})
    if unknown:
        msg = f"field '{unknown[0]}': unknown field (allowed: client_id, {', '.join(FIELDS)})"
        raise ProfileError(msg)
    values: dict[str, str] = {}
    for name in ("client_id", "segment", "value_tier", "rm_id", "preferred_channel", "tz"):
        value = row.get(name)
        if value is None:
            value = ""
        if not isinstance(value, str):
            msg = f"field '{name}': expected a string, got {value!r}"
            raise ProfileError(msg)
        values[name] = value.strip()
    for name in ("client_id", "segment"):
        if not values[name]:
            msg = f"field '{name}': a non-empty value is required"
            raise ProfileError(msg)
    if only_white_space(values["client_id"]):
        msg = "field 'client_id': only white space, which no valid event's id can be"
        raise ProfileError(msg)
    if CLIENT_ID_CONTROL.search(values["client_id"]):
        msg = "field 'client_id': holds a control character, which no valid event's id can"
        raise ProfileError(msg)
    return Profile(
        client_id=values["client_id"],
        segment=values["segment"],
        value_tier=values["value_tier"] or DEFAULT_VALUE_TIER,
        rm_id=values["rm_id"],
        preferred_channel=values["preferred_channel"],
        tz=values["tz"] or DEFAULT_TZ,
        do_not_contact=parse_bool(row.get("do_not_contact") or "", "do_not_contact"),
    )


def profile_key(client_id: str) -> str:
    """The Redis key of a client's profile hash."""
    return KEY_PREFIX + client_id


class ProfileStore:
    """Profiles in Redis, looked up per batch with one pipelined round trip for cache misses.

    Found and unknown clients alike are cached in-process for ``ttl_s`` seconds of ``clock``
    (default ``time.monotonic``); the cache keeps at most ``max_entries`` entries and drops the
    oldest first. A hash that no longer parses (edited by hand), or a key of another type,
    counts in ``stats["invalid"]``, is logged (the first :data:`INVALID_LOGGED`), and gives
    :func:`unreadable_values`: the defaults with contact barred unless the record says
    otherwise, so a bad record never stops a flow nor lifts an opt-out. Any other error
    reply is raised (redis-py's class: a Redis still loading its data is transient).

    The cache holds tuples of strings (which Python's cycle collector stops scanning), not
    ``Profile`` objects: a million cached objects made every full collection slow. Hashes
    with the same contents are validated once.
    """

    def __init__(
        self,
        client: "redis.Redis",
        ttl_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 1_000_000,
        chunk: int = 1_000,
    ) -> None:
        if max_entries < 1 or chunk < 1:
            msg = f"max_entries and chunk must be >= 1, got {max_entries} and {chunk}"
            raise ValueError(msg)
        self.client = client
        self.ttl_s = ttl_s
        self.clock = clock
        self.max_entries = max_entries
        self.chunk = chunk
        self._cache: dict[str, tuple[float, ProfileValues]] = {}
        self._shapes: dict[tuple[bytes | bool | None, ...], tuple[ProfileValues, str, str]] = {}
        self.stats = {"hits": 0, "misses": 0, "unknown": 0, "invalid": 0, "round_trips": 0}

    def load(self, profiles: Iterable[Profile]) -> int:
        """Write profiles (each hash replaced whole), ``chunk`` per pipeline; return the count.

        Each chunk is one MULTI/EXEC transaction of DEL + HSET per client. Cached entries
        of the written clients are dropped.
        """
        count = 0
        batch: list[Profile] = []
        for profile in profiles:
            batch.append(profile)
            if len(batch) >= self.chunk:
                count += self._write(batch)
                batch = []
        if batch:
            count += self._write(batch)
        return count

    def _write(self, batch: list[Profile]) -> int:
        with self.client.pipeline(transaction=True) as pipe:
            for profile in batch:
                key = profile_key(profile.client_id)
                pipe.delete(key)
                pipe.hset(key, mapping=profile.to_fields())  # type: ignore[arg-type]
                self._cache.pop(profile.client_id, None)
            pipe.execute()
        self.stats["round_trips"] += 1
        return len(batch)

    def get_many(self, client_ids: Iterable[str]) -> dict[str, Profile]:
        """Profiles of ``client_ids`` (defaults for unknown ones): cache first, then one
        round trip for all the misses: one pipeline of plain ``HMGET`` commands of the
        known fields (others in the hash are ignored), written and read by
        :mod:`policy.pipelines` (no per-command client-library cost)."""
        of_values = Profile.of_values
        return {c: of_values(c, v) for c, v in self.values_many(client_ids).items()}

    def values_many(
        self, client_ids: Iterable[str], known: Mapping[str, ProfileValues] | None = None
    ) -> dict[str, ProfileValues]:
        """:meth:`get_many` as :meth:`Profile.values` tuples (no objects made). ``known``:
        profiles just read (:meth:`prefetch`), taken before the cache."""
        now = self.clock()
        found: dict[str, ProfileValues] = {}
        missing: dict[str, None] = {}  # insertion-ordered set
        for client_id in client_ids:
            if client_id in found or client_id in missing:
                continue
            if known is not None and (values := known.get(client_id)) is not None:
                found[client_id] = values
                continue
            entry = self._cache.get(client_id)
            if entry is not None and entry[0] > now:
                found[client_id] = entry[1]
                self.stats["hits"] += 1
            else:
                missing[client_id] = None
        if missing:
            found.update(self._send(list(missing), now).finish())
        return found

    def prefetch(self, client_ids: Iterable[str]) -> "ProfileLookup | None":
        """Send the lookups of the clients of ``client_ids`` not in the cache now, and
        return them to be read later (:meth:`ProfileLookup.finish`), so the caller works
        while Redis answers; None when every one is cached. Raises redis-py's errors."""
        now = self.clock()
        cache_ = self._cache
        missing: dict[str, None] = {}
        for client_id in client_ids:
            entry = cache_.get(client_id)
            if entry is None or entry[0] <= now:
                missing[client_id] = None
        return self._send(list(missing), now) if missing else None

    def _send(self, ids: list[str], now: float) -> "ProfileLookup":
        """The lookups of ``ids``, sent (one round trip)."""
        self.stats["misses"] += len(ids)
        commands = b"".join(
            [_HMGET + bulk(profile_key(c).encode()) + _FIELD_NAMES_TAIL for c in ids]
        )
        replies = PendingReplies(self.client, commands, len(ids))
        self.stats["round_trips"] += 1
        return ProfileLookup(self, ids, now + self.ttl_s, replies)

    def remember_replies(
        self, ids: list[str], expires: float, replies: list[Any]
    ) -> dict[str, ProfileValues]:
        """The values of the replies of lookups of ``ids``, remembered in the cache until
        ``expires``."""
        for got in replies:
            if isinstance(got, redis.RedisError) and not _wrong_type(got):
                raise got
        found: dict[str, ProfileValues] = {}
        for client_id, got in zip(ids, replies, strict=True):
            if isinstance(got, redis.RedisError):
                values = unreadable_values(b"1")
                self._invalid(client_id, "the key is not a hash", values[5])
            else:
                values = self._values(client_id, got)
            found[client_id] = values
            self._remember(client_id, expires, values)
        return found

    def _values(self, client_id: str, got: list[bytes | None]) -> ProfileValues:
        """The validated values of a hash, ``got`` its values of :data:`FIELDS` (None where
        absent). Hashes that differ only in ``rm_id`` (any text is a valid RM id) are
        validated once (at most ``max_entries`` kinds remembered), and the RM id is put in
        afterwards."""
        rm = got[_RM]
        key = (*got[:_RM], *got[_RM + 1 :], rm is None)
        known = self._shapes.get(key)
        if known is None:
            known = self._decode(got)
            if len(self._shapes) >= self.max_entries:
                self._shapes.clear()
            self._shapes[key] = known
        values, status, problem = known
        if rm and not status:
            try:
                text = rm.decode()
            except UnicodeDecodeError:
                values = unreadable_values(got[_DNC])  # the rest parsed: so does the flag
                status, problem = "invalid", "field 'rm_id': not UTF-8"
            else:
                values = (values[0], values[1], text.strip(), *values[3:])
        if status == "invalid":
            self._invalid(client_id, problem, values[5])
        elif status:
            self.stats[status] += 1
        return values

    @staticmethod
    def _decode(got: list[bytes | None]) -> tuple[ProfileValues, str, str]:
        """The values of a hash but its RM id, what it was (``""`` valid, ``"unknown"``:
        none of :data:`FIELDS`, so no hash; ``"invalid"``: does not parse, so
        :func:`unreadable_values`), and why it is invalid. The client id plays no part (it is
        checked where events are decoded), so equal hashes of all clients share the result."""
        if got.count(None) == len(got):
            return DEFAULT_VALUES, "unknown", ""
        row: dict[str, object] = {"client_id": "profile"}
        try:
            for i, (name, value) in enumerate(zip(FIELDS, got, strict=True)):
                if value is not None and i != _RM:
                    row[name] = value.decode()
            return parse_profile(row).values(), "", ""
        except (ProfileError, UnicodeDecodeError) as exc:
            return unreadable_values(got[_DNC]), "invalid", str(exc)

    def _invalid(self, client_id: str, problem: str, barred: bool) -> None:
        """Count (and log the first few) stored profiles that do not parse."""
        self.stats["invalid"] += 1
        if self.stats["invalid"] <= INVALID_LOGGED:
            log.warning(
                "stored profile %s is invalid (%s): the defaults, contact %s",
                profile_key(client_id), problem, "barred" if barred else "allowed",
            )  # fmt: skip
            if self.stats["invalid"] == INVALID_LOGGED:
                log.warning("further invalid stored profiles are only counted")

    def _remember(self, client_id: str, expires: float, values: ProfileValues) -> None:
        cache_ = self._cache
        cache_.pop(client_id, None)
        while len(cache_) >= self.max_entries:
            del cache_[next(iter(cache_))]
        cache_[client_id] = (expires, values)

    def invalidate(self, client_ids: Iterable[str] | None = None) -> None:
        """Drop cached entries (all of them when ``client_ids`` is None)."""
        if client_ids is None:
            self._cache.clear()
            return
        for client_id in client_ids:
            self._cache.pop(client_id, None)


def _wrong_type(error: Exception) -> bool:
    """The reply to a command on a key of another type."""
    return isinstance(error, redis.ResponseError) and str(error).startswith("WRONGTYPE")


class ProfileLookup:
    """Profile lookups sent on a pooled connection, their replies not read yet."""

    def __init__(
        self, store: ProfileStore, ids: list[str], expires: float, replies: PendingReplies
    ) -> None:
        self.store = store
        self.ids = ids
        self.expires = expires
        self.replies = replies

    def finish(self) -> dict[str, ProfileValues]:
        """The looked-up clients' profiles (defaults for unknown ones), now cached too.
        Raises redis-py's errors (the connection is then dropped)."""
        replies = self.replies.read(raise_errors=False)
        return self.store.remember_replies(self.ids, self.expires, replies)

    def drop(self) -> None:
        """Give up on the replies (the connection is closed)."""
        self.replies.drop()
