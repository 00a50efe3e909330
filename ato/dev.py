"""``ato dev up|down|status``: a local Tansu broker and Redis for trying the Kafka path.

The servers run detached; their addresses, process ids and the processes' start times live
in ``DIR/servers.json`` (default ``runs/dev``), which ``down`` and ``status`` read: a process
counts as the server only while its pid runs with the start time recorded, so a pid the
system gave to another process since (after a reboot, say) is never signalled. ``up`` also
creates the default topics, so ``ATO_KAFKA_BROKERS=<broker> ato run --config
examples/kafka.toml`` works next.
"""

import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from ato.catalog import load_catalog
from ato.config import GeneratorSettings, KafkaSettings
from ato.devservers import DevServerError, create_topics, start_broker, start_redis
from ato.feed import feed_generated
from ato.process import process_running, process_start_time

STATE_FILE = "servers.json"
INPUT_PARTITIONS = 8
STOP_GRACE_S = 5.0


def up(directory: Path, broker_port: int, redis_port: int, clients: int) -> dict[str, Any]:
    """Start both servers (unless running), create the default topics, and load generated
    traffic of ``clients`` clients (none if 0) into the input topic."""
    running = status(directory)
    if running and all(s["alive"] for s in running.values()):
        wanted = {"tansu": broker_port, "redis": redis_port}
        other = [
            f"{name} on {server['address']}"
            for name, server in running.items()
            if wanted.get(name) and not server["address"].endswith(f":{wanted[name]}")
        ]
        if other:
            msg = (
                f"dev servers already run in {directory} ({', '.join(other)}), not on the ports"
                " asked for: `ato dev down` first to start them on other ports"
            )
            raise DevServerError(msg)
        if clients:
            print(
                f"dev servers already run in {directory}: no traffic loaded (`ato dev down`,"
                " then `ato dev up`, loads it anew)"
            )
        return running
    if running:
        down(directory)
    directory.mkdir(parents=True, exist_ok=True)
    broker = start_broker(broker_port, directory, detach=True)
    try:
        redis = start_redis(redis_port, directory, detach=True)
    except DevServerError:
        broker.stop()
        raise
    state: dict[str, dict[str, Any]] = {
        server.name: {
            "address": server.address,
            "log": str(server.log_path),
            "stop_signal": int(server.stop_signal),
            "pid": (pid := server.detach()),
            "started": process_start_time(pid),
        }
        for server in (broker, redis)
    }
    (directory / STATE_FILE).write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))
    try:
        _load_topics(broker.address, clients)
    except Exception:
        down(directory)
        raise
    return status(directory)


def _load_topics(brokers: str, clients: int) -> None:
    defaults = KafkaSettings()
    topics = {name: INPUT_PARTITIONS for name in defaults.input_topics}
    topics |= {defaults.interventions_topic: 4, defaults.dead_letter_topic: 1}
    create_topics(brokers, topics)
    if clients:
        kafka = replace(defaults, brokers=brokers)
        generator = GeneratorSettings(clients=clients, partitions=INPUT_PARTITIONS)
        sent, _ = feed_generated(kafka, load_catalog(), generator, INPUT_PARTITIONS)
        print(f"loaded {sent:,} generated events into {defaults.input_topics[0]}")


def status(directory: Path) -> dict[str, Any]:
    """The servers ``up`` started, each with ``alive`` telling whether it still runs."""
    path = directory / STATE_FILE
    if not path.exists():
        return {}
    try:
        state: dict[str, Any] = orjson.loads(path.read_bytes())
        for server in state.values():
            server["alive"] = process_running(int(server["pid"]), server.get("started"))
    except (orjson.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError) as exc:
        msg = (
            f"{path} is not a state file `ato dev up` wrote ({exc!r}): stop its servers by hand"
            " if they run, then remove it"
        )
        raise DevServerError(msg) from exc
    return state


def down(directory: Path) -> list[str]:
    """Stop the servers ``up`` started; return the names of those that were running."""
    stopped = []
    for name, server in status(directory).items():
        pid, started = server["pid"], server.get("started")
        if server["alive"]:
            os.kill(pid, server["stop_signal"])
            deadline = time.monotonic() + STOP_GRACE_S
            while process_running(pid, started) and time.monotonic() < deadline:
                time.sleep(0.05)
            if process_running(pid, started):
                os.kill(pid, signal.SIGKILL)
            stopped.append(name)
    (directory / STATE_FILE).unlink(missing_ok=True)
    return stopped
