"""Run the journey flow on the embedded inputs and outputs, and summarise it."""

import logging
import resource
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

import orjson
from bytewax.recovery import RecoveryConfig
from bytewax.testing import cluster_main, run_main

from ato.catalog import Catalog, load_catalog
from ato.config import KafkaSettings, Settings, clickhouse_url
from ato.exceptions import ClusterError, ConfigError, reported_by_ato
from ato.generator import GeneratedTraffic, generate
from ato.panic_text import exit_after_report, panic_text_dropped
from ato.process import tune_gc
from ato.recovery_dir import (
    check_generator_options,
    check_input_files,
    check_input_kind,
    check_input_partitions,
    check_input_topics,
    check_out_dir,
    check_state_layout,
    drop_unfinished_snapshots,
    has_snapshots,
    prepare_recovery_dir,
)
from ato.recovery_dir import live_start_ms as recorded_start_ms
from flows import first_error
from flows.journeys import FlowSinks, build_flow
from operators.decode import wall_ms
from operators.interventions import intervention_id
from operators.route import shard_key
from sinks.clickhouse import ClickHouseSink, ClickHouseStore, request_timeout
from sinks.jsonl import JsonLinesSink
from sinks.kafka import KafkaRecordSink, check_producer_config
from sinks.progress import ProgressSink, RunStats
from sources.generator import GeneratorSource
from sources.jsonl import JsonLinesSource
from sources.kafka import (
    KafkaSource,
    absent_topics,
    check_consumer_config,
    list_partitions,
    reached_metadata,
)

INTERVENTIONS_FILE = "interventions.jsonl"
DEAD_LETTERS_FILE = "dead_letters.jsonl"
LATE_FILE = "late_events.jsonl"
DECISIONS_FILE = "decisions.jsonl"

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run did, for the closing summary."""

    stats: RunStats
    seconds: float
    out_dir: Path | str
    deadlines: dict[str, int] | None  # deadline_ts per written id (None: to Kafka)
    truth_deadlines: dict[str, int] | None  # the deadline of each true stall's id
    decisions: dict[str, str] | None = None  # final decision per id (contact policy, files)
    decided_at: dict[str, int] | None = None  # first decision's time per id (its deadline)
    repeated: int = 0  # intervention lines beyond one per id (the file sink writes each once)
    conflicting: frozenset[str] = frozenset()  # ids written with more than one deadline
    engine: dict[str, int] | None = None  # shards, lanes and batch size the run used

    @property
    def intervention_ids(self) -> set[str] | None:
        """Ids of the interventions written (None when they went to Kafka)."""
        return None if self.deadlines is None else set(self.deadlines)

    @property
    def truth_ids(self) -> set[str] | None:
        """Ids the ground truth expects (None when it does not hold)."""
        return None if self.truth_deadlines is None else set(self.truth_deadlines)

    def summary(self) -> dict[str, Any]:
        """Figures of the run (JSON-ready)."""
        s = self.stats
        out: dict[str, Any] = {
            "events": s.events_in,
            "seconds": round(self.seconds, 2),
            "events_per_s": round(s.events_in / self.seconds) if self.seconds else 0,
            "interventions": (
                s.interventions if self.intervention_ids is None else len(self.intervention_ids)
            ),
            "dead_letters": s.dead_letters,
            **({"repeated_interventions": self.repeated} if self.deadlines is not None else {}),
            "late_events": s.late,
            "open_instances": s.levels.total_open(),
            "state_mb": round(s.levels.total_bytes() / 1e6, 1),
            "outputs": str(self.out_dir),
            **(self.engine or {}),
        }
        detected = self.intervention_ids
        if self.decisions is not None:  # with the policy, every stall has a decision
            out["decisions"] = dict(sorted(Counter(self.decisions.values()).items()))
            out["redis_outages"] = s.redis_outages
            detected = set(self.decisions)
        truth = self.truth_deadlines
        if truth is not None and detected is not None:
            # an id names the stall (client, journey, start, step, attempt), not its time:
            # one raised at another deadline (an abandon signal missed, say) is no hit
            # a decision not sent is checked by its first decision's time: its deadline
            known = {**(self.decided_at or {}), **(self.deadlines or {})}
            true_ids = detected & truth.keys()
            wrong = {i for i in true_ids if i in known and known[i] != truth[i]}
            late_or_early = wrong | (true_ids & self.conflicting)
            hits = len(true_ids) - len(late_or_early)
            found = len(detected)
            out["truth_stalls"] = len(truth)
            out["deadline_mismatches"] = len(late_or_early)
            out["precision"] = round(hits / found, 6) if found else 1.0
            out["recall"] = round(hits / len(truth), 6) if truth else 1.0
        return out


def truth_ids(traffic: GeneratedTraffic) -> set[str]:
    """Intervention ids the generator's detectable stalls should produce."""
    return set(truth_deadlines(traffic))


def truth_deadlines(traffic: GeneratedTraffic) -> dict[str, int]:
    """The deadline of each intervention the generator's detectable stalls should produce."""
    return {
        intervention_id(t.client_id, t.journey, t.instance_start, t.step, t.attempt): t.deadline
        for t in traffic.detectable_stalls()
    }


def check_generated_times(
    traffic: GeneratedTraffic, earliest: int, max_future_ms: int, live: bool
) -> None:
    """Refuse generated traffic part of which the decode step would dead-letter: events
    before ``earliest`` (``engine.min_event_ts_ms``) or, on the replay clock, past now +
    ``max_future_ms`` (the live clock sends each event when its time comes). The ground truth
    would still count their stalls."""
    first = min((min(ts) for ts in traffic.arrival_ts.values() if ts), default=None)
    if first is None:
        return
    latest = wall_ms() + max_future_ms
    if first >= earliest and (live or traffic.end_ts <= latest):
        return
    msg = (
        f"generated events run from {first} to {traffic.end_ts} (epoch ms; from"
        " generator.start_ms over generator.span_s and the catalog's timeouts), outside the"
        f" event times the engine accepts (engine.min_event_ts_ms {earliest} to now +"
        f" engine.max_future_ms, {latest}): those events would be dead letters; choose"
        " another start or a shorter span"
    )
    raise ConfigError(msg)


def read_deadlines(path: Path) -> tuple[dict[str, int], int, frozenset[str]]:
    """``deadline_ts`` of each intervention id in a JSON-lines file; the lines beyond one
    per id; and the ids whose lines disagree on the deadline."""
    if not path.exists():
        return {}, 0, frozenset()
    out: dict[str, int] = {}
    repeated, conflicting = 0, set()
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                doc = orjson.loads(line)
                iid, deadline = doc["intervention_id"], doc["deadline_ts"]
                if iid in out:
                    repeated += 1
                    if out[iid] != deadline:
                        conflicting.add(iid)
                out[iid] = deadline
    return out, repeated, frozenset(conflicting)


def read_decisions(path: Path) -> tuple[dict[str, str], dict[str, int]]:
    """The last decision (sent, deferred, suppressed) per intervention id in a decisions
    file, in file order (a deferred candidate's later decision follows its deferral), and
    the time of each id's first decision (``decided_at_ms``: its stall deadline)."""
    final: dict[str, str] = {}
    first: dict[str, int] = {}
    if path.exists():
        with path.open("rb") as f:
            for line in f:
                if line.strip():
                    doc = orjson.loads(line)
                    iid = doc["intervention_id"]
                    final[iid] = doc["outcome"]
                    first.setdefault(iid, doc["decided_at_ms"])
    return final, first


OPEN_FILES_MARGIN = 512  # open files a run needs besides its input files (sockets, chDB)


def check_input_files_readable(paths: list[Path]) -> None:
    """Refuse input files that are missing, not files or unreadable, before the run touches
    its outputs; raise the process's open-file limit if one file per input (Bytewax opens
    every partition at start) would pass it, and refuse when the hard limit is too low."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        msg = f"input file not found (or not a file): {', '.join(missing)}"
        raise ConfigError(msg)
    for path in paths:
        try:
            path.open("rb").close()
        except OSError as exc:
            msg = f"input file {path}: cannot read it: {exc.strerror or exc}"
            raise ConfigError(msg) from exc
    needed = len(paths) + OPEN_FILES_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            msg = (
                f"{len(paths)} input files need about {needed} open files, and this process"
                f" may open at most {hard} (ulimit -Hn): raise the limit, or join the files"
            )
            raise ConfigError(msg)
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def start_outputs(out: Path, empty: bool) -> None:
    """Create the output directory; with ``empty`` (a fresh run, not a resume) start every
    output file empty, so none keeps an earlier run's lines when this run writes none."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        if empty:
            for name in (INTERVENTIONS_FILE, DEAD_LETTERS_FILE, LATE_FILE, DECISIONS_FILE):
                (out / name).write_bytes(b"")
    except OSError as exc:
        msg = f"out_dir {out}: cannot write the run's outputs there: {exc}"
        raise ConfigError(msg) from exc


def kafka_sinks(
    kafka: KafkaSettings,
    partitions: list[str],
    shards: int,
    stats: RunStats,
    progress: TextIO | None,
) -> FlowSinks:
    """Interventions to their topic; dead letters and late events to the dead-letter topic."""
    shard_keys = [shard_key(s) for s in range(shards)]
    return FlowSinks(
        interventions=KafkaRecordSink(kafka, kafka.interventions_topic, shard_keys),
        dead_letters=KafkaRecordSink(kafka, kafka.dead_letter_topic, partitions),
        late=KafkaRecordSink(kafka, kafka.dead_letter_topic, shard_keys),
        progress=ProgressSink(stats, progress),
        records=True,
    )


def cluster_failure(exc: BaseException, first: Exception | None) -> BaseException:
    """What a failed ``cluster_main`` should raise: ``exc``, unless it is the panic of the
    threads that talk to the other processes (``PanicException: Send thread panic``), which
    Bytewax 0.21.1 raises in place of the error that stopped the flow. Then the first error
    a step of this process raised (``first``, :mod:`flows.first_error`), or, when no step
    here failed, a :class:`ClusterError`: another process failed or was stopped (or
    Bytewax itself failed, which it does not say)."""
    if type(exc).__name__ != "PanicException" or "thread panic" not in str(exc):
        return exc
    if first is not None:
        return first
    return ClusterError(
        f"the connection to another process of the cluster broke ({exc}): another process"
        " failed or was stopped (its own message says why), or Bytewax failed here"
    )


def metrics_sink(
    settings: Settings, first_process: bool = True, recovery: bool = True
) -> ClickHouseSink:
    """The ClickHouse sink of a run; the first process applies the migrations first.

    Opening the database here, before the flow starts, turns a bad URL or an unreachable
    server into a clear error instead of a failure in the middle of the flow. Without
    ``recovery`` the sink does not wait for its inserts at epoch ends (no snapshot needs them).
    """
    url = clickhouse_url(settings)
    if first_process:
        store = ClickHouseStore(
            url, settings.clickhouse.database, timeout_s=request_timeout(settings.clickhouse)
        )
        try:
            store.migrate()
        finally:
            store.close()
    return ClickHouseSink(settings.clickhouse, url, epoch_flush=recovery)


def _traffic_options(settings: Settings, catalog: Catalog) -> dict[str, object]:
    """What shapes the generated traffic: the generator settings (not ``rate``, which paces
    it; nor ``start_ms`` with the live clock, whose start is recorded apart), the clock, and
    the catalog's timings and names (a digest)."""
    options = asdict(settings.generator)
    del options["rate"]
    if settings.engine.clock == "live":
        del options["start_ms"]
    options["clock"] = settings.engine.clock
    options["catalog"] = catalog.digest()
    return options


def _live_start(recovery_dir: Path | None, given: int | None, progress: TextIO | None) -> int:
    """Event time of the first event of live generated traffic: ``given`` or now, or, resumed
    from ``recovery_dir``, the start the run that made it recorded (the same traffic)."""
    start = wall_ms() if given is None else given
    if recovery_dir is not None:  # prepared by run() before
        start = recorded_start_ms(recovery_dir, start)
    if given is not None and start != given:
        msg = (
            f"--live-start-ms {given}: {recovery_dir} holds a run that started at {start};"
            " a resumed run generates the same traffic"
        )
        raise ConfigError(msg)
    if progress is not None:  # the processes of a cluster across machines need the same
        print(f"ato run: live traffic from {start} (--live-start-ms)", file=progress)
    return start


def run(
    settings: Settings,
    inputs: list[Path] | None = None,
    traffic: GeneratedTraffic | None = None,
    recovery_dir: Path | None = None,
    progress: TextIO | None = None,
    catalog: Catalog | None = None,
    duration_s: float | None = None,
    cluster: tuple[list[str], int] | None = None,
    live_start_ms: int | None = None,
    run_id: str | None = None,
) -> RunResult:
    """Run the journey flow on files (``inputs``) or generated traffic, to JSON-lines files.

    ``duration_s`` stops reading input after that much wall-clock time from the first read
    (for live runs, whose traffic lasts as long as its journeys: minutes to days); precision
    and recall are then not reported, as the ground truth assumes the whole traffic.
    ``cluster`` is (addresses of every process, this process's index) for a Bytewax cluster.
    ``live_start_ms`` is the event time of the first generated event with the live clock
    (default: now), which every process of a cluster must share. ``run_id`` names the run
    in its ``flow_health`` rows (default: one of this process's own).
    """
    tune_gc()
    catalog = catalog if catalog is not None else load_catalog(settings.catalog)
    engine = settings.engine
    live = engine.clock == "live"
    stats = RunStats()
    out: Path | str
    # a recovery directory without snapshots (made for a cluster's processes, or left by a
    # run killed before its first epoch end) resumes nothing: the run is fresh
    fresh = recovery_dir is None or not has_snapshots(recovery_dir)
    if settings.kafka.enabled:
        if inputs or traffic is not None:
            msg = "kafka.brokers is set: input comes from the Kafka topics, not files or traffic"
            raise ConfigError(msg)
        kafka = settings.kafka
        check_consumer_config(kafka)
        check_producer_config(kafka)
        if recovery_dir is not None:
            prepare_recovery_dir(recovery_dir)
            check_input_kind(recovery_dir, "kafka", fresh)
            check_input_topics(recovery_dir, kafka.input_topics, fresh)
        meta = reached_metadata(kafka)  # one look at the brokers for inputs and outputs
        parts = list_partitions(kafka, meta)
        if recovery_dir is not None:
            check_input_partitions(recovery_dir, parts, fresh)
        source: Any = KafkaSource(
            kafka, engine.batch_size, duration_s, resuming=not fresh, partitions=parts
        )
        sinks = kafka_sinks(kafka, parts, engine.shards, stats, progress)
        outputs = [kafka.interventions_topic, kafka.dead_letter_topic]
        for topic in absent_topics(meta, outputs):
            log.warning(
                "ato run: output topic %r does not exist on %s: brokers that create topics"
                " on first use will; others fail the run at the first output",
                topic, kafka.brokers,
            )  # fmt: skip
        out = f"kafka topics {kafka.interventions_topic}, {kafka.dead_letter_topic}"
    else:
        if inputs:
            paths = [Path(p) for p in inputs]
            check_input_files_readable(paths)
            source = JsonLinesSource(
                inputs,
                engine.batch_size,
                max(engine.max_message_bytes, settings.kafka.max_envelope_bytes),
                settings.kafka.max_envelope_bytes,
            )
            if recovery_dir is not None:
                prepare_recovery_dir(recovery_dir)
                check_input_kind(recovery_dir, "files", fresh)
                check_input_files(recovery_dir, paths, fresh)
        else:
            if traffic is None:
                start = None
                if recovery_dir is not None:
                    prepare_recovery_dir(recovery_dir)
                    check_input_kind(recovery_dir, "generator", fresh)
                    check_generator_options(recovery_dir, _traffic_options(settings, catalog))
                if live:
                    start = _live_start(recovery_dir, live_start_ms, progress)
                traffic = generate(catalog, settings.generator, start_ms=start)
                check_generated_times(traffic, engine.min_event_ts_ms, engine.max_future_ms, live)
            source = GeneratorSource(
                traffic, engine.batch_size, settings.generator.rate, live, duration_s
            )
        out = settings.out_dir
        sinks = FlowSinks(
            interventions=JsonLinesSink(out / INTERVENTIONS_FILE),
            dead_letters=JsonLinesSink(out / DEAD_LETTERS_FILE),
            late=JsonLinesSink(out / LATE_FILE),
            progress=ProgressSink(stats, progress),
            decisions=JsonLinesSink(out / DECISIONS_FILE) if settings.redis.enabled else None,
        )
    addresses, process_id = cluster or ([], 0)
    if settings.clickhouse.enabled:
        sinks = replace(
            sinks,
            metrics=metrics_sink(settings, process_id == 0, recovery=recovery_dir is not None),
        )
    flow = build_flow(
        source, sinks, settings, catalog, snapshots=recovery_dir is not None, run_id=run_id
    )
    recovery = None
    shape = {"shards": engine.shards, "lanes": engine.lanes}  # what a resume must keep
    if recovery_dir is not None:
        prepare_recovery_dir(recovery_dir)
        layout = {**shape, "catalog": catalog.codes_fingerprint}
        check_state_layout(recovery_dir, layout, fresh)
        check_out_dir(recovery_dir, out if isinstance(out, Path) else None, fresh, process_id)
        if process_id == 0:
            # before Bytewax starts: the other processes of a cluster wait for this one
            # to join before any of them writes a snapshot
            dropped = drop_unfinished_snapshots(recovery_dir)
            if dropped and progress is not None:
                note = f"dropped {dropped} snapshots of epochs the last run did not finish"
                print(f"ato run: {recovery_dir}: {note}", file=progress)
        recovery = RecoveryConfig(str(recovery_dir))
    if isinstance(out, Path):  # after every check (and ClickHouse opened): a refused run
        # leaves the outputs as they are
        start_outputs(out, empty=fresh and process_id == 0)
    epoch = timedelta(seconds=engine.epoch_interval_s)
    started = stats.started = time.perf_counter()  # progress lines count from here too
    with panic_text_dropped(reported_by_ato):  # Bytewax's panic text before ato's error
        if settings.workers == 1 and not cluster:
            run_main(flow, epoch_interval=epoch, recovery_config=recovery)
        else:
            first_error.take()  # an earlier flow's, in this process: not this run's
            failure: BaseException | None = None
            try:
                cluster_main(
                    flow,
                    addresses,
                    process_id,
                    epoch_interval=epoch,
                    recovery_config=recovery,
                    worker_count_per_proc=settings.workers,
                )
            except BaseException as exc:  # Bytewax's PanicException is a BaseException
                failure = cluster_failure(exc, first_error.take())
                if failure is exc:
                    raise
            if failure is not None:  # raised here, not while handling Bytewax's panic
                if addresses:  # its threads to the other processes panic as they stop
                    exit_after_report(failure)
                raise failure
    seconds = time.perf_counter() - started
    if isinstance(sinks.metrics, ClickHouseSink):
        sinks.metrics.raise_failure()  # the last metric rows could not be written
    for sink in (sinks.interventions, sinks.dead_letters, sinks.late, sinks.decisions):
        if isinstance(sink, JsonLinesSink):
            sink.raise_failure()  # the last lines could not be written
    if progress is not None:
        print(stats.line(), file=progress, flush=True)
    deadlines, repeated, conflicting = None, 0, frozenset[str]()
    if isinstance(out, Path):
        deadlines, repeated, conflicting = read_deadlines(out / INTERVENTIONS_FILE)
    decisions = decided_at = None
    if isinstance(out, Path) and settings.redis.enabled:
        decisions, decided_at = read_decisions(out / DECISIONS_FILE)
    # ground truth only holds for traffic served to its end
    served = traffic is not None and not getattr(source, "cut", None)
    truth = truth_deadlines(traffic) if served and traffic is not None else None
    used = {**shape, "batch_size": engine.batch_size}
    return RunResult(
        stats, seconds, out, deadlines, truth, decisions, decided_at, repeated, conflicting, used
    )
