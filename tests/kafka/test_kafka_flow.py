"""End to end on a real broker: generator -> input topic -> `ato run --config` -> topics."""

import base64
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import jsonschema
import orjson
import pytest
from confluent_kafka import Message

from ato import cli
from ato.catalog import load_catalog
from ato.config import GeneratorSettings, KafkaSettings
from ato.generator import GeneratedTraffic, generate
from ato.recovery_dir import prepare_recovery_dir
from ato.runner import truth_ids
from operators.batches import RAW_KEPT_BYTES
from operators.interventions import SCHEMA
from sources.kafka import absent_topics, reached_metadata
from tests.kafka.conftest import consume_all, produce

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "ato" / "schemas" / "intervention.schema.json"
HUGE = b"[" * 800_000  # whole, as base64 in a dead letter, it passed Kafka's 1 MB limit
BAD = [
    b"{not json",
    b'{"event_id":"e1","client_id":"c1","ts":"soon","channel":"app","type":"x"}',
    HUGE,
]


@pytest.fixture(scope="module")
def traffic() -> GeneratedTraffic:
    cfg = GeneratorSettings(clients=1_500, partitions=3, span_s=6 * 3600, seed=11)
    return generate(load_catalog(), cfg)


def load_input(settings: KafkaSettings, traffic: GeneratedTraffic) -> int:
    """Generator partition i -> input partition i, then the bad messages on partition 0."""
    topic = settings.input_topics[0]
    rows = [(i, line) for i, lines in enumerate(traffic.partitions.values()) for line in lines]
    produce(settings.brokers, topic, rows + [(0, bad) for bad in BAD])
    return len(traffic.partitions["gen-0"])  # offset of the first bad message


def config_file(tmp_path: Path, settings: KafkaSettings) -> Path:
    path = tmp_path / "kafka.toml"
    path.write_text(
        f'out_dir = "{tmp_path / "out"}"\n'
        "[engine]\nidle_timeout_ms = 60000\n"
        "[kafka]\n"
        f'brokers = "{settings.brokers}"\n'
        f"input_topics = {json.dumps(list(settings.input_topics))}\n"
        f'interventions_topic = "{settings.interventions_topic}"\n'
        f'dead_letter_topic = "{settings.dead_letter_topic}"\n'
        "stop_at_end = true\nend_wait_ms = 20\n"
    )
    return path


def test_ato_run_config_kafka_end_to_end(
    topics: KafkaSettings, traffic: GeneratedTraffic, tmp_path: Path
) -> None:
    """Every ground-truth stall arrives once as a valid message keyed by its client."""
    first_bad = load_input(topics, traffic)
    assert cli.main(["run", "--config", str(config_file(tmp_path, topics))]) == 0

    messages = consume_all(topics.brokers, topics.interventions_topic)
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    ids = []
    for m in messages:
        doc = orjson.loads(m.value())
        validator.validate(doc)
        assert m.key() == doc["client_id"].encode()
        iid = doc["intervention_id"].encode()
        assert _headers(m) == {"schema": SCHEMA.encode(), "intervention_id": iid}
        ids.append(doc["intervention_id"])
    assert len(ids) == len(set(ids))  # an uninterrupted run sends each once
    assert set(ids) == truth_ids(traffic)
    assert len(ids) > 20

    dead = [orjson.loads(m.value()) for m in consume_all(topics.brokers, topics.dead_letter_topic)]
    assert {
        _headers(m)["reason"] for m in consume_all(topics.brokers, topics.dead_letter_topic)
    } == {b"not_json", b"bad_type", b"oversized"}
    assert sorted((d["offset"], d["reason"]) for d in dead) == [
        (first_bad, "not_json"),
        (first_bad + 1, "bad_type"),
        (first_bad + 2, "oversized"),
    ]
    for d in dead:
        assert d["source_topic"] == topics.input_topics[0] and d["source_partition"] == 0
    (huge,) = [d for d in dead if d["reason"] == "oversized"]
    assert huge["raw_truncated"] is True and huge["raw_bytes"] == len(HUGE)
    assert huge["raw_sha256"] == hashlib.sha256(HUGE).hexdigest()
    assert base64.b64decode(huge["raw_b64"]) == HUGE[:RAW_KEPT_BYTES]
    assert all("raw_truncated" not in d for d in dead if d is not huge)


def _headers(m: Message) -> dict[str, bytes]:
    return {k: v for k, v in (m.headers() or []) if isinstance(v, bytes)}


def test_a_missing_output_topic_is_warned_of_at_start(
    topics: KafkaSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker that does not create topics on first use would fail the run at its first
    output; the run says so at start. (Tansu creates them: the run goes on.)"""
    outputs = [topics.interventions_topic, "nobody.made.this"]
    assert absent_topics(reached_metadata(topics), outputs) == ["nobody.made.this"]
    again = reached_metadata(topics)  # reading the metadata made none
    assert absent_topics(again, ["nobody.made.this"]) == ["nobody.made.this"]
    config = config_file(tmp_path, replace(topics, dead_letter_topic="nobody.made.dlq"))
    assert cli.main(["run", "--config", str(config)]) == 0
    assert "output topic 'nobody.made.dlq' does not exist" in caplog.text


def test_start_latest_holds_with_a_recovery_directory_that_has_no_snapshot(
    topics: KafkaSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recovery directory made before the run (as a cluster's parent makes it for its
    processes) or left by a run killed before its first epoch end resumes nothing: the run
    starts at ``kafka.start``. It used to count as a resume and read every partition from
    its start, here the messages written before the run."""
    for bad in BAD:  # one per request: Tansu's end of a partition is its last batch's start
        produce(topics.brokers, topics.input_topics[0], [(0, bad)])
    recovery = tmp_path / "rec"
    prepare_recovery_dir(recovery)
    config = config_file(tmp_path, topics)
    config.write_text(config.read_text() + 'start = "latest"\n')
    assert cli.main(["run", "--config", str(config), "--recovery-dir", str(recovery)]) == 0
    summary = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["events"] == 0 and summary["dead_letters"] == 0, summary
