"""Benchmarks and the capacity harness (figures printed, never asserted)."""
