"""The ``ato`` command."""

import argparse
import math
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from ato.columns import only_white_space
from ato.config import RedisSettings, Settings, load_settings, mask_url
from ato.exceptions import CLUSTER_ERROR_EXIT, AtoError, ClusterError, ConfigError, cause_of
from ato.panic_text import exit_after_report_asked, reported
from ato.process import Terminated, die_with_parent, sigterm_interrupts


def _run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    settings = settings.with_overrides(
        "", catalog=args.catalog, out_dir=args.out, workers=args.workers, processes=args.processes
    )
    if (args.process_id is None) != (args.addresses is None):
        msg = "--process-id and --addresses go together"
        raise ConfigError(msg)
    if args.addresses is not None:
        _check_cluster(args.addresses, args.process_id)
    if args.duration_s is not None and not (math.isfinite(args.duration_s) and args.duration_s > 0):
        msg = f"--duration-s: must be a number > 0, got {args.duration_s}"
        raise ConfigError(msg)
    recovery_dir = args.recovery_dir
    if recovery_dir is not None and recovery_dir.exists() and not recovery_dir.is_dir():
        msg = f"--recovery-dir {recovery_dir}: not a directory"
        raise ConfigError(msg)
    settings = settings.with_overrides(
        "engine",
        clock=args.clock,
        shards=args.shards,
        lanes=args.lanes,
        batch_size=args.batch_size,
        allowed_lateness_ms=args.lateness_ms,
    )
    settings = settings.with_overrides(
        "generator",
        clients=args.clients,
        span_s=args.span_s,
        seed=args.seed,
        rate=args.rate,
    )
    generated = {
        "--clients": args.clients, "--span-s": args.span_s, "--seed": args.seed,
        "--rate": args.rate, "--live-start-ms": args.live_start_ms,
    }  # fmt: skip
    given = [name for name, value in generated.items() if value is not None]
    if given and (settings.kafka.enabled or args.input):
        msg = f"{', '.join(given)}: only for generated traffic, not --input files or Kafka"
        raise ConfigError(msg)
    if args.input and args.duration_s is not None:
        msg = "--duration-s: only for generated traffic and Kafka, not --input files"
        raise ConfigError(msg)
    if args.live_start_ms is not None and settings.engine.clock != "live":
        msg = "--live-start-ms: only with the live clock (--clock live)"
        raise ConfigError(msg)
    if settings.generator.rate > 0 and settings.engine.clock == "live":
        msg = (
            "--rate (generator.rate): only with the replay clock; the live clock releases each"
            " event when the wall clock reaches its arrival time"
        )
        raise ConfigError(msg)
    from_generator = not settings.kafka.enabled and not args.input
    if from_generator and settings.engine.clock == "replay":
        _check_generated_start(settings)
    if from_generator and args.process_id is None:
        _warn_of_disorder(settings)
    with _run_lock(settings, args), sigterm_interrupts():
        if settings.processes > 1 and args.process_id is None:
            live = settings.engine.clock == "live"
            return _run_cluster(settings.processes, args, live_generator=live and from_generator)
        return _run_here(settings, args)


def _check_generated_start(settings: Settings) -> None:
    """Refuse a replay-clock generator start the decode step would dead-letter every event
    of: before ``engine.min_event_ts_ms`` or past now + ``engine.max_future_ms``."""
    start, engine = settings.generator.start_ms, settings.engine
    latest = int(time.time() * 1000) + engine.max_future_ms
    if not engine.min_event_ts_ms <= start <= latest:
        msg = (
            f"generator.start_ms ({start}) is outside the event times the engine accepts"
            f" (engine.min_event_ts_ms {engine.min_event_ts_ms} to now + engine.max_future_ms,"
            f" {latest}): every generated event would be a dead letter"
        )
        raise ConfigError(msg)


def _warn_of_disorder(settings: Settings) -> None:
    """Say so when the generator shuffles events further than the watermark waits for."""
    disorder, lateness = settings.generator.disorder_ms, settings.engine.allowed_lateness_ms
    if disorder > lateness:
        print(
            f"ato run: warning: generator.disorder_ms ({disorder}) is above"
            f" engine.allowed_lateness_ms ({lateness}): events shuffled further may arrive late"
            " (counted, and in late_events.jsonl) and lower the recall against the ground truth",
            file=sys.stderr,
        )


@contextmanager
def _run_lock(settings: Settings, args: argparse.Namespace) -> Iterator[None]:
    """Hold the output directory of a run writing files (a cluster's parent holds it for
    its processes on this machine)."""
    if settings.kafka.enabled or args.process_id is not None:
        yield
        return
    from ato.out_lock import lock_out_dir  # noqa: PLC0415

    lock = lock_out_dir(settings.out_dir)
    try:
        yield
    finally:
        lock.close()


def _run_here(settings: Settings, args: argparse.Namespace) -> int:
    """Run the flow in this process (alone, or as one process of a cluster)."""
    from ato.runner import run  # noqa: PLC0415 - keeps `ato --help` fast

    if settings.kafka.enabled:
        feed = f"kafka {settings.kafka.brokers} topics {', '.join(settings.kafka.input_topics)}"
    elif args.input:
        feed = "files " + ", ".join(map(str, args.input))
    else:
        feed = "generator"
    print(
        f"ato run: {feed}"
        f" | clock {settings.engine.clock} | workers {settings.workers}"
        f" | shards {settings.engine.shards} x {settings.engine.lanes} lanes"
        f" | batches of {settings.engine.batch_size:,} | out {settings.out_dir}",
        file=sys.stderr,
    )
    cluster = None
    if args.process_id is not None:
        cluster = (args.addresses.split(","), args.process_id)
    result = run(
        settings,
        inputs=args.input,
        recovery_dir=args.recovery_dir,
        progress=sys.stderr,
        duration_s=args.duration_s,
        cluster=cluster,
        live_start_ms=args.live_start_ms,
        run_id=os.environ.get(CLUSTER_RUN_ID_ENV) or None,
    )
    _print_summary(result.summary())
    return 0


def _check_cluster(addresses: str, process_id: int) -> None:
    """Refuse --addresses that are not HOST:PORT pairs, or a --process-id outside them."""
    listed = addresses.split(",")
    for address in listed:
        host, sep, port = address.rpartition(":")
        if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
            msg = f"--addresses: expected HOST:PORT[,HOST:PORT...], got {address!r}"
            raise ConfigError(msg)
    count = len(listed)
    if not 0 <= process_id < count:
        msg = f"--process-id {process_id}: must be from 0 to {count - 1} (one per address)"
        raise ConfigError(msg)


def _run_cluster(processes: int, args: argparse.Namespace, live_generator: bool = False) -> int:
    """Start ``processes`` copies of this command as one Bytewax cluster on this machine."""
    from ato.devservers import free_port  # noqa: PLC0415
    from ato.recovery_dir import live_start_ms, prepare_recovery_dir  # noqa: PLC0415
    from ato.run_id import new_run_id  # noqa: PLC0415
    from operators.decode import wall_ms  # noqa: PLC0415

    start: int | None = None
    if args.recovery_dir is not None:
        prepare_recovery_dir(args.recovery_dir)  # once, before the processes race for it
    if live_generator and args.live_start_ms is None:
        # every process generates the same traffic from one start (the recorded one if resumed)
        start = wall_ms()
        if args.recovery_dir is not None:
            start = live_start_ms(args.recovery_dir, start)
    addresses = ",".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    print(f"ato run: cluster of {processes} processes at {addresses}", file=sys.stderr)
    member = _member_argv(args.argv, addresses, start)
    run_id = new_run_id()  # one for the whole cluster run, in its flow_health rows
    children: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(processes):
            child = subprocess.Popen(
                [*member, "--process-id", str(i)],
                env={**os.environ, CLUSTER_MEMBER_ENV: "1", CLUSTER_RUN_ID_ENV: run_id},
                stdout=subprocess.PIPE,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - it calls only prctl
            )
            children.append(child)
        outputs, failed = _wait_for(children)
    finally:  # interrupted or terminated: the processes must not outlive this one (and if
        _stop(children)  # this one is killed -9, die_with_parent stops them)
    if failed is not None:
        codes = [child.returncode for child in children]
        print(
            f"ato: error: cluster process {failed} exited with {codes[failed]}; the others ended"
            f" or were stopped (exit codes {codes})",
            file=sys.stderr,
        )
        return codes[failed] if codes[failed] > 0 else 1  # as that process would alone
    summaries = [orjson.loads(out.splitlines()[-1]) for out in outputs]
    _print_summary(_merge_summaries(summaries) | {"processes": processes})
    return 0


def _member_argv(argv: list[str], addresses: str, live_start: int | None) -> list[str]:
    """The command of one process of a cluster on this machine (``--process-id`` follows)."""
    member = [sys.executable, "-m", "ato.cli", *argv, "--addresses", addresses]
    if live_start is not None:
        member += ["--live-start-ms", str(live_start)]
    return member


def _wait_for(children: list[subprocess.Popen[bytes]]) -> tuple[list[bytes], int | None]:
    """Every child's standard output, and the first that failed (None: none did). Once one
    fails the others are stopped: they would wait for it forever."""
    outputs = [b""] * len(children)

    def drain(i: int) -> None:
        stream = children[i].stdout
        if stream is not None:
            with stream:
                outputs[i] = stream.read()

    readers = [threading.Thread(target=drain, args=(i,), daemon=True) for i in range(len(children))]
    for reader in readers:
        reader.start()

    def first_failed() -> int | None:
        """The first child that failed, one that failed itself before one that only lost
        its connection to another (exit code CLUSTER_ERROR_EXIT)."""
        codes = [c.returncode for c in children]
        failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
        itself = [i for i in failed if codes[i] != CLUSTER_ERROR_EXIT]
        chosen = itself or failed
        return chosen[0] if chosen else None

    while any(child.poll() is None for child in children) and first_failed() is None:
        time.sleep(0.1)
    if first_failed() is not None:  # the others end on their own, saying why, or are stopped
        deadline = time.monotonic() + STOP_GRACE_S
        while any(child.poll() is None for child in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        # a process still waiting for the failed one to connect is in Bytewax's Rust code,
        # where a Python signal handler does not run: SIGTERM alone would wait out 10 s
        _stop(children, wait_s=STOP_AFTER_FAILURE_S)
    failed = first_failed()
    for reader in readers:
        reader.join()
    return outputs, failed


def _stop(children: list[subprocess.Popen[bytes]], wait_s: float = 10.0) -> None:
    """Terminate the children still running; kill those that do not end within ``wait_s``."""
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + wait_s
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _merge_summaries(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary of a cluster's processes: counts add up; a shared output file is shared."""
    merged = dict(parts[0])
    for key in ("events", "dead_letters", "late_events", "open_instances", "state_mb"):
        merged[key] = round(sum(p[key] for p in parts), 1)
    merged["seconds"] = max(p["seconds"] for p in parts)
    merged["events_per_s"] = round(merged["events"] / merged["seconds"]) if merged["seconds"] else 0
    if str(merged["outputs"]).startswith("kafka "):  # each process counted its own
        merged["interventions"] = sum(p["interventions"] for p in parts)
    else:  # each read the one shared file: the last to read it saw it whole
        merged["interventions"] = max(p["interventions"] for p in parts)
    if any("precision" in p for p in parts) and not all("precision" in p for p in parts):
        # a process cut its partitions short (--duration-s): the ground truth, of the whole
        # traffic, does not hold, though a process that read no partition could not know
        for key in ("truth_stalls", "deadline_mismatches", "precision", "recall"):
            merged.pop(key, None)
    if "redis_outages" in merged:  # each process's policy steps met their own
        merged["redis_outages"] = sum(p.get("redis_outages", 0) for p in parts)
    return merged


def _print_summary(summary: dict[str, Any]) -> None:
    print("summary:")
    for key, value in summary.items():
        print(f"  {key:16s} {value}")
    print(orjson.dumps(summary).decode())


def _feed(args: argparse.Namespace) -> int:
    from ato.catalog import load_catalog  # noqa: PLC0415
    from ato.feed import feed  # noqa: PLC0415
    from ato.generator import generate  # noqa: PLC0415
    from sources.kafka import list_partitions  # noqa: PLC0415

    settings = load_settings(args.config)
    settings = settings.with_overrides("generator", clients=args.clients, seed=args.seed)
    if not settings.kafka.enabled:
        msg = "ato feed needs kafka.brokers (settings file or ATO_KAFKA_BROKERS)"
        raise ConfigError(msg)
    partitions = len(
        [
            p
            for p in list_partitions(settings.kafka)
            if p.startswith(settings.kafka.input_topics[0] + "#")
        ]
    )
    generator = replace(settings.generator, partitions=partitions)
    traffic = generate(load_catalog(settings.catalog), generator)
    sent = feed(settings.kafka, traffic, partitions)
    topic = settings.kafka.input_topics[0]
    print(f"wrote {sent:,} events of {generator.clients:,} clients to {topic}")
    return 0


def _dev(args: argparse.Namespace) -> int:
    from ato import dev  # noqa: PLC0415

    if args.action == "up":
        state = dev.up(args.dir, args.broker_port, args.redis_port, args.clients)
    elif args.action == "down":
        stopped = dev.down(args.dir)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        return 0
    else:
        state = dev.status(args.dir)
    if not state:
        print(f"no dev servers (state file {args.dir / dev.STATE_FILE} absent)")
    for name, server in state.items():
        alive = "running" if server["alive"] else "NOT running"
        where = f"{server['address']:22s} pid {server['pid']:<8d}"
        print(f"{name:6s} {where} {alive}  log {server['log']}")
    if state.get("tansu", {}).get("alive"):
        brokers = state["tansu"]["address"]
        print(f"\nnext: ATO_KAFKA_BROKERS={brokers} ato run --config examples/kafka.toml")
    return 0


def _clickhouse_settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    return settings.with_overrides("clickhouse", url=args.url)


def _db(args: argparse.Namespace) -> int:
    from ato import db  # noqa: PLC0415 - keeps `ato --help` fast

    store, new, every = db.migrate(_clickhouse_settings(args))
    for version in new:
        print(f"applied {version}")
    state = f"{len(new)} migrations applied" if new else "up to date"
    latest = every[-1] if every else "nothing"
    print(f"database {store.database} at {store.display_url}: {state}, schema at {latest}")
    return 0


def _query(args: argparse.Namespace) -> int:
    from ato import db  # noqa: PLC0415

    with db.query(_clickhouse_settings(args), args.sql, write=args.write) as (columns, blocks):
        try:
            db.write_result(columns, blocks, args.format, sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:  # a reader that stops early (`| head`) is not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _redis_settings(args: argparse.Namespace, settings: Settings | None = None) -> RedisSettings:
    """``[redis]`` settings (of ``settings``, else of ``--config``) with ``--redis-url``
    applied; a clear error without any url."""
    settings = load_settings(args.config) if settings is None else settings
    redis_settings = settings.with_overrides("redis", url=args.redis_url).redis
    if not redis_settings.enabled:
        msg = "no Redis: give --redis-url or set redis.url (settings file or ATO_REDIS_URL)"
        raise ConfigError(msg)
    return redis_settings


def _redis_client(redis_settings: RedisSettings) -> Any:
    """A client of the configured Redis, with the settings' timeouts."""
    from policy.connection import connect  # noqa: PLC0415

    return connect(redis_settings)


@contextmanager
def _redis_errors(redis_settings: RedisSettings) -> Iterator[None]:
    """Turn a Redis failure into an ``AtoError`` naming the url (its password masked)."""
    import redis  # noqa: PLC0415

    try:
        yield
    except redis.RedisError as exc:
        msg = f"Redis at {mask_url(redis_settings.url)}: {exc}"
        raise AtoError(msg) from exc


SHOWN_ERRORS = 100  # bad rows of a profile file printed one by one; the rest are counted


def _profiles_load(args: argparse.Namespace) -> int:
    from policy import ProfileFileError, load_profiles_file  # noqa: PLC0415

    settings = load_settings(args.config)
    redis_settings = _redis_settings(args, settings)
    max_id_len = settings.engine.max_client_id_len
    try:
        with _redis_errors(redis_settings):
            count = load_profiles_file(redis_settings, args.file, max_id_len=max_id_len)
    except ProfileFileError as exc:
        for line in exc.errors[:SHOWN_ERRORS]:
            print(line, file=sys.stderr)
        if exc.count > SHOWN_ERRORS:
            print(f"... and {exc.count - SHOWN_ERRORS:,} more", file=sys.stderr)
        print(f"ato: error: {exc.count:,} bad row(s), nothing loaded", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"{args.file}: cannot read profiles: {exc}"
        raise AtoError(msg) from exc
    print(f"loaded {count:,} profiles from {args.file} into {mask_url(redis_settings.url)}")
    return 0


def _profiles_generate(args: argparse.Namespace) -> int:
    from ato.catalog import load_catalog  # noqa: PLC0415
    from ato.generator import generate  # noqa: PLC0415
    from policy.generated import generated_profiles, write_profiles_jsonl  # noqa: PLC0415
    from policy.profile_files import JSONL_SUFFIXES  # noqa: PLC0415

    if args.out.suffix.lower() not in JSONL_SUFFIXES:
        msg = f"--out {args.out}: use a JSON-lines name ({', '.join(JSONL_SUFFIXES)})"
        raise ConfigError(msg)
    settings = load_settings(args.config).with_overrides("", catalog=args.catalog)
    settings = settings.with_overrides(
        "generator", clients=args.clients, seed=args.seed, span_s=args.span_s
    )
    traffic = generate(load_catalog(settings.catalog), settings.generator)
    try:
        count = write_profiles_jsonl(generated_profiles(traffic), args.out)
    except OSError as exc:
        msg = f"{args.out}: cannot write profiles: {exc.strerror}"
        raise AtoError(msg) from exc
    print(f"wrote {count:,} profiles (generator seed {settings.generator.seed}) to {args.out}")
    return 0


def _profiles_show(args: argparse.Namespace) -> int:
    from policy import ProfileStore  # noqa: PLC0415

    redis_settings = _redis_settings(args)
    with _redis_errors(redis_settings):
        with _redis_client(redis_settings) as client:
            store = ProfileStore(client, ttl_s=0)
            profile = store.get_many([args.client_id])[args.client_id]
    if profile.known:
        print(f"{profile.client_id}: stored profile")
    elif store.stats["invalid"]:
        print(f"{profile.client_id}: stored profile is invalid: defaults")
    else:
        print(f"{profile.client_id}: unknown client: defaults")
    fields = profile.to_fields() | {"do_not_contact": str(profile.do_not_contact).lower()}
    for name, value in fields.items():
        print(f"  {name:18s} {value or '-'}")
    return 0


def _lookup(args: argparse.Namespace) -> int:
    from policy.live_state import format_lookup, lookup  # noqa: PLC0415

    redis_settings = _redis_settings(args)
    with _redis_errors(redis_settings):
        with _redis_client(redis_settings) as client:
            state = lookup(client, args.client_id)
    if args.json:
        doc = {"client_id": args.client_id, "journeys": state}
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS) + b"\n")
        sys.stdout.flush()
    else:
        print(format_lookup(args.client_id, state))
    return 0


def _client_id_arg(text: str) -> str:
    """A client id on the command line: not empty nor only white space (no event's is)."""
    if only_white_space(text):
        msg = "a client id is required (this one is empty or only white space)"
        raise argparse.ArgumentTypeError(msg)
    return text


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the ``ato`` command."""
    parser = argparse.ArgumentParser(prog="ato", description="ato-stream journey engine")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the journey flow (default: built-in generator)")
    run.add_argument(
        "--config",
        type=Path,
        help="settings file (TOML; see docs/configuration.md); kafka.brokers switches to Kafka",
    )
    run.add_argument(
        "--input", type=Path, nargs="+", help="JSON-lines event files instead of the generator"
    )
    run.add_argument("--catalog", type=Path, help="journey catalog TOML (default: shipped)")
    run.add_argument("--out", type=Path, help="output directory (default: runs/latest)")
    run.add_argument(
        "--clock", choices=["replay", "live"], help="event-time clock (default: replay)"
    )
    run.add_argument("--workers", type=int, help="Bytewax worker threads per process (default: 1)")
    run.add_argument(
        "--processes",
        type=int,
        help="processes of a Bytewax cluster on this machine (default: 1); see README for"
        " running the same across machines",
    )
    run.add_argument(
        "--process-id",
        type=int,
        help="this process's index in a cluster across machines (with --addresses)",
    )
    run.add_argument(
        "--addresses", help="host:port of every cluster process, comma-separated, same order"
    )
    run.add_argument("--shards", type=int, help="state shards (default: 16)")
    run.add_argument(
        "--lanes", type=int, help="lanes of each shard updated side by side (default: 1)"
    )
    run.add_argument("--batch-size", type=int, help="messages per source batch (default: 50000)")
    run.add_argument("--lateness-ms", type=int, help="allowed lateness in ms (default: 500)")
    run.add_argument("--clients", type=int, help="generated clients (default: 100000)")
    run.add_argument(
        "--span-s", type=int, help="event-time span of generated traffic, s (default: 3 days)"
    )
    run.add_argument("--seed", type=int, help="generator seed (default: 7)")
    run.add_argument("--rate", type=float, help="pace the generator at events/s (default: unpaced)")
    run.add_argument(
        "--duration-s",
        type=float,
        help="stop reading input after this many wall-clock seconds, counted from when the flow"
        " starts reading (default: the generator runs to its end, Kafka input forever)",
    )
    run.add_argument(
        "--recovery-dir", type=Path, help="Bytewax recovery directory (resume after a crash)"
    )
    run.add_argument(
        "--live-start-ms",
        type=int,
        help="live clock, generated traffic: epoch ms of its first event (default: now, or the"
        " start recorded in --recovery-dir); every process of a cluster across machines needs"
        " the same (--processes passes it to its own)",
    )
    run.set_defaults(handler=_run)
    dev = sub.add_parser("dev", help="local Tansu broker and Redis: up, down, status")
    dev.add_argument("action", choices=["up", "down", "status"])
    dev.add_argument(
        "--dir", type=Path, default=Path("runs/dev"), help="state and logs (default: runs/dev)"
    )
    dev.add_argument("--broker-port", type=int, default=19092, help="Kafka port (default: 19092)")
    dev.add_argument("--redis-port", type=int, default=16379, help="Redis port (default: 16379)")
    dev.add_argument(
        "--clients",
        type=int,
        default=100_000,
        help="up: load generated traffic of this many clients into the input topic (0: none;"
        " default: 100000)",
    )
    dev.set_defaults(handler=_dev)
    feed = sub.add_parser("feed", help="write generated traffic into the input topic")
    feed.add_argument("--config", type=Path, help="settings file ([kafka], [generator], catalog)")
    feed.add_argument("--clients", type=int, help="generated clients (default: 100000)")
    feed.add_argument("--seed", type=int, help="generator seed (default: 7)")
    feed.set_defaults(handler=_feed)
    url_help = "ClickHouse url (default: clickhouse.url, else chdb://<out_dir>/clickhouse)"
    dbp = sub.add_parser("db", help="metrics database: migrate (apply the schema migrations)")
    dbp.add_argument("action", choices=["migrate"])
    dbp.add_argument("--config", type=Path, help="settings file ([clickhouse], out_dir)")
    dbp.add_argument("--url", help=url_help)
    dbp.set_defaults(handler=_db)
    query = sub.add_parser(
        "query", help="run SQL on the metrics database (tables read as FINAL) and print it"
    )
    query.add_argument("sql", help='the SQL, e.g. "SELECT * FROM funnel_hour LIMIT 10"')
    query.add_argument("--config", type=Path, help="settings file ([clickhouse], out_dir)")
    query.add_argument("--url", help=url_help)
    query.add_argument(
        "--write",
        action="store_true",
        help="allow a statement that is not read-only (CREATE VIEW, INSERT, ...); without it"
        " only SELECT, WITH, SHOW, DESCRIBE, EXPLAIN and EXISTS run",
    )
    query.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        default="table",
        help="table (aligned, default), csv, or json (one object per line)",
    )
    query.set_defaults(handler=_query)
    _add_profiles_parser(sub)
    sub.add_parser(
        "loadtest",
        help="drive a load-test scenario through the flow and write a capacity report"
        " (`ato loadtest --help`)",
    )
    lookup = sub.add_parser(
        "lookup", help="print a client's open journeys (live state in Redis, breakpoint resume)"
    )
    lookup.add_argument("client_id", type=_client_id_arg, help="the client id")
    lookup.add_argument(
        "--redis-url",
        help="Redis url, e.g. redis://127.0.0.1:16379/0 (default: redis.url / ATO_REDIS_URL)",
    )
    lookup.add_argument("--config", type=Path, help="settings file ([redis])")
    lookup.add_argument(
        "--json", action="store_true", help='one JSON object: {"client_id", "journeys"}'
    )
    lookup.set_defaults(handler=_lookup)
    return parser


def _add_profiles_parser(sub: Any) -> None:
    """``ato profiles load|generate|show``."""
    profiles = sub.add_parser(
        "profiles", help="client profiles in Redis: load a file, generate, show one"
    )
    actions = profiles.add_subparsers(dest="action", required=True)
    url_help = "Redis url, e.g. redis://127.0.0.1:16379/0 (default: redis.url / ATO_REDIS_URL)"
    load = actions.add_parser(
        "load", help="import a CSV or JSON-lines file (all rows valid, else nothing is written)"
    )
    load.add_argument("file", type=Path, help=".csv with a header row, or .jsonl/.ndjson/.json")
    load.add_argument("--redis-url", help=url_help)
    load.add_argument(
        "--config", type=Path, help="settings file ([redis], engine.max_client_id_len)"
    )
    load.set_defaults(handler=_profiles_load)
    gen = actions.add_parser(
        "generate", help="write the profiles of the generator's clients as JSON lines"
    )
    gen.add_argument("--clients", type=int, help="generated clients (default: generator.clients)")
    gen.add_argument("--seed", type=int, help="generator seed (default: generator.seed)")
    gen.add_argument(
        "--span-s",
        type=int,
        help="event-time span, s (default: generator.span_s); the generator's draws depend on"
        " it, so give the run's --clients, --span-s and --seed to get its clients' segments",
    )
    gen.add_argument("--catalog", type=Path, help="journey catalog TOML (default: shipped)")
    gen.add_argument("--out", type=Path, required=True, help="output file (.jsonl)")
    gen.add_argument("--config", type=Path, help="settings file ([generator], catalog)")
    gen.set_defaults(handler=_profiles_generate)
    show = actions.add_parser("show", help="print a client's stored profile (or the defaults)")
    show.add_argument("client_id", type=_client_id_arg, help="the client id")
    show.add_argument("--redis-url", help=url_help)
    show.add_argument("--config", type=Path, help="settings file ([redis])")
    show.set_defaults(handler=_profiles_show)


def _loadtest(argv: list[str]) -> int:
    from load_tests.harness import main as loadtest_main  # noqa: PLC0415

    return loadtest_main(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ato``."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["loadtest"]:  # its own parser: `ato loadtest --help`
            return _loadtest(argv[1:])
        args = build_parser().parse_args(argv)
        args.argv = argv
        return int(args.handler(args))
    except AtoError as exc:
        return _ato_error(exc, exc)
    except Exception as exc:  # Bytewax wraps what a step raised in its own error
        cause = cause_of(exc, (AtoError, KeyboardInterrupt))
        if isinstance(cause, AtoError):
            return _ato_error(cause, exc)
        if isinstance(cause, KeyboardInterrupt):
            return _interrupted(cause)
        if exit_after_report_asked(exc):  # a failed cluster process: its traceback, then exit
            traceback.print_exc()
            reported(exc, 1)
        raise
    except KeyboardInterrupt as exc:
        return _interrupted(exc)


def _ato_error(error: AtoError, raised: BaseException) -> int:
    """Print ``error`` in one line; return its exit code (2; 3 when a process of a cluster
    lost its connection to another)."""
    print(f"ato: error: {error}", file=sys.stderr)
    code = CLUSTER_ERROR_EXIT if isinstance(error, ClusterError) else 2
    reported(raised, code)
    return code


def _interrupted(exc: BaseException) -> int:
    """Say the run was interrupted (a process of a cluster its parent started leaves that
    to the parent: Ctrl-C reaches them all), and return its exit code."""
    if not os.environ.get(CLUSTER_MEMBER_ENV):
        print(INTERRUPTED, file=sys.stderr)
    return 143 if isinstance(exc, Terminated) else 130


STOP_GRACE_S = 1.0  # after a process of a cluster failed, the others' time to end on their own
STOP_AFTER_FAILURE_S = 3.0  # then, from SIGTERM to SIGKILL (nothing of theirs is left to save)
CLUSTER_MEMBER_ENV = "_ATO_CLUSTER_MEMBER"  # set for the processes `--processes N` starts
CLUSTER_RUN_ID_ENV = "_ATO_CLUSTER_RUN_ID"  # their run_id, the same for all of them
INTERRUPTED = (
    "ato: interrupted; the output files hold whole lines (with --recovery-dir, the same"
    " command resumes from the last snapshot)"
)


if __name__ == "__main__":
    sys.exit(main())
