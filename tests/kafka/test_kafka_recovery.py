"""Crash safety on a real broker: SIGKILL the flow at random points, restart, compare.

Every intervention id of an uninterrupted run must reach the topic, and no other id may;
the same id more than once (replayed epochs) is allowed, counted and reported. The metrics
each run wrote to its embedded ClickHouse must agree too: nothing counted twice or lost.
"""

import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson

from ato.catalog import load_catalog
from ato.config import GeneratorSettings
from ato.devservers import Server, create_topics
from ato.generator import generate
from sinks.clickhouse import ClickHouseStore
from tests.kafka.conftest import consume_all, produce, run_with_kills

KILLS = 3
MAX_RESTARTS = 12


def _config(tmp_path: Path, brokers: str, out_topic: str) -> Path:
    path = tmp_path / f"{out_topic}.toml"
    path.write_text(
        f'out_dir = "{tmp_path / out_topic}"\n'
        # small batches and short epochs: many snapshots for the kills to fall between
        "[engine]\nbatch_size = 2000\nepoch_interval_s = 0.3\n"
        f'[kafka]\nbrokers = "{brokers}"\ninput_topics = ["recovery.in"]\n'
        f'interventions_topic = "{out_topic}"\ndead_letter_topic = "recovery.dlq"\n'
        "stop_at_end = true\nend_wait_ms = 20\n"
    )
    return path


def _argv(config: Path, recovery: Path) -> list[str]:
    run = [sys.executable, "-m", "ato.cli", "run", "--config", str(config)]
    return [*run, "--recovery-dir", str(recovery)]


def _start(config: Path, recovery: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        _argv(config, recovery), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _ids(brokers: str, topic: str) -> list[str]:
    return [orjson.loads(m.value())["intervention_id"] for m in consume_all(brokers, topic)]


def test_sigkill_at_random_points_loses_and_invents_nothing(broker: Server, tmp_path: Path) -> None:
    create_topics(
        broker.address,
        {"recovery.in": 4, "recovery.whole": 1, "recovery.killed": 1, "recovery.dlq": 1},
    )
    cfg = GeneratorSettings(clients=12_000, partitions=4, span_s=12 * 3600, seed=3)
    traffic = generate(load_catalog(), cfg)
    rows = [(i, line) for i, lines in enumerate(traffic.partitions.values()) for line in lines]
    produce(broker.address, "recovery.in", rows)

    whole_config = _config(tmp_path, broker.address, "recovery.whole")
    assert _start(whole_config, tmp_path / "rec-whole").wait(300) == 0
    whole = _ids(broker.address, "recovery.whole")
    assert len(whole) == len(set(whole)) > 100

    # Kill when the output topic holds a random share of the expected interventions: the
    # kills fall while the flow is producing, not during start-up or after the end.
    killed_config = _config(tmp_path, broker.address, "recovery.killed")
    recovery = tmp_path / "rec-killed"
    rnd = random.Random(20261122)
    thresholds = sorted(rnd.uniform(0.1, 0.9) * len(whole) for _ in range(KILLS))
    argv = _argv(killed_config, recovery)
    kills = run_with_kills(argv, broker.address, "recovery.killed", thresholds, MAX_RESTARTS)
    assert kills >= 2, f"only {kills} kills fell inside the run: too little was tested"

    seen = Counter(_ids(broker.address, "recovery.killed"))
    assert set(seen) == set(whole)  # nothing lost, nothing invented
    duplicates = sum(seen.values()) - len(seen)
    print(f"\nrecovery: {kills} SIGKILLs, {len(seen)} ids, {duplicates} duplicates on the wire")
    whole_metrics = _metrics(tmp_path / "recovery.whole")
    killed_metrics = _metrics(tmp_path / "recovery.killed")
    assert whole_metrics["stalls"] == {(i,) for i in whole}
    for name, rows in whole_metrics.items():
        assert killed_metrics[name] == rows, name


METRIC_QUERIES = {
    "stalls": "SELECT intervention_id FROM stalls FINAL",
    "decisions": "SELECT intervention_id, decision FROM decisions FINAL",
    "outcomes": "SELECT intervention_id, outcome, resolved_at FROM outcomes FINAL",
    "funnel": (
        "SELECT minute, journey, step, channel, segment, sum(events), sum(started),"
        " sum(advanced), sum(completed), sum(abandoned) FROM funnel_minute FINAL"
        " GROUP BY ALL"
    ),
    "funnel_raw_rows": "SELECT count() FROM funnel_minute FINAL",
}


def _metrics(out_dir: Path) -> dict[str, set[tuple]]:
    """What one run's embedded ClickHouse holds, as sets of rows."""
    with ClickHouseStore(f"chdb://{out_dir / 'clickhouse'}") as store:
        return {name: set(store.query(sql)[1]) for name, sql in METRIC_QUERIES.items()}
