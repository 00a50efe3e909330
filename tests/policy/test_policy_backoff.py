"""RedisBackoff: while Redis does not answer, the shards of a process try it one at a time,
after doubling pauses, and leave it alone meanwhile."""

from policy.backoff import FIRST_PAUSE_MS, MAX_PAUSE_MS, RedisBackoff


def test_every_call_may_go_while_redis_answers() -> None:
    backoff = RedisBackoff()
    assert all(backoff.may_try(t) for t in range(5)) and not backoff.pausing


def test_after_a_failure_one_caller_tries_after_each_pause() -> None:
    backoff = RedisBackoff()
    backoff.failed(0)
    assert backoff.pausing
    assert not backoff.may_try(FIRST_PAUSE_MS - 1)  # every shard leaves Redis alone
    assert backoff.may_try(FIRST_PAUSE_MS)  # the first after the pause gets the one try
    assert not backoff.may_try(FIRST_PAUSE_MS)  # the others wait for its outcome
    backoff.failed(FIRST_PAUSE_MS + 200)  # it timed out: the pause doubles
    assert not backoff.may_try(FIRST_PAUSE_MS + 200 + 2 * FIRST_PAUSE_MS - 1)
    assert backoff.may_try(FIRST_PAUSE_MS + 200 + 2 * FIRST_PAUSE_MS)
    backoff.answered()
    assert backoff.may_try(0) and backoff.may_try(0) and not backoff.pausing


def test_the_pause_grows_to_its_bound() -> None:
    backoff = RedisBackoff()
    now = 0
    for _ in range(10):
        backoff.failed(now)
        now += MAX_PAUSE_MS
    assert not backoff.may_try(now - 1) and backoff.may_try(now)
