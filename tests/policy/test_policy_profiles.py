"""Client profiles: validation, defaults, loading and batch lookup against a real Redis."""

from dataclasses import replace
from typing import Any

import pytest
import redis

from policy.exceptions import ProfileError
from policy.profiles import (
    DEFAULT_VALUES,
    INVALID_LOGGED,
    Profile,
    ProfileStore,
    parse_profile,
    profile_key,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def profiles(n: int) -> list[Profile]:
    return [
        Profile(f"C{i:05d}", "senior", "gold", f"RM{i % 7}", "phone", "Europe/London", i % 2 == 0)
        for i in range(n)
    ]


def test_default_profile_is_documented() -> None:
    p = Profile.default("nobody")
    assert (p.segment, p.value_tier, p.rm_id, p.preferred_channel) == (
        "savvy_regular",
        "mass",
        "",
        "",
    )
    assert (p.tz, p.do_not_contact, p.known) == ("Asia/Shanghai", False, False)


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"client_id": "C1", "segment": "pirates"}, "segment"),
        ({"client_id": "C1", "segment": "senior", "value_tier": "gold!"}, "value_tier"),
        ({"client_id": "C1", "segment": "senior", "tz": "Mars/Olympus"}, "tz"),
        ({"client_id": "C1", "segment": "senior", "tz": "localtime"}, "tz"),  # the host's zone
        ({"client_id": "C1", "segment": "senior", "tz": "Factory"}, "tz"),
        ({"client_id": "C1", "segment": "senior", "tz": "right/UTC"}, "tz"),
        ({"client_id": "C1", "segment": "senior", "preferred_channel": "fax"}, "preferred_channel"),
        ({"client_id": "C1", "segment": "senior", "do_not_contact": "maybe"}, "do_not_contact"),
        ({"client_id": "", "segment": "senior"}, "client_id"),
        ({"client_id": "C1"}, "segment"),
        ({"client_id": "C1", "segment": "senior", "segmnet": "x"}, "segmnet"),
        ({"client_id": 7, "segment": "senior"}, "client_id"),
    ],
)
def test_parse_profile_names_the_bad_field(row: dict[str, object], field: str) -> None:
    with pytest.raises(ProfileError, match=f"field '{field}'"):
        parse_profile(row)


def test_parse_profile_fills_defaults() -> None:
    p = parse_profile({"client_id": " C1 ", "segment": "executive", "do_not_contact": "YES"})
    assert p == Profile("C1", "executive", "mass", "", "", "Asia/Shanghai", True)


def test_load_writes_hashes_in_chunked_pipelines(counting: Any) -> None:
    store = ProfileStore(counting.client, chunk=1_000)
    assert store.load(profiles(2_500)) == 2_500
    assert counting.sends == 3  # one MULTI/EXEC pipeline per 1,000 rows
    assert counting.client.hgetall(profile_key("C00004")) == {
        b"segment": b"senior",
        b"value_tier": b"gold",
        b"rm_id": b"RM4",
        b"preferred_channel": b"phone",
        b"tz": b"Europe/London",
        b"do_not_contact": b"1",
    }


def test_load_replaces_the_whole_hash(r: redis.Redis) -> None:
    r.hset(profile_key("C00000"), mapping={"segment": "senior", "stale_field": "x"})
    ProfileStore(r).load(profiles(1))
    assert b"stale_field" not in r.hgetall(profile_key("C00000"))


def test_get_many_one_round_trip_for_all_misses(counting: Any) -> None:
    ProfileStore(counting.client).load(profiles(300))
    store = ProfileStore(counting.client)
    store.get_many(["warm-up"])
    before = counting.client.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0)
    counting.reset()
    ids = [f"C{i:05d}" for i in range(0, 300, 3)] + ["unknown-1", "unknown-2", "C00000"]
    got = store.get_many(ids)
    assert counting.sends == 1
    after = counting.client.info("commandstats")["cmdstat_hmget"]["calls"]
    assert after - before == 102  # each distinct id once
    assert got["C00003"] == profiles(4)[3]
    assert got["unknown-1"] == Profile.default("unknown-1")
    assert store.stats["unknown"] == 3  # with warm-up


def test_cache_serves_until_ttl_then_refetches(counting: Any) -> None:
    ProfileStore(counting.client).load(profiles(10))
    clock = FakeClock()
    store = ProfileStore(counting.client, ttl_s=30.0, clock=clock)
    store.get_many(["C00001", "nobody"])
    counting.client.hset(profile_key("C00001"), "segment", "executive")
    counting.client.hset(profile_key("nobody"), mapping={"segment": "car_owner"})
    counting.reset()
    clock.now += 29.999
    cached = store.get_many(["C00001", "nobody"])
    assert counting.sends == 0  # all hits, no round trip
    assert cached["C00001"].segment == "senior"
    assert not cached["nobody"].known
    clock.now += 0.001
    fresh = store.get_many(["C00001", "nobody"])
    assert counting.sends == 1
    assert fresh["C00001"].segment == "executive"
    assert fresh["nobody"].segment == "car_owner" and fresh["nobody"].known


def test_prefetch_sends_the_misses_and_a_lookup_after_it_needs_no_round_trip(
    counting: Any,
) -> None:
    ProfileStore(counting.client).load(profiles(20))
    store = ProfileStore(counting.client)
    store.get_many(["C00001"])
    counting.reset()
    lookup = store.prefetch(["C00001", "C00002", "C00003", "C00002", "nobody"])
    assert lookup is not None and counting.sends == 1
    assert lookup.ids == ["C00002", "C00003", "nobody"]  # misses only, once each
    known = lookup.finish()
    assert set(known) == {"C00002", "C00003", "nobody"}
    got = store.values_many(["C00001", "C00002", "nobody"], known)
    assert counting.sends == 1  # nothing more sent
    assert got["C00002"] == profiles(3)[2].values()
    assert got["nobody"] == Profile.default("nobody").values()
    assert store.values_many(["C00003"]) == {"C00003": profiles(4)[3].values()}  # cached
    assert counting.sends == 1
    assert store.prefetch(["C00001", "C00003"]) is None
    assert store.stats["misses"] == 4 and store.stats["round_trips"] == 2


def test_a_dropped_prefetch_leaves_the_connection_pool_usable(r: redis.Redis) -> None:
    ProfileStore(r).load(profiles(3))
    store = ProfileStore(r)
    lookup = store.prefetch(["C00000", "C00001"])
    assert lookup is not None
    lookup.drop()
    assert store.get_many(["C00000"])["C00000"] == profiles(1)[0]


def test_cache_is_bounded(r: redis.Redis) -> None:
    store = ProfileStore(r, max_entries=5)
    store.get_many([f"X{i}" for i in range(12)])
    assert len(store._cache) == 5
    assert set(store._cache) == {f"X{i}" for i in range(7, 12)}


def test_a_hash_that_no_longer_parses_gets_defaults(r: redis.Redis) -> None:
    r.hset(profile_key("bad"), mapping={"segment": "pirates"})  # no do-not-contact flag
    store = ProfileStore(r)
    assert store.get_many(["bad"])["bad"] == Profile.default("bad")
    assert store.stats["invalid"] == 1


def test_a_key_of_another_type_gets_defaults_barred_and_the_others_are_read(
    r: redis.Redis,
) -> None:
    """Nothing in the key can be read, its do-not-contact flag included: contact stays
    barred."""
    r.set(profile_key("string"), "not a hash")
    r.hset(profile_key("good"), mapping={"segment": "executive"})
    store = ProfileStore(r)
    got = store.get_many(["string", "good"])
    assert got["string"] == replace(Profile.default("string"), do_not_contact=True)
    assert got["good"].segment == "executive"
    assert store.stats["invalid"] == 1


@pytest.mark.parametrize(
    ("stored", "barred"),
    [
        ({"segment": "senior", "tz": "Asia/Shangai", "do_not_contact": "1"}, True),
        ({"segment": "senior", "do_not_contact": "on"}, True),  # the flag itself unreadable
        ({"segment": "senior", "do_not_contact": b"\xff"}, True),
        ({"segment": "pirates", "do_not_contact": "no"}, False),
        ({"segment": "pirates"}, False),  # no flag stored: contact allowed, as for defaults
    ],
)
def test_a_hash_that_does_not_parse_never_lifts_an_opt_out(
    r: redis.Redis, caplog: pytest.LogCaptureFixture, stored: dict[str, Any], barred: bool
) -> None:
    r.hset(profile_key("bad"), mapping=stored)
    store = ProfileStore(r)
    got = store.get_many(["bad"])["bad"]
    assert got == replace(Profile.default("bad"), do_not_contact=barred)
    assert store.stats["invalid"] == 1
    assert "stored profile ato:profile:bad is invalid" in caplog.text


def test_only_the_first_invalid_profiles_are_logged(
    r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(INVALID_LOGGED + 5):
        r.hset(profile_key(f"bad{i}"), mapping={"segment": "pirates"})
    store = ProfileStore(r)
    store.get_many([f"bad{i}" for i in range(INVALID_LOGGED + 5)])
    assert store.stats["invalid"] == INVALID_LOGGED + 5
    assert caplog.text.count("is invalid") == INVALID_LOGGED
    assert "further invalid stored profiles are only counted" in caplog.text


def test_an_error_reply_other_than_a_wrong_type_is_raised_not_defaulted(
    r: redis.Redis,
) -> None:
    """A user not allowed HMGET (NOPERM) must not read as "no profile": that would lift
    every opt-out. The error is raised, as redis-py's class, and nothing is cached."""
    r.hset(profile_key("dnc"), mapping={"segment": "senior", "do_not_contact": "1"})
    r.acl_setuser(
        "no-hmget", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-hmget"]
    )
    kwargs = r.connection_pool.connection_kwargs
    limited = redis.Redis(
        host=kwargs["host"], port=kwargs["port"], username="no-hmget", password="pw"
    )
    try:
        store = ProfileStore(limited)
        with pytest.raises(redis.exceptions.NoPermissionError):
            store.get_many(["dnc"])
        assert store._cache == {}
        lookup = store.prefetch(["dnc"])
        assert lookup is not None
        with pytest.raises(redis.exceptions.NoPermissionError):
            lookup.finish()
    finally:
        limited.close()
        r.acl_deluser("no-hmget")


def test_a_blank_client_id_neither_fails_nor_changes_other_clients_profiles(
    r: redis.Redis,
) -> None:
    """Equal hashes are validated once for all clients: the client id plays no part."""
    for client in (" ", "ok"):
        r.hset(profile_key(client), mapping={"segment": "executive"})
    got = ProfileStore(r).values_many([" ", "ok", ""])
    assert got[" "] == got["ok"] == Profile("ok", "executive").values()
    assert got[""] == DEFAULT_VALUES == Profile.default("x").values()


def test_fields_a_hash_has_beyond_the_known_ones_are_ignored(r: redis.Redis) -> None:
    """Other tools may add fields to a hash; a typo loses only its own field, never the
    do-not-contact flag of the rest (``ato profiles load`` rejects unknown file columns)."""
    extra = {"segment": "executive", "do_not_contact": "1", "preferred_chanel": "phone"}
    r.hset(profile_key("typo"), mapping=extra)
    r.hset(profile_key("only-extra"), mapping={"updated_at": "2026-11-23"})
    store = ProfileStore(r)
    got = store.get_many(["typo", "only-extra"])
    assert got["typo"] == Profile("typo", "executive", do_not_contact=True)
    assert got["only-extra"] == Profile.default("only-extra")
    assert (store.stats["invalid"], store.stats["unknown"]) == (0, 1)


def test_hashes_that_differ_only_in_rm_id_are_validated_once_and_keep_their_rm(
    r: redis.Redis,
) -> None:
    for i, rm in enumerate([" RM1 ", "RM2", ""]):
        r.hset(profile_key(f"R{i}"), mapping={"segment": "executive", "rm_id": rm})
    r.hset(profile_key("only-rm"), mapping={"rm_id": "RM3"})  # no segment: does not parse
    r.hset(profile_key("bad-rm"), mapping={"segment": "executive", "rm_id": b"\xff"})
    store = ProfileStore(r)
    got = store.get_many(["R0", "R1", "R2", "only-rm", "bad-rm"])
    assert [got[f"R{i}"].rm_id for i in range(3)] == ["RM1", "RM2", ""]
    assert got["R1"] == Profile("R1", "executive", rm_id="RM2")
    assert got["only-rm"] == Profile.default("only-rm")
    assert got["bad-rm"] == Profile.default("bad-rm")
    assert store.stats["invalid"] == 2
    assert len(store._shapes) == 2  # executive with an RM field, and the RM field alone
