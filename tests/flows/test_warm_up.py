"""Flows compile their kernels before they start, so no batch waits for numba."""

import json
import subprocess
import sys
import textwrap

from ato.catalog import load_catalog, parse_catalog
from ato.config import EngineSettings
from operators.warm_up import warm_up

# In a fresh interpreter: count compiled signatures after build_flow (which warms up), run a
# flow on generated traffic, count again. A kernel the flow calls with types the warm-up did
# not use would compile (or load from cache) a new signature while batches wait.
PROBE = textwrap.dedent(
    """
    import json, tempfile
    from numba.core.registry import CPUDispatcher
    from bytewax.testing import TestingSink, TestingSource, run_main
    from ato.catalog import load_catalog
    from ato.config import GeneratorSettings, Settings
    from ato.generator import generate
    from ato.runner import metrics_sink
    from flows.journeys import FlowSinks, build_flow
    from operators import funnel, live_changes, render, scan, uuid5
    from operators.batches import RawBatch
    from sinks import insert_order
    from state import client_ids, hashing, kernels

    def signatures():
        return {
            f"{m.__name__}.{name}": len(f.signatures)
            for m in (kernels, hashing, scan, render, uuid5, client_ids, funnel, live_changes,
                      insert_order)
            for name, f in vars(m).items()
            if isinstance(f, CPUDispatcher)
        }

    catalog = load_catalog()
    settings = Settings().with_overrides("engine", shards=4, batch_size=500, decoder="{decoder}")
    traffic = generate(catalog, GeneratorSettings(clients=300, seed=5, partitions=2))
    items = [RawBatch(p, lines[i : i + 500], i)
             for p, lines in traffic.partitions.items() for i in range(0, len(lines), 500)]
    out = []
    sinks = FlowSinks(TestingSink(out), TestingSink([]), TestingSink([]), TestingSink([]))
    if {metrics}:  # the ClickHouse sink's kernels run on its insert thread
        url = "chdb://" + tempfile.mkdtemp()
        settings = settings.with_overrides("clickhouse", url=url)
        sinks = FlowSinks(TestingSink(out), TestingSink([]), TestingSink([]), TestingSink([]),
                          metrics=metrics_sink(settings, recovery=False))
    flow = build_flow(TestingSource(items), sinks, settings, catalog,
                      partitions=list(traffic.partitions))
    before = signatures()
    run_main(flow)
    print(json.dumps({{"before": before, "after": signatures(), "blocks": len(out)}}))
    """
)

HOT_PATH = {
    "orjson": {
        "state.kernels.apply_events",
        "state.kernels.expire_instances",
        "state.kernels.expire_clients",
        "state.hashing.shard_order",
        "state.client_ids._gather",
        "operators.render.render_rows",
        "operators.uuid5.uuid5_rows",
    },
}
HOT_PATH["scan"] = HOT_PATH["orjson"] | {"operators.scan._scan_events"}
METRICS_PATH = {
    "operators.funnel.event_rows_kernel",
    "operators.funnel.sum_by_key",
    "sinks.insert_order.radix_argsort",
    "sinks.insert_order._hex_halves",
}


def test_warm_up_builds_one_intervention() -> None:
    """The synthetic journey stalls, so the render kernels ran too."""
    catalog = load_catalog()
    assert warm_up(catalog, EngineSettings()) == 1
    assert warm_up(catalog, EngineSettings(decoder="orjson")) == 1


def test_warm_up_of_a_first_step_no_type_maps_to() -> None:
    """A first step without ``on`` is entered by naming it (the warm-up used to give up)."""
    raw = {
        "journeys": [
            {
                "name": "loan",
                "steps": [
                    {"name": "apply", "timeout": "10m"},
                    {"name": "done", "terminal": "success"},
                ],
            }
        ]
    }
    assert warm_up(parse_catalog(raw), EngineSettings()) == 1


def test_a_flow_compiles_nothing_after_build() -> None:
    """Every kernel signature a real run needs exists once ``build_flow`` returns; with
    metrics also those of the funnel step and of the ClickHouse sink's insert thread."""
    for decoder, metrics in (("scan", True), ("orjson", False)):
        probe = PROBE.replace("{decoder}", decoder).replace("{metrics}", str(metrics))
        probe = probe.replace("{{", "{").replace("}}", "}")
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["blocks"] > 0
        added = {k: v - result["before"][k] for k, v in result["after"].items()}
        assert not any(added.values()), (decoder, {k: v for k, v in added.items() if v})
        compiled = {name for name, count in result["before"].items() if count}
        assert HOT_PATH[decoder] | (METRICS_PATH if metrics else set()) <= compiled
