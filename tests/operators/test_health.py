"""flow_health rows from progress items: sums per wall-clock interval, Kafka lag per worker."""

from typing import Any

from operators.metrics import HealthLogic


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


def _item(**values: Any) -> dict[str, Any]:
    return {"worker": "host:1:w0", **values}


def test_an_interval_sums_its_items_and_lag_sums_the_latest_per_partition() -> None:
    clock = Clock()
    logic = HealthLogic("run", 10_000, clock)
    items = [
        _item(**{"in": 100, "dead": 2, "max_ts": 50, "lag": {"t#0": 400}}),
        _item(**{"in": 50, "dead": 0, "max_ts": 70, "lag": {"t#1": 30}}),
        _item(**{"in": 10, "dead": 1, "max_ts": 60, "lag": {"t#0": 300}}),
        _item(shard="s0", latency_ms=5.0, late=3, watermark=40, open=7, bytes=1000),
    ]
    assert logic.on_batch(items) == ([], logic.RETAIN)  # the interval has not ended
    clock.now += 10_000
    (block,), _ = logic.on_batch([])
    row = {k: v[0] for k, v in block.columns.items()}
    assert (row["events_in"], row["batches"], row["decode_errors"]) == (160, 3, 3)
    assert (row["late_events"], row["open_instances"], row["state_bytes"]) == (3, 7, 1000)
    assert row["kafka_lag"] == 330  # 300 (latest of t#0) + 30
    assert row["watermark_delay_ms"] == 70 - 40
    clock.now += 10_000
    (block,), _ = logic.on_notify()  # a quiet interval: partitions keep their last lag
    assert block.columns["kafka_lag"][0] == 330
    assert block.columns["events_in"][0] == 0


def test_without_a_lag_report_the_lag_is_unknown() -> None:
    clock = Clock()
    logic = HealthLogic("run", 10_000, clock)
    logic.on_batch([_item(**{"in": 5, "dead": 0, "max_ts": 1})])
    (block,), _ = logic.on_eof()
    assert block.columns["kafka_lag"][0] == -1  # NULL in ClickHouse


def test_watermark_delay_is_unknown_until_every_shard_has_a_watermark() -> None:
    clock = Clock()
    logic = HealthLogic("run", 10_000, clock)
    start = -(2**62)  # a shard still waiting for a partition it never heard from
    logic.on_batch(
        [
            _item(**{"in": 5, "dead": 0, "max_ts": 9_000}),
            _item(shard="s0", latency_ms=1.0, late=0, watermark=8_000, open=1, bytes=10),
            _item(shard="s1", latency_ms=1.0, late=0, watermark=start, open=0, bytes=10),
        ]
    )
    (block,), _ = logic.on_eof()
    assert block.columns["watermark_delay_ms"][0] == -1


def test_a_quiet_shard_keeps_its_state_and_its_watermark_in_later_intervals() -> None:
    """Shard s0 reports once and goes quiet: later rows still count its open instances and
    state, and its watermark, the slowest, still sets the delay."""
    clock = Clock()
    logic = HealthLogic("run", 10_000, clock)
    logic.on_batch(
        [
            _item(**{"in": 5, "dead": 0, "max_ts": 50_000}),
            _item(shard="s0", latency_ms=1.0, late=0, watermark=40_000, open=10_000, bytes=9_000),
            _item(shard="s1", latency_ms=1.0, late=0, watermark=49_000, open=10, bytes=100),
        ]
    )
    clock.now += 10_000
    logic.on_batch([])
    logic.on_batch(
        [
            _item(**{"in": 5, "dead": 0, "max_ts": 60_000}),
            _item(shard="s1", latency_ms=1.0, late=0, watermark=59_000, open=12, bytes=100),
        ]
    )
    clock.now += 10_000
    (block,), _ = logic.on_notify()
    row = {k: v[0] for k, v in block.columns.items()}
    assert (row["open_instances"], row["state_bytes"]) == (10_012, 9_100)
    assert row["watermark_delay_ms"] == 60_000 - 40_000


def test_redis_outages_sum_per_interval_and_waiting_decisions_hold_per_shard() -> None:
    """Outages are counted in the interval they were met; decisions waiting for Redis are a
    level: each shard's latest report, kept while the shard is quiet."""
    clock = Clock()
    logic = HealthLogic("run", 10_000, clock)
    shard = {"latency_ms": 1.0, "late": 0, "watermark": 1, "open": 0, "bytes": 0}
    logic.on_batch(
        [
            _item(shard="s0", redis_outages=1, redis_waiting=40, **shard),
            _item(shard="s1", redis_outages=1, redis_waiting=2, **shard),
            _item(shard="s0", redis_outages=0, redis_waiting=30, **shard),
        ]
    )
    clock.now += 10_000
    (block,), _ = logic.on_notify()
    assert (block.columns["redis_outages"][0], block.columns["decisions_waiting"][0]) == (2, 32)
    logic.on_batch([_item(shard="s1", redis_outages=0, redis_waiting=0, **shard)])
    clock.now += 10_000
    (block,), _ = logic.on_notify()
    assert (block.columns["redis_outages"][0], block.columns["decisions_waiting"][0]) == (0, 30)


def test_the_logic_of_an_earlier_process_goes_at_its_first_notify() -> None:
    """The step is keyed by host:pid:thread, and Bytewax restores every key it snapshotted:
    after each crash or restart the old process's key came back as a logic that never gets
    an item, and wrote a row of zeros for worker '' each interval for ever."""
    clock = Clock()
    ghost = HealthLogic("run", 10_000, clock)  # restored: no item ever comes to it
    clock.now += 10_000
    assert ghost.on_notify() == ([], ghost.DISCARD)
    live = HealthLogic("run", 10_000, clock)
    live.on_batch([_item(**{"in": 5, "dead": 0, "max_ts": 1})])
    clock.now += 10_000
    (block,), retain = live.on_notify()
    assert retain == live.RETAIN and block.columns["worker"][0] == "host:1:w0"
