"""``ato dev up|down|status``: a local Tansu broker and Redis for trying the Kafka path.

The servers run detached; their addresses and process ids live in ``DIR/servers.json``
(default ``runs/dev``), which ``down`` and ``status`` read. ``up`` also creates the default
topics, so ``ATO_KAFKA_BROKERS=<broker> ato run --config examples/kafka.toml`` works next.
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

STATE_FILE = "servers.json"
INPUT_PARTITIONS = 8
STOP_GRACE_S = 5.0


def up(directory: Path, broker_port: int, redis_port: int, clients: int) -> dict[str, Any]:
    """Start both servers (unless running), create the default topics, and load generated
    traffic of ``clients`` clients (none if 0) into the input topic."""
    running = status(directory)
    if running and all(s["alive"] for s in running.values()):
        return running
    if running:
        down(directory)
    directory.mkdir(parents=True, exist_ok=True)
    broker = start_broker(broker_port, directory)
    try:
        redis = start_redis(redis_port, directory)
    except DevServerError:
        broker.stop()
        raise
    state: dict[str, dict[str, Any]] = {
        server.name: {
            "address": server.address,
            "log": str(server.log_path),
            "stop_signal": int(server.stop_signal),
            "pid": server.detach(),
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
    state: dict[str, Any] = orjson.loads(path.read_bytes())
    for server in state.values():
        server["alive"] = _alive(server["pid"])
    return state


def down(directory: Path) -> list[str]:
    """Stop the servers ``up`` started; return the names of those that were running."""
    stopped = []
    for name, server in status(directory).items():
        if server["alive"]:
            os.kill(server["pid"], server["stop_signal"])
            deadline = time.monotonic() + STOP_GRACE_S
            while _alive(server["pid"]) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(server["pid"]):
                os.kill(server["pid"], signal.SIGKILL)
            stopped.append(name)
    (directory / STATE_FILE).unlink(missing_ok=True)
    return stopped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False
