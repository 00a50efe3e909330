"""Live journey state (``policy.live_state``, ``ato lookup``) against the test redis-server."""

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import redis

from ato.cli import main
from policy.exceptions import LiveStateError
from policy.live_state import (
    JourneyChanges,
    LiveStateWriter,
    format_lookup,
    iso_utc,
    journey_key,
    latest_rows,
    lookup,
)

T0 = 1_767_614_400_000  # 2026-01-05T12:00:00.000Z
TTL = 3_600
SECRET = "s3cr3t-pw"
# (client, journey, step, since_ms, last type, last channel, last ms, stalled, closed, attempt)
Row = tuple[str, str, str, int, str, str, int, bool, bool, int]


def batch(rows: list[Row], updated_ms: int = T0 + 1_000) -> JourneyChanges:
    """Columns of ``rows``: names as lists / object arrays, numbers and flags as numpy."""
    cols = list(zip(*rows, strict=True)) if rows else [()] * 10
    return JourneyChanges(
        client_id=list(cols[0]),
        journey=np.array(cols[1], dtype=object),
        step=list(cols[2]),
        since_ms=np.array(cols[3], dtype=np.int64),
        last_event_type=list(cols[4]),
        last_channel=np.array(cols[5], dtype=object),
        last_event_ms=np.array(cols[6], dtype=np.int64),
        stalled=np.array(cols[7], dtype=bool),
        closed=np.array(cols[8], dtype=bool),
        attempt=np.array(cols[9], dtype=np.int32),
        updated_ms=updated_ms,
    )


def row(
    client: str,
    journey: str,
    step: str,
    at: int,
    since: int | None = None,
    *,
    stalled: bool = False,
    closed: bool = False,
    attempt: int = 0,
    type_: str = "x",
    channel: str = "app",
) -> Row:
    return (
        client,
        journey,
        step,
        at if since is None else since,
        type_,
        channel,
        at,
        stalled,
        closed,
        attempt,
    )


def value(step: str, since: int, type_: str, at: int, **extra: Any) -> dict[str, Any]:
    """The expected decoded field value."""
    return {
        "step": step,
        "since_ms": since,
        "last_type": type_,
        "last_channel": extra.get("channel", "app"),
        "last_ms": at,
        "stalled": extra.get("stalled", False),
        "attempt": extra.get("attempt", 0),
        "updated_ms": extra.get("updated_ms", T0 + 1_000),
    }


def stored(r: redis.Redis, client: str) -> dict[str, dict[str, Any]]:
    """The raw hash of ``client``, each value parsed as JSON."""
    raw: dict[bytes, bytes] = r.hgetall(journey_key(client))  # type: ignore[assignment]
    return {k.decode(): orjson.loads(v) for k, v in raw.items()}


@pytest.fixture
def writer(r: redis.Redis) -> LiveStateWriter:
    return LiveStateWriter(r, ttl_s=TTL)


def test_scripted_journey_batch_by_batch(r: redis.Redis, writer: LiveStateWriter) -> None:
    j = "open_account"
    t1, t2, t3 = T0 + 60_000, T0 + 11 * 60_000, T0 + 20 * 60_000
    writer.write(batch([row("C1", j, "start", T0, type_="acct_open_start")]))
    assert stored(r, "C1") == {j: value("start", T0, "acct_open_start", T0)}
    assert r.type(journey_key("C1")) == b"hash"

    writer.write(batch([row("C1", j, "id_upload", t1, type_="id_card_uploaded")]))
    assert stored(r, "C1") == {j: value("id_upload", t1, "id_card_uploaded", t1)}

    stall = row("C1", j, "id_upload", t1, type_="id_card_uploaded", stalled=True, attempt=1)
    writer.write(batch([stall], updated_ms=t2))
    expected = value("id_upload", t1, "id_card_uploaded", t1, stalled=True, attempt=1)
    assert stored(r, "C1") == {j: expected | {"updated_ms": t2}}

    resume = row("C1", j, "face_verify", t3, type_="face_verified", attempt=1)
    writer.write(batch([resume], updated_ms=t3))
    expected = value("face_verify", t3, "face_verified", t3, attempt=1, updated_ms=t3)
    assert stored(r, "C1") == {j: expected}

    writer.write(batch([row("C1", j, "opened", t3 + 5, closed=True, attempt=1)]))
    assert not r.exists(journey_key("C1"))


def test_two_journeys_of_one_client(r: redis.Redis, writer: LiveStateWriter) -> None:
    writer.write(
        batch(
            [
                row("C2", "open_account", "start", T0),
                row("C2", "wealth_purchase", "product_view", T0 + 1, channel="call"),
            ]
        )
    )
    assert stored(r, "C2") == {
        "open_account": value("start", T0, "x", T0),
        "wealth_purchase": value("product_view", T0 + 1, "x", T0 + 1, channel="call"),
    }
    writer.write(batch([row("C2", "open_account", "opened", T0 + 9, closed=True)]))
    assert list(stored(r, "C2")) == ["wealth_purchase"]
    writer.write(batch([row("C2", "wealth_purchase", "paid", T0 + 9, closed=True)]))
    assert not r.exists(journey_key("C2"))


def test_only_the_last_change_per_instance_is_written(
    r: redis.Redis, writer: LiveStateWriter
) -> None:
    rows = [
        row("C3", "open_account", "id_upload", T0 + 200),
        row("C3", "open_account", "start", T0 + 100),  # older event, later in the input
        row("C3", "open_account", "face_verify", T0 + 200),  # same time, later input: wins
        row("C4", "open_account", "start", T0 + 300, closed=True),
        row("C4", "open_account", "start", T0 + 300),  # closed, then a new instance
        row("C5", "open_account", "start", T0 + 50),
        row("C5", "open_account", "opened", T0 + 60, closed=True),
    ]
    assert latest_rows(batch(rows)) == [6, 2, 4]  # winners, ordered by their event time
    # C3: HSET + EXPIRE, C4: HSET + EXPIRE, C5: HDEL + EXPIRE
    assert writer.write(batch(rows)) == 3
    assert stored(r, "C3") == {"open_account": value("face_verify", T0 + 200, "x", T0 + 200)}
    assert stored(r, "C4") == {"open_account": value("start", T0 + 300, "x", T0 + 300)}
    assert not r.exists(journey_key("C5"))


def test_ttl_is_set_on_keys_with_fields_set_only(r: redis.Redis, writer: LiveStateWriter) -> None:
    writer.write(
        batch(
            [
                row("A", "open_account", "start", T0),
                row("B", "loan", "apply", T0),
                row("B", "open_account", "start", T0),
            ]
        )
    )
    assert TTL - 2 <= r.ttl(journey_key("A")) <= TTL
    r.expire(journey_key("B"), 50)
    r.expire(journey_key("A"), 50)
    writer.write(batch([row("A", "open_account", "id_upload", T0 + 1)]))
    assert TTL - 2 <= r.ttl(journey_key("A")) <= TTL
    assert r.ttl(journey_key("B")) <= 50  # untouched
    writer.write(batch([row("B", "loan", "apply", T0 + 2, closed=True)]))
    assert set(stored(r, "B")) == {"open_account"}
    assert r.ttl(journey_key("B")) <= 50  # a removal alone keeps the expiry


def test_one_round_trip_per_write(counting: Any, r: redis.Redis) -> None:
    """All clients' commands in one write. The result equals writing each client alone."""
    writer = LiveStateWriter(counting.client, ttl_s=TTL)
    rows = [row(f"C{i % 40}", f"j{i % 3}", "s", T0 + i, closed=i % 7 == 0) for i in range(300)]
    counting.reset()
    assert writer.write(batch(rows)) == 40
    assert counting.sends == 1
    counting.reset()
    assert writer.write(batch([])) == 0
    assert counting.sends == 0
    chunked = {i: stored(r, f"C{i}") for i in range(40)}
    assert sum(len(v) for v in chunked.values()) > 0
    r.flushall()
    alone = LiveStateWriter(r, ttl_s=TTL)
    for i in range(40):
        alone.write(batch([x for k, x in enumerate(rows) if k % 40 == i]))
    assert {i: stored(r, f"C{i}") for i in range(40)} == chunked


def _dump(r: redis.Redis) -> dict[bytes, dict[bytes, bytes]]:
    return {k: r.hgetall(k) for k in r.keys("ato:journey:*")}  # type: ignore[misc, union-attr]


def test_resending_is_idempotent_after_a_partial_write(
    r: redis.Redis, writer: LiveStateWriter
) -> None:
    before = [row("P", "open_account", "start", T0), row("Q", "loan", "apply", T0)]
    rows = [
        row("P", "open_account", "id_upload", T0 + 5),
        row("Q", "loan", "income", T0 + 5, closed=True),
        row("R", "loan", "apply", T0 + 6),
    ]
    writer.write(batch(before))
    writer.write(batch(rows))
    once = _dump(r)
    writer.write(batch(rows))
    assert _dump(r) == once

    r.flushdb()
    writer.write(batch(before))
    writer.write(batch(rows[1:]))  # what a pipeline cut short may have applied
    writer.write(batch(rows))
    assert _dump(r) == once


def test_lookup_and_format(r: redis.Redis, writer: LiveStateWriter) -> None:
    assert lookup(r, "nobody") == {}
    assert format_lookup("nobody", {}) == "nobody: no open journeys"
    writer.write(
        batch(
            [
                row("C9", "wealth_purchase", "confirm", T0 + 90_000, since=T0, stalled=True),
                row("C9", "open_account", "start", T0, type_="acct_open_start", attempt=2),
            ]
        )
    )
    state = lookup(r, "C9")
    assert list(state) == ["open_account", "wealth_purchase"]
    assert state["wealth_purchase"] == value("confirm", T0, "x", T0 + 90_000, stalled=True)
    assert iso_utc(T0 + 90_000) == "2026-01-05T12:01:30.000Z"
    assert format_lookup("C9", state).splitlines() == [
        "C9: 2 open journeys",
        "  journey          step     since                     last event       channel"
        "  at                        stalled  attempt",
        "  open_account     start    2026-01-05T12:00:00.000Z  acct_open_start  app"
        "      2026-01-05T12:00:00.000Z  no       2",
        "  wealth_purchase  confirm  2026-01-05T12:00:00.000Z  x                app"
        "      2026-01-05T12:01:30.000Z  yes      0",
    ]


def test_unequal_columns_are_rejected() -> None:
    good = batch([row("C", "j", "s", T0)])
    with pytest.raises(ValueError, match="differ in length"):
        JourneyChanges(**{**good.__dict__, "step": ["s", "t"]})


def test_unreachable_redis_is_a_transient_error_with_the_password_masked() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = redis.Redis("127.0.0.1", port, password=SECRET, socket_connect_timeout=0.5, retry=None)
    with pytest.raises(LiveStateError) as err:
        LiveStateWriter(client, ttl_s=TTL).write(batch([row("C", "j", "s", T0)]))
    assert err.value.transient
    assert f"redis://:***@127.0.0.1:{port}/0" in str(err.value)
    assert SECRET not in str(err.value)
    with pytest.raises(LiveStateError):
        lookup(client, "C")


def test_a_redis_that_hangs_is_tried_once_per_pause_not_once_per_write() -> None:
    with socket.socket() as sock:  # accepts connections (backlog) but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        client = redis.Redis(port=sock.getsockname()[1], socket_timeout=0.3, retry=None)
        writer = LiveStateWriter(client, ttl_s=TTL)
        started = time.monotonic()
        messages = []
        for _ in range(5):
            with pytest.raises(LiveStateError) as err:
                writer.write(batch([row("C", "j", "s", T0)]))
            assert err.value.transient
            messages.append(str(err.value))
        assert time.monotonic() - started < 1.0  # one timeout, not five
        assert "imeout" in messages[0]
        assert sum("not tried again" in m for m in messages) == 4
        client.close()


def test_a_refused_password_is_not_transient(r: redis.Redis) -> None:
    r.acl_setuser("ato-pw", enabled=True, passwords=["+right"], keys=["*"], commands=["+@all"])
    kwargs = r.connection_pool.connection_kwargs
    wrong = redis.Redis(host=kwargs["host"], port=kwargs["port"], username="ato-pw", password="no")
    try:
        with pytest.raises(LiveStateError, match="invalid username-password") as err:
            LiveStateWriter(wrong, ttl_s=TTL).write(batch([row("C", "j", "s", T0)]))
        assert not err.value.transient
    finally:
        wrong.close()
        r.acl_deluser("ato-pw")


def test_slow_redis_is_a_transient_error() -> None:
    with socket.socket() as sock:  # accepts connections (backlog) but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        client = redis.Redis(port=sock.getsockname()[1], socket_timeout=0.2, retry=None)
        with pytest.raises(LiveStateError, match="[Tt]imeout") as err:
            LiveStateWriter(client, ttl_s=TTL).write(batch([row("C", "j", "s", T0)]))
        assert err.value.transient
        client.close()


# `ato lookup`


@pytest.fixture(autouse=True)
def _no_redis_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose the Redis url themselves."""
    for var in ("ATO_REDIS_URL", "ATO_REDIS_PASSWORD"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def client_c9(r: redis.Redis, writer: LiveStateWriter) -> Iterator[str]:
    writer.write(batch([row("C9", "open_account", "id_upload", T0 + 5, since=T0, attempt=1)]))
    yield "C9"


def test_cli_lookup_text_and_json(
    redis_url: str, client_c9: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lookup", client_c9, "--redis-url", redis_url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "C9: 1 open journey"
    assert out[2].split() == [
        "open_account",
        "id_upload",
        "2026-01-05T12:00:00.000Z",
        "x",
        "app",
        "2026-01-05T12:00:00.005Z",
        "no",
        "1",
    ]
    assert main(["lookup", client_c9, "--redis-url", redis_url, "--json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc == {
        "client_id": "C9",
        "journeys": {"open_account": value("id_upload", T0, "x", T0 + 5, attempt=1)},
    }


def test_cli_lookup_unknown_client(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ATO_REDIS_URL", redis_url)
    assert main(["lookup", "nobody"]) == 0
    assert capsys.readouterr().out == "nobody: no open journeys\n"
    assert main(["lookup", "nobody", "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out) == {"client_id": "nobody", "journeys": {}}


def test_cli_lookup_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["lookup", "C1"]) == 2
    assert "--redis-url" in capsys.readouterr().err
    assert main(["lookup", "C1", "--redis-url", f"redis://u:{SECRET}@127.0.0.1:1/0"]) == 2
    out, err = capsys.readouterr()
    assert "ato: error:" in err
    assert "***" in err
    assert SECRET not in out + err


def test_a_field_that_is_json_but_not_an_object_is_a_clear_error(r: redis.Redis) -> None:
    r.hset(journey_key("C-odd"), "open_account", b"[1, 2]")
    with pytest.raises(LiveStateError, match="not a JSON object"):
        lookup(r, "C-odd")


def test_odd_values_written_by_something_else_are_shown_as_they_are(r: redis.Redis) -> None:
    """Times that are not epoch ms and field names that are not UTF-8 (a hand-edited hash):
    the lookup prints them instead of failing with a traceback."""
    key = journey_key("C-hand")
    r.hset(key, "open_account", b'{"step": "s", "since_ms": "abc", "last_ms": null}')
    r.hset(key, "wealth_purchase", b'{"step": "t", "since_ms": 99999999999999999}')
    r.hset(key, b"caf\xe9", b'{"step": "u", "since_ms": 0}')
    state = lookup(r, "C-hand")
    assert list(state) == ["caf\\xe9", "open_account", "wealth_purchase"]
    lines = format_lookup("C-hand", state).splitlines()
    assert "'abc'" in lines[3] and "99999999999999999" in lines[4]
    assert "1970-01-01T00:00:00.000Z" in lines[2]
    with pytest.raises(SystemExit) as exited:  # argparse's usage error, before any Redis
        main(["lookup", " ", "--redis-url", "redis://127.0.0.1:1/0"])
    assert exited.value.code == 2


def test_a_large_write_reads_every_reply(r: redis.Redis, writer: LiveStateWriter) -> None:
    """Replies come in several socket reads; the write waits for all of them."""
    rows = [row(f"F{i}", "open_account", "id_upload", T0 + i) for i in range(60_000)]
    assert writer.write(batch(rows)) == 60_000
    assert writer.stats == {"round_trips": 1, "commands": 120_000}
    assert stored(r, "F59999")["open_account"]["step"] == "id_upload"
    assert r.ping()  # nothing left unread on the pool's connections
    assert writer.write(batch([row("F1", "open_account", "kyc", T0 + 1)])) == 1


def test_an_error_reply_fails_the_write_and_leaves_the_connection_usable(
    r: redis.Redis, writer: LiveStateWriter
) -> None:
    r.set(journey_key("S1"), "not a hash")
    rows = [row("S0", "open_account", "start", T0), row("S1", "open_account", "start", T0)]
    with pytest.raises(LiveStateError, match="WRONGTYPE") as failed:
        writer.write(batch(rows))
    assert not failed.value.transient
    assert stored(r, "S0")["open_account"]["step"] == "start"  # the other client's went in
    r.delete(journey_key("S1"))
    assert writer.write(batch(rows)) == 2
    assert stored(r, "S1")["open_account"]["step"] == "start"


def test_one_shards_end_of_input_leaves_the_shared_writer_working(r: redis.Redis) -> None:
    """The shards of a process share one writer: while one waits for the writes at its end
    of input, another's write goes through (ending the writer's thread then made it fail
    with "cannot schedule new futures after shutdown")."""
    writer = LiveStateWriter(r, 60)
    gate = threading.Event()
    writer.send = lambda _commands, _count, clients, **_: clients if gate.wait(5) else -1  # type: ignore[method-assign]
    first = writer.submit(lambda: (b"", 0, 1))
    ending = threading.Thread(target=writer.flush)
    ending.start()
    time.sleep(0.05)  # the first shard now waits in flush()
    second = writer.submit(lambda: (b"", 0, 2))
    gate.set()
    ending.join(5)
    assert not ending.is_alive()
    assert (first.result(5), second.result(5)) == (1, 2)
