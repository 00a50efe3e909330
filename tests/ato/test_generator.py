"""The traffic generator makes the cases the engine and its ground truth must handle."""

from collections import Counter, defaultdict

import orjson

from ato.catalog import SEGMENTS, load_catalog
from ato.config import GeneratorSettings
from ato.generator import generate

CATALOG = load_catalog()


def test_generated_traffic_covers_the_cases_the_ground_truth_is_about() -> None:
    """Second stalls (attempt 2), failure terminals, abandon signals the client beats, steps
    back, app sessions and errors, the AI bot taking steps, journeys begun with an agent,
    and hand-offs from the app to a call and on to the branch, all eight segments, and a
    segment on every call event (a background call had none)."""
    traffic = generate(CATALOG, GeneratorSettings(clients=4_000, seed=5, span_s=86_400))
    events = [orjson.loads(m) for lines in traffic.partitions.values() for m in lines]
    types = Counter(e["type"] for e in events)
    for kind in ("loan_rejected", "limit_declined", "app_session_start", "error", "ivr_started"):
        assert types[kind] > 0, kind
    assert max(s.attempt for s in traffic.stalls) >= 2
    assert any(e["channel"] == "ai" and e["type"] in _progress_types() for e in events)
    assert all("segment" in e.get("attrs", {}) for e in events if e["channel"] == "call")
    assert {traffic.clients[c] for c in traffic.clients} == set(SEGMENTS)
    steps = {j.name: [t for s in j.steps for t in s.on] for j in CATALOG.journeys}
    signals = {j.name: set(j.abandon_ms) for j in CATALOG.journeys}
    stalled = {(s.client_id, s.journey, s.instance_start) for s in traffic.stalls}
    per_instance: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for e in sorted(events, key=lambda e: e["ts"]):
        if e.get("journey"):
            per_instance[(e["client_id"], e["journey"])].append(e)
    back_steps = beaten_signals = 0
    for (client, journey), evs in per_instance.items():
        order = [steps[journey].index(e["type"]) for e in evs if e["type"] in steps[journey]]
        back_steps += sum(1 for a, b in zip(order, order[1:], strict=False) if b < a)
        started = (client, journey, evs[0]["ts"])
        if started not in stalled and any(e["type"] in signals[journey] for e in evs):
            beaten_signals += 1
    assert back_steps > 0 and beaten_signals > 0
    chains = {tuple(dict.fromkeys(e["channel"] for e in evs if e["type"] in steps[j]))
              for (_, j), evs in per_instance.items()}  # fmt: skip
    assert ("app", "call", "branch") in chains
    assert any(chain[0] in ("call", "branch") for chain in chains)


def _progress_types() -> set[str]:
    return {t for j in CATALOG.journeys for s in j.steps for t in s.on}
