"""The naive Bytewax design, as the baseline every benchmark compares against.

One item per event, ``orjson.loads`` per event, keyed by client, Python dict state in
``stateful_map``: the same stall rules, checked when the client's next event arrives.
"""

from collections.abc import Callable
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from ato.catalog import Catalog


def build_naive_flow(
    source: Source[Any],
    sink: Sink[Any],
    catalog: Catalog,
    messages: Callable[[Any], list[bytes]] | None = None,
) -> Dataflow:
    """Detect stalls per client with dict state; emit (client, journey, step, deadline).

    The source yields one message (bytes) per item, or, with ``messages``, items that
    function turns into messages (a Kafka batch), which then travel one per item.
    """
    by_type = {t: (j.index, s.index) for j in catalog.journeys for s in j.steps for t in s.on}
    journeys = {j.name: j for j in catalog.journeys}

    def step(state: dict[str, Any] | None, event: dict[str, Any]) -> tuple[dict[str, Any], list]:
        state = state if state is not None else {}
        ts = event["ts"]
        out = []
        for name, inst in list(state.items()):
            if inst["deadline"] <= ts and not inst["stalled"]:
                inst["stalled"] = True
                out.append((event["client_id"], name, inst["step"], inst["deadline"]))
        mapped = by_type.get(event["type"])
        if mapped is not None:
            journey = catalog.journeys[mapped[0]]
            s = journey.steps[mapped[1]]
            if s.terminal:
                state.pop(journey.name, None)
            else:
                state[journey.name] = {
                    "step": s.name,
                    "deadline": ts + s.timeout_ms,
                    "stalled": False,
                }
        elif event.get("journey") in journeys:
            inst = state.get(event["journey"])
            grace = journeys[event["journey"]].abandon_ms.get(event["type"])
            if inst is not None and grace is not None:
                inst["deadline"] = min(inst["deadline"], ts + grace)
        return state, out

    flow = Dataflow("naive")
    raw = op.input("input", flow, source)
    if messages is not None:
        raw = op.flat_map("messages", raw, messages)
    events = op.map("decode", raw, orjson.loads)
    keyed = op.key_on("key", events, lambda e: e["client_id"])
    stalls = op.stateful_map("detect", keyed, step)
    op.output("out", op.flat_map("flatten", stalls, lambda kv: kv[1]), sink)
    return flow
