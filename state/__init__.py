"""Shard stores: columnar journey state per shard, numba kernels and their Python twins."""
