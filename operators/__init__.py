"""Reusable steps of the journey flow (decode, route, watermark, shard step, interventions)."""

from operators.batches import DeadLetter, DecodedBatch, RawBatch, ShardInput, ShardOutput
from operators.decode import Decoder
from operators.route import Router, shard_key
from operators.shard_step import ShardContext, ShardLogic
from operators.watermark import WatermarkTracker

__all__ = [
    "DeadLetter",
    "DecodedBatch",
    "Decoder",
    "RawBatch",
    "Router",
    "ShardContext",
    "ShardInput",
    "ShardLogic",
    "ShardOutput",
    "WatermarkTracker",
    "shard_key",
]
