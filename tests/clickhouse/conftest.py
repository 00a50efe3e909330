"""A real embedded ClickHouse (chDB) for the ClickHouse tests, and sample metric blocks.

chDB runs one database directory per process, and a directory can be open in one process
at a time. So the tests of this package share one directory, kept open by a client for the
package (the engine starts once, ~0.3 s), and each test works in its own database; the
package's client is closed when the package is done, so later tests may open other
directories (every `ato run` opens ``<out_dir>/clickhouse``).
"""

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ato.config import ClickHouseSettings
from sinks.clickhouse import ClickHouseStore, MetricBlock

T0 = 1_767_600_000_000  # 2026-01-05 08:00 UTC, epoch ms
MINUTE = 60_000


@pytest.fixture(scope="package")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The package's chDB directory, held open for the package."""
    path = tmp_path_factory.mktemp("chdb") / "clickhouse"
    keeper = ClickHouseStore(f"chdb://{path}", "default")
    try:
        yield path
    finally:
        keeper.close()


@pytest.fixture
def url(chdb_dir: Path) -> str:
    """The URL of the package's chDB directory."""
    return f"chdb://{chdb_dir}"


@pytest.fixture
def database(url: str) -> Iterator[str]:
    """A fresh database name for one test; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with ClickHouseStore(url, name) as store:
        store.client.command(f"DROP DATABASE IF EXISTS {name} SYNC")


@pytest.fixture
def store(url: str, database: str) -> Iterator[ClickHouseStore]:
    """A migrated store on the test's database."""
    with ClickHouseStore(url, database) as opened:
        opened.migrate()
        yield opened


def settings(database: str, **values: object) -> ClickHouseSettings:
    """ClickHouse settings of a test's database."""
    return ClickHouseSettings(database=database, **values)  # type: ignore[arg-type]


def _pick(rng: np.random.Generator, names: list[str], n: int) -> np.ndarray:
    return np.array(names, dtype=object)[rng.integers(0, len(names), n)]


def funnel_block(n: int, seed: int = 0, first_minute: int = 0) -> MetricBlock:
    """``n`` funnel rows with distinct keys (minute, journey, step, channel, segment).

    Blocks with first minutes ``36 * n`` apart have no key in common.
    """
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    counts = {
        name: rng.integers(0, 50, n).astype(np.int64)
        for name in ("events", "started", "advanced", "completed", "abandoned")
    }
    return MetricBlock(
        "funnel_minute",
        {
            "minute": (T0 + (first_minute + i // 36) * MINUTE).astype(np.int64),
            "journey": np.array(["open_account", "wealth_purchase", "loan_application"])[i % 3],
            "step": np.array(["start", "kyc", "confirm"], dtype=object)[(i // 3) % 3],
            "channel": np.array(["app", "call"], dtype=object)[(i // 9) % 2],
            "segment": np.array(["seniors", "executives"], dtype=object)[(i // 18) % 2],
            **counts,
        },
    )


def _ids(prefix: str, n: int) -> np.ndarray:
    return np.array([f"{prefix}-{k:08d}-0000-0000-0000-000000000000" for k in range(n)], object)


def stall_block(n: int, seed: int = 0) -> MetricBlock:
    """``n`` stalls with distinct intervention ids."""
    rng = np.random.default_rng(seed)
    deadline = T0 + rng.integers(0, 6 * 3_600_000, n)
    start = deadline - rng.integers(60_000, 600_000, n)
    return MetricBlock(
        "stalls",
        {
            "intervention_id": _ids("a", n),
            "client_id": np.array([f"C{k % 997:06d}" for k in range(n)], dtype=object),
            "journey": _pick(rng, ["open_account", "wealth_purchase"], n),
            "step": _pick(rng, ["kyc", "confirm"], n),
            "step_index": rng.integers(0, 5, n),
            "attempt": rng.integers(1, 4, n),
            "segment": _pick(rng, ["seniors", "executives", "unknown"], n),
            "tier": _pick(rng, ["ai", "remote", "offline"], n),
            "priority": rng.uniform(0, 100, n),
            "instance_start": start,
            "deadline": deadline,
            "last_progress": deadline - 30_000,
            "last_event_type": _pick(rng, ["otp_sent", "page_view"], n),
            "last_channel": _pick(rng, ["app", "call", "branch"], n),
            "events": rng.integers(1, 20, n),
            "errors": rng.integers(0, 3, n),
            "back_steps": rng.integers(0, 3, n),
            "channel_switches": rng.integers(0, 3, n),
            "time_on_step_ms": rng.integers(0, 100_000, n),
            "elapsed_ms": deadline - start,
            "recent_calls": rng.uniform(0, 2, n),
            "recent_sessions": rng.uniform(0, 5, n),
            "emitted_at": np.full(n, T0 + 86_400_000, np.int64),
        },
    )


def decision_block(n: int, seed: int = 0) -> MetricBlock:
    """``n`` decisions: sent, deferred (quiet_hours) and suppressed (resumed)."""
    rng = np.random.default_rng(seed)
    kind = np.arange(n) % 3
    return MetricBlock(
        "decisions",
        {
            "intervention_id": _ids("d", n),
            "client_id": np.array([f"C{k:06d}" for k in range(n)], dtype=object),
            "journey": _pick(rng, ["open_account", "wealth_purchase"], n),
            "step": _pick(rng, ["kyc", "confirm"], n),
            "attempt": np.ones(n, np.int64),
            "segment": _pick(rng, ["seniors", "executives"], n),
            "decision": np.array(["sent", "deferred", "suppressed"], dtype=object)[kind],
            "reason": np.array(["", "quiet_hours", "resumed"], dtype=object)[kind],
            "tier": _pick(rng, ["ai", "remote"], n),
            "channel": np.array(["push", "", ""], dtype=object)[kind],
            "rm_id": np.array(["RM0007", "", ""], dtype=object)[kind],
            "priority": rng.uniform(0, 100, n),
            "decided_at": T0 + rng.integers(0, 3 * 3_600_000, n),
            "emitted_at": np.full(n, T0 + 86_400_000, np.int64),
        },
    )


def outcome_block(n: int, seed: int = 0) -> MetricBlock:
    """``n`` outcomes; the lapsed and failed ones have no time to recovery (-1)."""
    rng = np.random.default_rng(seed)
    kind = np.arange(n) % 4
    recovered = kind < 2
    stalled = T0 + rng.integers(0, 3 * 3_600_000, n)
    took = rng.integers(1_000, 900_000, n)
    return MetricBlock(
        "outcomes",
        {
            "intervention_id": _ids("o", n),
            "client_id": np.array([f"C{k:06d}" for k in range(n)], dtype=object),
            "journey": _pick(rng, ["open_account", "wealth_purchase"], n),
            "step": _pick(rng, ["kyc", "confirm"], n),
            "attempt": np.ones(n, np.int64),
            "segment": _pick(rng, ["seniors", "executives"], n),
            "tier": _pick(rng, ["ai", "remote"], n),
            "stalled_at": stalled,
            "outcome": np.array(["progressed", "completed", "failed", "lapsed"], object)[kind],
            "recovered": recovered.astype(np.uint8),
            "resolved_at": stalled + took,
            "time_to_recovery_ms": np.where(recovered, took, -1),
            "recovery_channel": np.where(recovered, "app", "").astype(object),
        },
    )


def health_block(n: int, seed: int = 0, run_id: str = "run-1") -> MetricBlock:
    """``n`` health rows of two workers, 10 s apart; every third has no Kafka lag (-1)."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    return MetricBlock(
        "flow_health",
        {
            "interval_start": (T0 + (i // 2) * 10_000).astype(np.int64),
            "run_id": np.full(n, run_id, dtype=object),
            "worker": np.array(["host:1:w0", "host:1:w1"], dtype=object)[i % 2],
            "events_in": rng.integers(0, 1_000_000, n),
            "batches": rng.integers(0, 20, n),
            "decode_errors": rng.integers(0, 3, n),
            "late_events": rng.integers(0, 3, n),
            "watermark_delay_ms": rng.integers(0, 2_000, n),
            "kafka_lag": np.where(i % 3 == 0, -1, rng.integers(0, 10_000, n)),
            "batch_latency_p50_ms": rng.uniform(0, 10, n),
            "batch_latency_p99_ms": rng.uniform(10, 50, n),
            "batch_latency_max_ms": rng.uniform(50, 90, n),
            "open_instances": rng.integers(0, 100_000, n),
            "state_bytes": rng.integers(0, 10**9, n),
            "redis_outages": rng.integers(0, 2, n),
            "decisions_waiting": rng.integers(0, 500, n),
        },
    )


BLOCKS = {
    "funnel_minute": funnel_block,
    "stalls": stall_block,
    "decisions": decision_block,
    "outcomes": outcome_block,
    "flow_health": health_block,
}
