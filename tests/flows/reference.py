"""A small, obviously-correct batch detector: the whole event list at once, one event at a time.

It knows nothing of watermarks, batches, shards or numba: it sorts every valid event by event
time and walks them with a dict per open instance. The flow must produce the same ids.
"""

from dataclasses import dataclass

import orjson

from ato.catalog import CHANNELS, Catalog
from operators.interventions import intervention_id


@dataclass
class _Open:
    journey: int
    start: int
    step: int
    deadline: int
    progress: int = 0  # event time of its last progress event
    attempt: int = 0
    stalled: bool = False


def _map(doc: dict, catalog: Catalog) -> tuple[int, int]:
    """(journey, step) codes of an event; -1 where none."""
    name, step_name, event_type = doc.get("journey"), doc.get("step"), doc["type"]
    if name is not None:
        journey = catalog.journey(name)
        if step_name is not None:
            return journey.index, journey.step(step_name).index
        for step in journey.steps:
            if event_type in step.on:
                return journey.index, step.index
        return journey.index, -1
    owners = [(j.index, s.index) for j in catalog.journeys for s in j.steps if event_type in s.on]
    return owners[0] if len(owners) == 1 else (-1, -1)


def reference_ids(messages: list[bytes], catalog: Catalog) -> set[str]:
    """Intervention ids for every stall in ``messages`` (all valid events, any order)."""
    events = []
    for arrival, message in enumerate(messages):
        doc = orjson.loads(message)
        journey, step = _map(doc, catalog)
        channel = CHANNELS.index(doc["channel"])
        events.append((doc["ts"], journey + 1, step + 1, channel, arrival, doc))
    events.sort(key=lambda e: e[:5])

    open_: dict[tuple[str, int], _Open] = {}
    last: dict[str, tuple[str, int]] = {}
    ids: set[str] = set()

    def settle(key: tuple[str, int], inst: _Open, now: int) -> bool:
        journey = catalog.journeys[inst.journey]
        if not inst.stalled:
            inst.attempt += 1
            inst.stalled = True
            step = journey.steps[inst.step].name
            ids.add(intervention_id(key[0], journey.name, inst.start, step, inst.attempt))
            inst.deadline += journey.close_after_ms
        if inst.deadline <= now:
            close(key)
            return True
        return False

    def close(key: tuple[str, int]) -> None:
        del open_[key]
        if last.get(key[0]) == key:  # to the client's open instance that progressed last
            del last[key[0]]
            still = [(i.progress, k[1]) for k, i in open_.items() if k[0] == key[0]]
            if still:
                last[key[0]] = (key[0], max(still)[1])

    for ts, j1, s1, _channel, _arrival, doc in events:
        client, j, s = doc["client_id"], j1 - 1, s1 - 1
        for other in range(len(catalog.journeys)):  # time passes to ts for this client first
            passed = open_.get((client, other))
            if passed is not None and passed.deadline <= ts:
                settle((client, other), passed, ts)
        key = (client, j) if j >= 0 else last.get(client)
        inst = open_.get(key) if key is not None else None
        if s >= 0:
            journey = catalog.journeys[j]
            terminal = journey.steps[s].terminal is not None
            if inst is None:
                if terminal:
                    continue
                inst = open_[(client, j)] = _Open(j, ts, s, 0)
            inst.step, inst.stalled, inst.progress = s, False, ts
            last[client] = (client, j)
            if terminal:
                close((client, j))
            else:
                inst.deadline = ts + journey.steps[s].timeout_ms
        elif inst is not None and not inst.stalled:
            grace = catalog.journeys[inst.journey].abandon_ms.get(doc["type"])
            if grace is not None:
                inst.deadline = min(inst.deadline, ts + grace)

    end = max(e[0] for e in events)
    for key, inst in list(open_.items()):
        if inst.deadline <= end:
            settle(key, inst, end)
    return ids
