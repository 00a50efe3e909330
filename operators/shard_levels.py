"""The latest levels each shard step reported: what the progress line and flow_health show."""

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ShardLevels:
    """Each shard's latest watermark, open instances, state bytes and decisions waiting for
    Redis. Levels, not counts: a shard quiet since its last report still has them."""

    watermark: dict[str, int] = field(default_factory=dict)
    open_instances: dict[str, int] = field(default_factory=dict)
    state_bytes: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)

    def update(self, item: dict[str, Any]) -> None:
        """Take the levels of one shard step's progress item (it names its ``shard``)."""
        shard = item["shard"]
        self.watermark[shard] = item["watermark"]
        self.open_instances[shard] = item["open"]
        self.state_bytes[shard] = item["bytes"]
        self.waiting[shard] = item.get("redis_waiting", 0)

    def copy(self) -> "ShardLevels":
        """Levels to go on from (a new interval starts where the last one ended)."""
        return ShardLevels(
            dict(self.watermark), dict(self.open_instances), dict(self.state_bytes),
            dict(self.waiting),
        )  # fmt: skip

    def slowest_watermark(self) -> int | None:
        """The least watermark of the shards heard from; None before any."""
        return min(self.watermark.values()) if self.watermark else None

    def total_open(self) -> int:
        """Open journey instances over every shard."""
        return sum(self.open_instances.values())

    def total_bytes(self) -> int:
        """State bytes over every shard."""
        return sum(self.state_bytes.values())

    def total_waiting(self) -> int:
        """Decisions waiting for Redis over every shard."""
        return sum(self.waiting.values())
