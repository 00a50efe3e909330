"""Shard routing: split a decoded batch into one :class:`ShardInput` per shard."""

import numpy as np

from operators.batches import DecodedBatch, ShardInput
from state.hashing import shard_order


def shard_key(shard: int) -> str:
    """The Bytewax key of a shard."""
    return f"shard-{shard:04d}"


class Router:
    """Splits batches by ``mix64(client hash) % shards``; every shard gets an item per batch,
    its events grouped by lane (``state.lanes``) in arrival order within a lane."""

    def __init__(self, shards: int, lanes: int = 1) -> None:
        self.shards = shards
        self.lanes = lanes
        self.keys = [shard_key(s) for s in range(shards)]

    def __call__(self, batch: DecodedBatch) -> list[tuple[str, ShardInput]]:
        """The flow's flat-map step."""
        events = batch.events
        if len(events) == 0:
            parts = [events] * self.shards
            rows = [np.empty(0, np.int64)] * self.shards
        else:
            # the original bytes stay where they are (see ShardInput.raw)
            order, bounds = shard_order(events.client_key, self.shards, self.lanes)
            ordered = events.without_raw().take(order)
            parts = [ordered.take(slice(bounds[s], bounds[s + 1])) for s in range(self.shards)]
            rows = [order[bounds[s] : bounds[s + 1]] for s in range(self.shards)]
        return [
            (
                self.keys[s],
                ShardInput(
                    self.keys[s],
                    batch.partition,
                    parts[s],
                    batch.max_ts,
                    batch.read_wall_ms,
                    batch.caught_up,
                    events.raw,
                    rows[s],
                    batch.cut,
                    batch.arrived_ms,
                    batch.unsure,
                    batch.ended,
                ),
            )
            for s in range(self.shards)
        ]
