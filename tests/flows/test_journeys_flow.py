"""The whole journey flow through Bytewax: workers, stream-vs-batch, ground truth, recovery."""

import base64
import random
from datetime import timedelta
from pathlib import Path

import numpy as np
import orjson
import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main
from reference import reference_ids

from ato.catalog import Catalog, load_catalog, parse_catalog
from ato.columns import EventColumns
from ato.config import GeneratorSettings, Settings
from ato.generator import GeneratedTraffic, generate
from ato.runner import truth_deadlines, truth_ids
from flows.journeys import FlowSinks, build_flow, late_docs, warn_of_short_live_state_ttl
from operators.batches import RawBatch

CATALOG = load_catalog()
SETTINGS = Settings().with_overrides("engine", shards=8, batch_size=500)


def _traffic(clients: int = 1500, seed: int = 3, partitions: int = 2) -> GeneratedTraffic:
    cfg = GeneratorSettings(clients=clients, seed=seed, partitions=partitions, disorder_ms=400)
    return generate(CATALOG, cfg)


def _batches(traffic: GeneratedTraffic, size: int = 500) -> list[RawBatch]:
    """Raw batches interleaving the partitions round-robin, as a source would deliver them."""
    out: list[RawBatch] = []
    cursors = dict.fromkeys(traffic.partitions, 0)
    while any(cursors[p] < len(traffic.partitions[p]) for p in cursors):
        for p, lines in traffic.partitions.items():
            start = cursors[p]
            if start < len(lines):
                out.append(RawBatch(p, lines[start : start + size], start))
                cursors[p] = start + size
    return out


def _run(
    items: list,
    partitions: list[str],
    workers: int = 1,
    recovery: RecoveryConfig | None = None,
    settings: Settings = SETTINGS,
    catalog: Catalog = CATALOG,
) -> tuple[list[dict], list[bytes], list[bytes]]:
    interventions: list = []
    dead: list = []
    late: list = []
    progress: list = []
    sinks = FlowSinks(
        TestingSink(interventions), TestingSink(dead), TestingSink(late), TestingSink(progress)
    )
    flow = build_flow(TestingSource(items), sinks, settings, catalog, partitions=partitions)
    epoch = timedelta(milliseconds=0) if recovery else timedelta(seconds=10)
    if workers == 1:
        run_main(flow, epoch_interval=epoch, recovery_config=recovery)
    else:
        cluster_main(flow, [], 0, epoch_interval=epoch, worker_count_per_proc=workers)
    docs = [orjson.loads(line) for line in _lines(interventions)]
    return docs, _lines(dead), _lines(late)


def _lines(blocks: list[tuple[str, bytes]]) -> list[bytes]:
    """The JSON lines of the blocks a line output received."""
    lines = [line for _, block in blocks for line in block.split(b"\n")[:-1]]
    assert all(block.endswith(b"\n") for _, block in blocks)
    return lines


def _ids(docs: list[dict]) -> set[str]:
    return {d["intervention_id"] for d in docs}


def _stable(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "emitted_at_ms"}


@pytest.fixture(scope="module")
def traffic() -> GeneratedTraffic:
    return _traffic()


def test_flow_finds_exactly_the_generated_stalls(traffic: GeneratedTraffic) -> None:
    """Precision and recall are 1.0 against the generator's ground truth."""
    docs, dead, late = _run(_batches(traffic), list(traffic.partitions))
    truth = truth_ids(traffic)
    assert len(truth) > 100
    assert _ids(docs) == truth
    # at the deadlines the catalog defines (abandon signals shorten some), not only the ids
    assert {d["intervention_id"]: d["deadline_ts"] for d in docs} == truth_deadlines(traffic)
    assert len(docs) == len(truth), "each stall is emitted once"
    assert dead == [] and late == []
    journeys = {d["journey"] for d in docs}
    assert journeys == {j.name for j in CATALOG.journeys}, "stalls in every catalog journey"


def test_steps_no_event_type_maps_to() -> None:
    """A step without ``on`` (events reach it by naming journey and step) is generated and
    detected like any other: the generator used to crash on such a catalog."""
    raw = {
        "journeys": [
            {
                "name": "loan",
                "abandon": {"app_bg": "1m"},
                "steps": [
                    {"name": "apply", "timeout": "10m"},
                    {"name": "offer", "on": [], "timeout": "1h"},
                    {"name": "sign", "on": ["loan_sign"], "timeout": "5m"},
                    {"name": "done", "terminal": "success"},
                ],
            }
        ]
    }
    catalog = parse_catalog(raw, "<no-on>")
    cfg = GeneratorSettings(clients=300, seed=5, partitions=2, disorder_ms=400)
    traffic = generate(catalog, cfg)
    docs, dead, _ = _run(_batches(traffic), list(traffic.partitions), catalog=catalog)
    truth = truth_ids(traffic)
    assert {d["step"] for d in docs} == {"apply", "offer", "sign"}
    assert _ids(docs) == truth and len(docs) == len(truth) > 20
    assert dead == []


USER_CATALOGS = {
    # the errors, calls and sessions it sends are types a journey gives a meaning to
    "error_abandons": {
        "features": {"error_types": ["error"], "call_types": ["call_started"]},
        "journeys": [
            {
                "name": "card",
                "abandon": {"error": "30s"},
                "steps": [
                    {"name": "apply", "on": ["card_apply"], "timeout": "10m"},
                    {"name": "verify", "on": ["call_started"], "timeout": "1h"},
                    {"name": "done", "on": ["card_done"], "terminal": "success"},
                ],
            }
        ],
    },
    # steps of under 2 ms, and an attribution window of 1 ms: no resume fits in it
    "tiny_times": {
        "journeys": [
            {
                "name": "quick",
                "close_after": "1ms",
                "steps": [
                    {"name": "a", "on": ["q_a"], "timeout": "1ms"},
                    {"name": "b", "on": ["q_b"], "timeout": "5ms"},
                    {"name": "ok", "on": ["q_ok"], "terminal": "success"},
                    {"name": "c", "on": ["q_c"], "timeout": "3ms"},
                ],
            }
        ],
    },
}


@pytest.mark.parametrize("name", sorted(USER_CATALOGS))
def test_the_ground_truth_holds_for_user_catalogs(name: str) -> None:
    """The generator's truth (ids and deadlines) equals what the flow finds on catalogs
    whose event types or times it used to get wrong: it sent ``error`` and ``call_started``
    whatever the catalog made of them, and made progress within the same millisecond, or a
    resume after the instance had closed."""
    catalog = parse_catalog(USER_CATALOGS[name], f"<{name}>")
    cfg = GeneratorSettings(clients=400, seed=5, partitions=2, disorder_ms=0)
    traffic = generate(catalog, cfg)
    docs, dead, _ = _run(_batches(traffic), list(traffic.partitions), catalog=catalog)
    found = {d["intervention_id"]: d["deadline_ts"] for d in docs}
    assert found == truth_deadlines(traffic) and len(found) > 20
    assert dead == []


def test_one_and_two_workers_give_identical_interventions(traffic: GeneratedTraffic) -> None:
    """Keying by shard, not by worker: the same documents whatever the worker count."""
    items = _batches(traffic)
    one, _, _ = _run(items, list(traffic.partitions), workers=1)
    two, _, _ = _run(items, list(traffic.partitions), workers=2)
    assert sorted(map(_stable, one), key=lambda d: d["intervention_id"]) == sorted(
        map(_stable, two), key=lambda d: d["intervention_id"]
    )


def test_two_lanes_side_by_side_give_identical_interventions(
    traffic: GeneratedTraffic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shards in two lanes, updated side by side on every call, also with two workers (which
    share the process's helper threads): the documents of one lane."""
    monkeypatch.setattr("operators.shard_step.SIDE_BY_SIDE_EVENTS", 0)
    items = _batches(traffic)
    laned = SETTINGS.with_overrides("engine", lanes=2)
    one, _, _ = _run(items, list(traffic.partitions))
    for workers in (1, 2):
        two, _, _ = _run(items, list(traffic.partitions), workers=workers, settings=laned)
        assert sorted(map(_stable, one), key=lambda d: d["intervention_id"]) == sorted(
            map(_stable, two), key=lambda d: d["intervention_id"]
        )


def test_stream_equals_batch_reference_with_shuffled_arrival() -> None:
    """Arrival shuffled within the allowed lateness: same ids as the batch reference detector."""
    traffic = _traffic(clients=1200, seed=11, partitions=3)
    rng = random.Random(5)
    lateness = SETTINGS.engine.allowed_lateness_ms
    messages: list[bytes] = []
    for lines in traffic.partitions.values():
        messages.extend(lines)
    ts = [orjson.loads(m)["ts"] for m in messages]
    # arrival = event time + up to the lateness: no event is behind the watermark on arrival
    order = sorted(range(len(messages)), key=lambda i: ts[i] + rng.random() * (lateness - 1))
    shuffled = [messages[i] for i in order]
    items = [RawBatch("only", shuffled[k : k + 300], k) for k in range(0, len(shuffled), 300)]
    docs, _, late = _run(items, ["only"])
    assert late == []
    expected = reference_ids(messages, CATALOG)
    assert len(expected) > 100
    assert _ids(docs) == expected
    assert _ids(docs) == truth_ids(traffic)


def test_late_events_are_counted_and_routed(traffic: GeneratedTraffic) -> None:
    """An event far behind the watermark comes out on the late output, not silently dropped."""
    items = _batches(traffic)
    first = orjson.loads(traffic.partitions["gen-0"][0])
    stale = dict(first, event_id="stale-1", ts=first["ts"] - 1)
    last = orjson.loads(traffic.partitions["gen-0"][-1])
    # in a batch with other clients' events: its shard's rows are not the batch's
    fresh = [orjson.dumps(dict(last, event_id=f"f{k}", client_id=f"f{k}")) for k in range(6)]
    items.append(RawBatch("gen-0", [*fresh[:5], orjson.dumps(stale), fresh[5]], 10**9))
    _, _, late = _run(items, list(traffic.partitions))
    assert len(late) == 1
    doc = orjson.loads(late[0])
    assert doc["client_id"] == first["client_id"]
    assert base64.b64decode(doc["raw_b64"]) == orjson.dumps(stale)  # the original bytes
    assert (doc["partition"], doc["offset"]) == ("gen-0", 10**9 + 5)  # where to find it


def test_late_documents_name_the_partition_of_each_event() -> None:
    """Late rows of several partitions in one output each name their own; on the Kafka path a
    partition (``topic#N``) also gives topic and number, as dead letters do."""
    events = EventColumns(
        np.arange(3, dtype=np.uint64), np.array([b"a", b"b", b"c"]), np.array([5, 6, 7]),
        np.zeros(3, np.int8), np.zeros(3, np.int32), np.full(3, -1, np.int16),
        np.full(3, -1, np.int16), np.zeros(3, np.int8), None, np.array([10, 11, 40]),
    )  # fmt: skip
    docs = late_docs(events, 100, (("events#0", 2), ("events#3", 1)), kafka=True)
    assert [(d["partition"], d["offset"], d["client_id"]) for d in docs] == [
        ("events#0", 10, "a"), ("events#0", 11, "b"), ("events#3", 40, "c"),
    ]  # fmt: skip
    assert [(d["source_topic"], d["source_partition"]) for d in docs] == [
        ("events", 0), ("events", 0), ("events", 3),
    ]  # fmt: skip
    assert "source_topic" not in late_docs(events, 100, (("file.jsonl", 3),))[0]
    # a file named like a Kafka partition is no Kafka partition (the file outputs)
    assert "source_topic" not in late_docs(events, 100, (("events#7", 3),))[0]


def test_recovery_after_abort_emits_the_uninterrupted_ids(
    tmp_path: Path, traffic: GeneratedTraffic
) -> None:
    """Abort mid-run, resume from the recovery store: the union of ids equals a clean run's."""
    items = _batches(traffic, size=400)
    partitions = list(traffic.partitions)
    clean, _, _ = _run(items, partitions)
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    cut = len(items) // 2
    with_abort = [*items[:cut], TestingSource.ABORT(), *items[cut:]]
    first, _, _ = _run(with_abort, partitions, recovery=recovery)
    assert 0 < len(first) < len(clean)
    second, _, _ = _run(with_abort, partitions, recovery=recovery)
    assert _ids(first) | _ids(second) == _ids(clean)


def test_recovery_with_lanes_emits_the_uninterrupted_ids(
    tmp_path: Path, traffic: GeneratedTraffic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The abort-and-resume test with shards in two lanes side by side."""
    monkeypatch.setattr("operators.shard_step.SIDE_BY_SIDE_EVENTS", 0)
    laned = SETTINGS.with_overrides("engine", lanes=2)
    items = _batches(traffic, size=400)
    partitions = list(traffic.partitions)
    clean, _, _ = _run(items, partitions)
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    with_abort = [*items[: len(items) // 2], TestingSource.ABORT(), *items[len(items) // 2 :]]
    first, _, _ = _run(with_abort, partitions, recovery=recovery, settings=laned)
    assert 0 < len(first) < len(clean)
    second, _, _ = _run(with_abort, partitions, recovery=recovery, settings=laned)
    assert _ids(first) | _ids(second) == _ids(clean)


def test_a_run_cut_short_and_resumed_emits_the_uninterrupted_ids(
    tmp_path: Path, traffic: GeneratedTraffic
) -> None:
    """Input cut by --duration-s in a run with recovery is a pause: nothing is flushed at its
    end, so the resumed run neither stalls clients whose events it had not read yet nor
    counts events within the lateness as late. One partition runs 4 batches ahead, as a
    consumer catching up would."""
    partitions = list(traffic.partitions)
    a, b = ([x for x in _batches(traffic, 200) if x.partition == p] for p in partitions)
    items = []
    for i in range(max(len(a), len(b))):
        items += a[i : i + 1] + (b[i - 4 : i - 3] if i >= 4 else [])
    items += b[len(a) - 4 :]
    clean, _, clean_late = _run(items, partitions)
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    got, late = [], []
    half = len(items) // 2
    # the runner's sources end a partition --duration-s stopped with a cut batch; the resumed
    # source reads on after that position (an empty batch stands in for it)
    cut = [*items[:half], RawBatch("p0", [], cut=True)]
    rest = [*items[:half], RawBatch("p0", []), *items[half:]]
    for source in (TestingSource(cut), TestingSource(rest)):
        docs: list = []
        lines: list = []
        sinks = FlowSinks(TestingSink(docs), TestingSink([]), TestingSink(lines), TestingSink([]))
        flow = build_flow(source, sinks, SETTINGS, CATALOG, partitions=partitions)
        run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery)
        got += [orjson.loads(line) for line in _lines(docs)]
        late += _lines(lines)
    assert _ids(got) == _ids(clean)
    assert len(late) == len(clean_late)


def test_a_live_state_ttl_shorter_than_an_instance_stays_open_is_warned_of(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An instance is written at its stall, then not until it closes (the shipped catalog's
    insurance journey: 14 days later): a shorter TTL lets its field expire while it is open."""
    assert not warn_of_short_live_state_ttl(Settings().redis.live_state_ttl_s, CATALOG)
    assert warn_of_short_live_state_ttl(7 * 86_400, CATALOG)
    assert "shorter than the catalog's longest step timeout or close_after (1209600 s)" in (
        caplog.text
    )
