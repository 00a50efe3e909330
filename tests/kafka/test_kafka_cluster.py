"""Cluster mode on a real broker: 2 processes give the same interventions as 1."""

import sys
from pathlib import Path

import orjson
import pytest

from ato import cli
from ato.catalog import load_catalog
from ato.config import GeneratorSettings
from ato.devservers import Server, create_topics
from ato.generator import generate
from ato.runner import truth_ids
from tests.kafka.conftest import consume_all, produce, run_with_kills


def _config(tmp_path: Path, brokers: str, stem: str, out: str) -> Path:
    path = tmp_path / f"{out}.toml"
    path.write_text(
        f'out_dir = "{tmp_path / out}"\n'
        "[engine]\nepoch_interval_s = 1.0\n"
        f'[kafka]\nbrokers = "{brokers}"\ninput_topics = ["{stem}.in"]\n'
        f'interventions_topic = "{stem}.{out}"\ndead_letter_topic = "{stem}.dlq"\n'
        "stop_at_end = true\nend_wait_ms = 20\n"
    )
    return path


@pytest.mark.parametrize("partitions", [6, 3])
def test_two_processes_equal_one(
    broker: Server, tmp_path: Path, partitions: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """6 partitions split 3 + 3, and 3 split unevenly 2 + 1 (bytewax#556): same ids as 1 process."""
    stem = f"cluster{partitions}"
    create_topics(
        broker.address,
        {f"{stem}.in": partitions, f"{stem}.one": 1, f"{stem}.two": 1, f"{stem}.dlq": 1},
    )
    cfg = GeneratorSettings(clients=3_000, partitions=partitions, span_s=6 * 3600, seed=5)
    traffic = generate(load_catalog(), cfg)
    rows = [(i, line) for i, lines in enumerate(traffic.partitions.values()) for line in lines]
    produce(broker.address, f"{stem}.in", rows)

    assert cli.main(["run", "--config", str(_config(tmp_path, broker.address, stem, "one"))]) == 0
    two = _config(tmp_path, broker.address, stem, "two")
    assert cli.main(["run", "--config", str(two), "--processes", "2"]) == 0
    summary = orjson.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["processes"] == 2 and summary["events"] == len(rows)

    def ids(topic: str) -> list[str]:
        return [
            orjson.loads(m.value())["intervention_id"] for m in consume_all(broker.address, topic)
        ]

    one_ids, two_ids = ids(f"{stem}.one"), ids(f"{stem}.two")
    assert sorted(two_ids) == sorted(one_ids)
    assert set(one_ids) == truth_ids(traffic)


def test_a_cluster_killed_twice_and_resumed_emits_every_id(broker: Server, tmp_path: Path) -> None:
    """Two processes sharing a recovery directory, SIGKILLed together (the whole process
    group) while they produce, then restarted: every ground-truth id reaches the topic and no
    other. The first process clears the snapshots of unfinished epochs before each resume."""
    stem = "clusterkill"
    create_topics(broker.address, {f"{stem}.in": 4, f"{stem}.out": 1, f"{stem}.dlq": 1})
    cfg = GeneratorSettings(clients=6_000, partitions=4, span_s=12 * 3600, seed=11)
    traffic = generate(load_catalog(), cfg)
    rows = [(i, line) for i, lines in enumerate(traffic.partitions.values()) for line in lines]
    produce(broker.address, f"{stem}.in", rows)
    config = tmp_path / "kill.toml"
    config.write_text(
        f'out_dir = "{tmp_path / "out"}"\n'
        "[engine]\nbatch_size = 2000\nepoch_interval_s = 0.3\n"
        f'[kafka]\nbrokers = "{broker.address}"\ninput_topics = ["{stem}.in"]\n'
        f'interventions_topic = "{stem}.out"\ndead_letter_topic = "{stem}.dlq"\n'
        "stop_at_end = true\nend_wait_ms = 20\n"
    )
    argv = [sys.executable, "-m", "ato.cli", "run", "--config", str(config), "--processes", "2"]
    argv += ["--recovery-dir", str(tmp_path / "recovery")]
    expected = truth_ids(traffic)
    thresholds = [0.3 * len(expected), 0.6 * len(expected)]
    kills = run_with_kills(argv, broker.address, f"{stem}.out", thresholds, max_starts=8)
    assert kills == 2, f"only {kills} kills fell inside the run"
    seen = {
        orjson.loads(m.value())["intervention_id"]
        for m in consume_all(broker.address, f"{stem}.out")
    }
    assert seen == expected
